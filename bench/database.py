"""The benchmark database: creation, seeding to a known state, and checking the end state.

Every timed run starts from the same table: ``seed`` empties it and inserts
rows whose every value is a function of the row number ``i`` (which is also
the primary key), then vacuums, analyses and checkpoints so that no run pays
for the previous one's dead rows, hint bits or dirty buffers. Because the
seed values are known per row, ``read_state`` can check *every* row after a
run, in one scan: not just that the totals add up, but that each row was
changed exactly as the approach promised and that no other column moved.

PostgreSQL only: seeding and checking use ``generate_series``, ``TRUNCATE``,
``VACUUM`` and ``CHECKPOINT``.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
#: Directory holding the benchmark Django project (put on ``sys.path``).
PROJECT_DIR = BENCH_DIR / "project"
#: The same directory as the bulkpar CLI is told it (``--pythonpath``), relative to the repo.
PROJECT_PATH_ARG = "bench/project"
SETTINGS_MODULE = "benchproject.settings"
TABLE = "benchapp_row"

#: Seed value of each column as an SQL expression of the row number ``{i}``.
SEED_EXPRESSIONS: dict[str, str] = {
    "name": "'Name ' || {i}",
    "email": "'user' || {i} || '@example.com'",
    "score": "({i} * 37) % 1000",
    "amount": "(({i} * 7919) % 1000000) / 100.0",
    "active": "true",
    "updated_at": (
        "CASE WHEN {i} % 10 = 0 THEN NULL "
        "ELSE timestamptz '2024-01-01 00:00:00+00' + {i} * interval '1 second' END"
    ),
    "external_id": "'ext-' || lpad({i}::text, 12, '0')",
}


def _seed(column: str, i: str = "id") -> str:
    return SEED_EXPRESSIONS[column].format(i=i)


def database_settings() -> dict[str, Any]:
    """``DATABASES["default"]`` of the benchmark project (from ``$BENCH_DATABASE_URL``)."""
    if str(PROJECT_DIR) not in sys.path:
        sys.path.insert(0, str(PROJECT_DIR))
    from benchproject import settings

    database: dict[str, Any] = dict(settings.DATABASES["default"])
    if "postgresql" not in str(database.get("ENGINE", "")):
        raise SystemExit(
            f"bench/run.py needs PostgreSQL; BENCH_DATABASE_URL points to {database.get('ENGINE')}"
        )
    return database


def connect(dbname: str | None = None, *, autocommit: bool = False) -> psycopg.Connection[Any]:
    """A plain psycopg connection to the benchmark database (or to ``dbname`` on its server)."""
    database = database_settings()
    return psycopg.connect(
        host=database.get("HOST") or None,
        port=database.get("PORT") or None,
        user=database.get("USER") or None,
        password=database.get("PASSWORD") or None,
        dbname=dbname or database["NAME"],
        autocommit=autocommit,
    )


def describe_url() -> str:
    """The benchmark database as ``postgresql://user@host:port/name`` (no password)."""
    database = database_settings()
    return (
        f"postgresql://{database.get('USER', '')}@{database.get('HOST', '')}:"
        f"{database.get('PORT', '')}/{database['NAME']}"
    )


def prepare() -> None:
    """Create the database if it is missing, then apply the project's migrations."""
    name = database_settings()["NAME"]
    with connect("postgres", autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "django",
            "migrate",
            "--settings",
            SETTINGS_MODULE,
            "--pythonpath",
            str(PROJECT_DIR),
            "--verbosity",
            "0",
        ],
        cwd=REPO_ROOT,
        check=True,
    )


def seed(conn: psycopg.Connection[Any], rows: int) -> State:
    """Reset the table to ``rows`` seeded rows (ids 1..rows) and return its checked state.

    Args:
        conn: an autocommit connection (VACUUM cannot run in a transaction).
        rows: how many rows to insert (at least 1).

    Raises:
        RuntimeError: the freshly seeded table does not hold the seed values.
    """
    columns = ["id", *SEED_EXPRESSIONS]
    values = ["i", *(_seed(c, "i") for c in SEED_EXPRESSIONS)]
    conn.execute(f"TRUNCATE {TABLE} RESTART IDENTITY")
    # No query parameters: the seed expressions use % (modulo), and rows is an int.
    conn.execute(
        f"INSERT INTO {TABLE} ({', '.join(columns)}) "
        f"SELECT {', '.join(values)} FROM generate_series(1::bigint, {int(rows)}) AS i"
    )
    conn.execute(f"SELECT setval(pg_get_serial_sequence('{TABLE}', 'id'), {int(rows)})")
    conn.execute(f"VACUUM (ANALYZE) {TABLE}")
    conn.execute("CHECKPOINT")
    state = read_state(conn)
    expected = State.seeded(rows, state.score_sum)
    if state != expected:
        raise RuntimeError(f"seeding failed: got {state}, expected {expected}")
    return state


@dataclass(frozen=True)
class State:
    """A fingerprint of the table, counted over every row in one scan.

    Attributes:
        rows: rows in the table.
        score_sum: ``sum(score)``.
        score_seed: rows whose score is still the seed value.
        score_bumped: rows whose score is the seed value plus one.
        email_seed: rows whose email is still the seed value.
        email_upper: rows whose email is the upper-cased seed value.
        active: rows with ``active`` true.
        others_seed: rows whose name, amount, updated_at and external_id are
            all still the seed values (no approach may touch them).
    """

    rows: int
    score_sum: int
    score_seed: int
    score_bumped: int
    email_seed: int
    email_upper: int
    active: int
    others_seed: int

    @classmethod
    def seeded(cls, rows: int, score_sum: int) -> State:
        """The state right after :func:`seed`."""
        return cls(rows, score_sum, rows, 0, rows, 0, rows, rows)

    def differences(self, expected: State) -> str:
        """``field: got X, expected Y`` for every counter that differs ('' when equal)."""
        return "; ".join(
            f"{f.name}: got {getattr(self, f.name)}, expected {getattr(expected, f.name)}"
            for f in dataclasses.fields(self)
            if getattr(self, f.name) != getattr(expected, f.name)
        )


def read_state(conn: psycopg.Connection[Any]) -> State:
    """Count :class:`State` over the whole table."""
    others = " AND ".join(
        [
            f"name = {_seed('name')}",
            f"amount = {_seed('amount')}",
            f"updated_at IS NOT DISTINCT FROM ({_seed('updated_at')})",
            f"external_id = {_seed('external_id')}",
        ]
    )
    row = conn.execute(
        f"""
        SELECT count(*),
               coalesce(sum(score), 0),
               count(*) FILTER (WHERE score = {_seed("score")}),
               count(*) FILTER (WHERE score = {_seed("score")} + 1),
               count(*) FILTER (WHERE email = {_seed("email")}),
               count(*) FILTER (WHERE email = upper({_seed("email")})),
               count(*) FILTER (WHERE active),
               count(*) FILTER (WHERE {others})
        FROM {TABLE}
        """
    ).fetchone()
    assert row is not None
    return State(*(int(v) for v in row))


class Effect(Enum):
    """What an approach must do to the seeded table."""

    #: ``benchapp.transforms.bump``: ``score += 1`` and ``email = email.upper()`` on every row.
    BUMP = "score+1, upper(email)"
    #: ``active = false`` on every row.
    DEACTIVATE = "active=false"

    def expected(self, seeded: State) -> State:
        """The state the table must be in after this effect was applied to ``seeded``."""
        n = seeded.rows
        if self is Effect.BUMP:
            return dataclasses.replace(
                seeded,
                score_sum=seeded.score_sum + n,
                score_seed=0,
                score_bumped=n,
                email_seed=0,
                email_upper=n,
            )
        return dataclasses.replace(seeded, active=0)
