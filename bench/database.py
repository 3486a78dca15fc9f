"""The benchmark database: creation, seeding to a known state, and checking the end state.

Every timed run starts from the same table: ``seed`` empties it and inserts
rows whose every value is a function of the row number ``i`` (which is also
the primary key), then vacuums, analyses and checkpoints so that no run pays
for the previous one's dead rows, hint bits or dirty buffers. Because the
seed values are known per row, ``read_state`` can check *every* row after a
run, in one scan: not just that the totals add up, but that each row was
changed exactly as the approach promised and that no other column moved.

The create/upsert (*load*) and *save* groups work the same way, on inputs
written once per benchmark (:func:`write_inputs`): row ``i`` of an input file
holds values that are a function of ``i`` (:data:`LOAD_EXPRESSIONS`,
:func:`load_record`; :data:`SAVE_EXPRESSIONS`, :func:`save_record`), so the
check after a run is again one scan that compares every row with what it
must hold. :func:`seed_for` prepares the table for an :class:`Effect` and
returns the state to expect; :func:`read_state_for` reads it back.

PostgreSQL only: seeding and checking use ``generate_series``, ``TRUNCATE``,
``VACUUM`` and ``CHECKPOINT``.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
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


#: The state every run finds the table in: ``analyzed`` (``VACUUM (ANALYZE)`` after
#: seeding, the planner knows the table) or ``fresh`` (as a table loaded a minute
#: ago: never vacuumed nor analyzed, no planner statistics, autovacuum kept away
#: for the run). Set by ``bench/run.py --table``.
TABLE_STATES = ("analyzed", "fresh")
table_state = "analyzed"


def settle(conn: psycopg.Connection[Any], table: str) -> None:
    """Leave a freshly seeded ``table`` in :data:`table_state`, then CHECKPOINT.

    TRUNCATE resets the table's size estimate but keeps the column statistics
    of an earlier ANALYZE, so ``fresh`` deletes them (the harness connects as
    a superuser) and turns autovacuum off for the table, which would analyze
    it in the middle of a run.
    """
    if table_state == "fresh":
        conn.execute(f"ALTER TABLE {table} SET (autovacuum_enabled = false)")
        conn.execute("DELETE FROM pg_statistic WHERE starelid = %s::regclass", [table])
    else:
        conn.execute(f"ALTER TABLE {table} RESET (autovacuum_enabled)")
        conn.execute(f"VACUUM (ANALYZE) {table}")
    conn.execute("CHECKPOINT")


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
    settle(conn, TABLE)
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
    """What an approach must do to the table its group seeded."""

    #: ``benchapp.transforms.bump``: ``score += 1`` and ``email = email.upper()`` on every row.
    BUMP = "score+1, upper(email)"
    #: ``benchapp.transforms.bump_score``: ``score += 1`` on every row, nothing else.
    BUMP_SCORE = "score+1"
    #: ``active = false`` on every row.
    DEACTIVATE = "active=false"
    #: Insert every input row into an empty table.
    CREATE = "create into empty table"
    #: Insert the input rows whose key is missing (half of them); the others stay as they are.
    CREATE_SKIP = "create, half the keys exist (skip them)"
    #: Upsert: half the input keys are new, a quarter exist with other values, a quarter equal.
    UPSERT = "upsert: 1/2 new, 1/4 changed, 1/4 equal"
    #: ``save()`` every input record as a new ``Signalled``; its receiver runs once each.
    SAVE = "save() new objects + post_save"

    @property
    def group(self) -> str:
        """The benchmark group whose seed and check this effect uses."""
        if self in (Effect.BUMP, Effect.BUMP_SCORE, Effect.DEACTIVATE):
            return "update"
        return "save" if self is Effect.SAVE else "load"

    def expected(self, seeded: State) -> State:
        """The state the table must be in after this update effect was applied to ``seeded``."""
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
        if self is Effect.BUMP_SCORE:
            return dataclasses.replace(
                seeded, score_sum=seeded.score_sum + n, score_seed=0, score_bumped=n
            )
        if self is Effect.DEACTIVATE:
            return dataclasses.replace(seeded, active=0)
        raise ValueError(f"{self} is not an update effect")

    def changed_rows(self, rows: int) -> int:
        """Rows a plain-SQL reference must report as inserted or changed (``INSERT 0 n``)."""
        if self is Effect.UPSERT:
            counts = load_counts(rows)
            return counts.created + counts.changed
        if self is Effect.CREATE_SKIP:
            return load_counts(rows).created
        return rows


# --- create and upsert (the *load* group) -----------------------------------------------------

#: Value of each column of input row ``{i}`` (1-based) as an SQL expression: what a load writes.
LOAD_EXPRESSIONS: dict[str, str] = {
    "external_id": "'ext-' || lpad({i}::text, 12, '0')",
    "name": "'Name ' || {i}",
    "email": "'user' || {i} || '@example.org'",
    "score": "({i} * 37) % 1000",
    "amount": "(({i} * 7919) % 1000000) / 100.0",
    "active": "{i} % 3 <> 0",
    "updated_at": (
        "CASE WHEN {i} % 10 = 0 THEN NULL "
        "ELSE timestamptz '2025-01-01 00:00:00+00' + {i} * interval '1 second' END"
    ),
}
#: The columns an upsert overwrites on existing rows (every input column but the key).
LOAD_UPDATE_FIELDS = [c for c in LOAD_EXPRESSIONS if c != "external_id"]
#: The older values of the seeded rows that an upsert must change (``i % 4 == 0``).
LOAD_OLD_EXPRESSIONS: dict[str, str] = {
    **LOAD_EXPRESSIONS,
    "name": "'Old name ' || {i}",
    "score": "({i} * 37) % 1000 + 1",
}
_LOAD_EPOCH = datetime(2025, 1, 1, tzinfo=timezone.utc)


@dataclass(frozen=True)
class LoadCounts:
    """How the input rows of a load split against the half-seeded table.

    Keys ``i`` with ``i % 2 == 0`` exist before the run; of those, ``i % 4 == 0``
    hold older values (``changed``) and the rest equal the input (``equal``).
    """

    created: int
    changed: int
    equal: int


def load_counts(rows: int) -> LoadCounts:
    """The split of ``rows`` input rows into new, changed and equal keys."""
    existing, changed = rows // 2, rows // 4
    return LoadCounts(created=rows - existing, changed=changed, equal=existing - changed)


def load_record(i: int) -> dict[str, Any]:
    """Input row ``i`` as JSON-ready values (the same values as :data:`LOAD_EXPRESSIONS`)."""
    cents = (i * 7919) % 1_000_000
    return {
        "external_id": f"ext-{i:012d}",
        "name": f"Name {i}",
        "email": f"user{i}@example.org",
        "score": (i * 37) % 1000,
        "amount": f"{cents // 100}.{cents % 100:02d}",
        "active": i % 3 != 0,
        "updated_at": None if i % 10 == 0 else (_LOAD_EPOCH + timedelta(seconds=i)).isoformat(),
    }


# --- save() with a post_save receiver (the *save* group) --------------------------------------

SAVE_TABLE = "benchapp_signalled"
AUDIT_TABLE = "benchapp_auditentry"
#: Value of each column of input record ``{i}`` of the save group, as SQL.
SAVE_EXPRESSIONS: dict[str, str] = {
    "external_id": "'sig-' || lpad({i}::text, 12, '0')",
    "name": "'Item ' || {i}",
    "quantity": "({i} * 13) % 50 + 1",
    "unit_price": "(({i} * 7919) % 100000) / 100.0",
}


def save_record(i: int) -> dict[str, Any]:
    """Input record ``i`` of the save group (the same values as :data:`SAVE_EXPRESSIONS`)."""
    cents = (i * 7919) % 100_000
    return {
        "external_id": f"sig-{i:012d}",
        "name": f"Item {i}",
        "quantity": (i * 13) % 50 + 1,
        "unit_price": f"{cents // 100}.{cents % 100:02d}",
    }


# --- inputs, seeds and checks per group --------------------------------------------------------


def write_inputs(group: str, rows: int, directory: Path) -> dict[str, Path]:
    """Write the input files of ``group`` for ``rows`` records into ``directory`` (once).

    The load group gets ``load-N.jsonl`` and the same rows as ``load-N.csv``
    (for the raw ``COPY`` references); the save group ``save-N.jsonl``.
    Returns the files by format (``jsonl``, ``csv``); files that exist are kept.
    """
    if group == "load":
        files = {"jsonl": directory / f"load-{rows}.jsonl", "csv": directory / f"load-{rows}.csv"}
        if not all(f.exists() for f in files.values()):
            columns = list(LOAD_EXPRESSIONS)
            with files["jsonl"].open("w") as jsonl, files["csv"].open("w") as csv:
                csv.write(",".join(columns) + "\n")
                for i in range(1, rows + 1):
                    record = load_record(i)
                    jsonl.write(_json_line(record))
                    csv.write(",".join(_csv_cell(record[c]) for c in columns) + "\n")
        return files
    if group == "save":
        files = {"jsonl": directory / f"save-{rows}.jsonl"}
        if not files["jsonl"].exists():
            with files["jsonl"].open("w") as jsonl:
                for i in range(1, rows + 1):
                    jsonl.write(_json_line(save_record(i)))
        return files
    return {}


def _json_line(record: dict[str, Any]) -> str:
    import json

    return json.dumps(record, separators=(",", ":")) + "\n"


def _csv_cell(value: Any) -> str:
    """A CSV cell of :func:`load_record`'s values (none needs quoting; '' is NULL)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def seed_for(conn: psycopg.Connection[Any], rows: int, effect: Effect) -> Any:
    """Prepare the tables for a run of ``effect`` with ``rows`` rows; returns the state to expect.

    Args:
        conn: an autocommit connection.
        rows: the table size (update) or the input rows (load, save).
        effect: what the next run must do.
    """
    if effect.group == "update":
        return effect.expected(seed(conn, rows))
    if effect.group == "save":
        conn.execute(f"TRUNCATE {SAVE_TABLE}, {AUDIT_TABLE} RESTART IDENTITY")
        for table in (SAVE_TABLE, AUDIT_TABLE):
            settle(conn, table)
        return SaveState(rows, rows, rows, rows, rows)
    conn.execute(f"TRUNCATE {TABLE} RESTART IDENTITY")
    counts = load_counts(rows)
    if effect is not Effect.CREATE:
        columns = ", ".join(LOAD_EXPRESSIONS)
        values = ", ".join(
            f"CASE WHEN i % 4 = 0 THEN {LOAD_OLD_EXPRESSIONS[c].format(i='i')} "
            f"ELSE {LOAD_EXPRESSIONS[c].format(i='i')} END"
            for c in LOAD_EXPRESSIONS
        )
        conn.execute(
            f"INSERT INTO {TABLE} (id, {columns}) SELECT i, {values} "
            f"FROM generate_series(1::bigint, {int(rows)}) AS i WHERE i % 2 = 0"
        )
    conn.execute(f"SELECT setval(pg_get_serial_sequence('{TABLE}', 'id'), {int(rows) + 1}, false)")
    settle(conn, TABLE)
    existing = 0 if effect is Effect.CREATE else rows - counts.created
    changed = 0 if effect is Effect.CREATE else counts.changed
    seeded = read_load_state(conn, rows)
    if seeded != LoadState(existing, existing, existing - changed, changed):
        raise RuntimeError(f"seeding failed: got {seeded}")
    if effect is Effect.CREATE_SKIP:  # the changed rows keep their old values
        return LoadState(rows, rows, rows - counts.changed, counts.changed)
    return LoadState(rows, rows, rows, 0)


def read_state_for(conn: psycopg.Connection[Any], rows: int, effect: Effect) -> Any:
    """Read back the state :func:`seed_for` said to expect."""
    if effect.group == "update":
        return read_state(conn)
    if effect.group == "save":
        return read_save_state(conn, rows)
    return read_load_state(conn, rows)


def differences(got: Any, expected: Any) -> str:
    """``field: got X, expected Y`` for every field of two state dataclasses that differs."""
    return "; ".join(
        f"{f.name}: got {getattr(got, f.name)}, expected {getattr(expected, f.name)}"
        for f in dataclasses.fields(got)
        if getattr(got, f.name) != getattr(expected, f.name)
    )


@dataclass(frozen=True)
class LoadState:
    """The Row table after a load, counted over every row in one scan.

    Attributes:
        rows: rows in the table.
        keys: rows whose ``external_id`` is ``ext-<i>`` for an input row ``i``
            (with ``rows`` and the unique constraint: every key exactly once).
        new_values: rows holding exactly the input values of their key.
        old_values: rows holding exactly the older seeded values of their key.
    """

    rows: int
    keys: int
    new_values: int
    old_values: int


def _row_matches(expressions: dict[str, str]) -> str:
    return " AND ".join(
        f"{column} IS NOT DISTINCT FROM ({expression.format(i='k')})"
        for column, expression in expressions.items()
    )


def read_load_state(conn: psycopg.Connection[Any], rows: int) -> LoadState:
    """Count :class:`LoadState` over the whole Row table, for an input of ``rows`` rows."""
    row = conn.execute(
        f"""
        SELECT count(*),
               count(*) FILTER (WHERE k BETWEEN 1 AND {int(rows)}),
               count(*) FILTER (WHERE {_row_matches(LOAD_EXPRESSIONS)}),
               count(*) FILTER (WHERE {_row_matches(LOAD_OLD_EXPRESSIONS)})
        FROM (
            SELECT *, CASE WHEN external_id ~ '^ext-[0-9]{{12}}$'
                           THEN substr(external_id, 5)::bigint END AS k
            FROM {TABLE}
        ) AS t
        """
    ).fetchone()
    assert row is not None
    return LoadState(*(int(v) for v in row))


@dataclass(frozen=True)
class SaveState:
    """The ``Signalled`` and audit tables after a save run.

    Attributes:
        objects: ``Signalled`` rows.
        values: objects holding exactly their input record's values (key ``sig-<i>``).
        totals: objects whose ``total`` equals ``quantity * unit_price`` (the
            receiver's derived field).
        audit_rows: rows in the audit table.
        audited_once: objects with exactly one audit row, of action ``created``,
            whose payload names the object and its total (the receiver ran once).
    """

    objects: int
    values: int
    totals: int
    audit_rows: int
    audited_once: int


def read_save_state(conn: psycopg.Connection[Any], rows: int) -> SaveState:
    """Count :class:`SaveState` over both tables, for an input of ``rows`` records."""
    row = conn.execute(
        f"""
        SELECT count(*),
               count(*) FILTER (WHERE k BETWEEN 1 AND {int(rows)}
                                AND {_row_matches(SAVE_EXPRESSIONS)}),
               count(*) FILTER (WHERE total = quantity * unit_price),
               (SELECT count(*) FROM {AUDIT_TABLE}),
               count(*) FILTER (WHERE a.n = 1 AND a.created = 1 AND a.matching = 1)
        FROM (
            SELECT *, CASE WHEN external_id ~ '^sig-[0-9]{{12}}$'
                           THEN substr(external_id, 5)::bigint END AS k
            FROM {SAVE_TABLE}
        ) AS s
        LEFT JOIN (
            SELECT object_id, count(*) AS n,
                   count(*) FILTER (WHERE action = 'created') AS created,
                   count(*) FILTER (
                       WHERE payload ->> 'external_id' = o.external_id
                         AND (payload ->> 'total')::numeric = o.quantity * o.unit_price
                   ) AS matching
            FROM {AUDIT_TABLE} JOIN {SAVE_TABLE} AS o ON o.id = object_id
            GROUP BY object_id
        ) AS a ON a.object_id = s.id
        """
    ).fetchone()
    assert row is not None
    return SaveState(*(int(v) for v in row))
