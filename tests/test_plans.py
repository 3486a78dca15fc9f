"""A chunk's cost never depends on the table's size (issue 12, item 1).

Every statement a chunk runs must be driven by an index over the chunk's own
keys, whatever the planner's statistics say. The worst case, and the usual one
in the middle of a data migration, is a table loaded a minute ago and never
analyzed: ``testapp.Reading`` is filled here with raw SQL, autovacuum is off
for it (migration 0004) and nothing else writes to it, so the planner has no
statistics for it at all (checked, not assumed).

Each test runs one chunk of a real job in this process with every statement
that touches the table EXPLAINed just before it runs (the plan the server
really picks, with the chunk's temp table already filled), and fails when a
plan reads the whole table: ``Seq Scan on`` the table (PostgreSQL), an access
type ``ALL`` (MariaDB), a ``SCAN`` of the table (SQLite).

The scaling tests run the same chunk of the same job against a small and a
large table and compare the statements issued: same number, same text.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from conftest import TEST_DB_BACKEND, UPDATE_METHODS
from django.db import connection, transaction
from testproject.testapp.models import Reading, ReadingTag

from bulkpar.operations.delete import DeleteSpec
from bulkpar.operations.load import LoadMode, LoadSpec
from bulkpar.operations.options import RunSpec
from bulkpar.operations.save import SaveSpec
from bulkpar.operations.update import PkRange, UpdateSpec

pytestmark = pytest.mark.usefixtures("db")

#: Rows in the large table: enough that a full scan costs far more than a chunk.
LARGE = {"postgres": 200_000, "mysql": 100_000, "sqlite": 100_000}[TEST_DB_BACKEND]
SMALL = 5_000
CHUNK = 1_000
TABLE = Reading._meta.db_table


def bump(reading: Reading) -> None:
    """The ``--func`` of these tests: changes every row."""
    reading.value += 1


def relabel(reading: Reading) -> None:
    """A save transform."""
    reading.label = reading.label.upper()


def fill(rows: int) -> None:
    """``rows`` readings (ids 1..rows, serial ``s<id>``) and a tag for every tenth, unanalyzed."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            series = f"generate_series(1, {rows}) AS i"
            number = "i"
        elif connection.vendor == "mysql":
            series = f"seq_1_to_{rows} AS s"
            number = "s.seq"
        else:
            cursor.execute(
                f"CREATE TEMP TABLE IF NOT EXISTS numbers AS WITH RECURSIVE n(i) AS "
                f"(SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {LARGE}) SELECT i FROM n"
            )
            series = f"numbers WHERE i <= {rows}"
            number = "i"
        concat = f"CONCAT('s', {number})" if connection.vendor == "mysql" else f"'s' || {number}"
        cursor.execute(
            f"INSERT INTO {TABLE} (id, serial, label, value, data) "
            f"SELECT {number}, {concat}, 'label', {number}, NULL FROM {series}"
        )
        tag_series = series + (" WHERE" if "WHERE" not in series else " AND")
        cursor.execute(
            f"INSERT INTO {ReadingTag._meta.db_table} (reading_id, tag) "
            f"SELECT {number}, 'tag' FROM {tag_series} {number} % 10 = 0"
        )
        if connection.vendor == "postgresql":  # ids were given: move the sequence past them
            cursor.execute(f"SELECT setval(pg_get_serial_sequence('{TABLE}', 'id'), {rows})")
    _assert_no_statistics()


def _assert_no_statistics() -> None:
    """The premise of these tests: the planner knows nothing about the table."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                "SELECT count(*) FROM pg_statistic WHERE starelid = %s::regclass", [TABLE]
            )
            assert cursor.fetchone()[0] == 0, "the plan tests need a never-analyzed table"
        elif connection.vendor == "sqlite":
            cursor.execute("SELECT count(*) FROM sqlite_master WHERE name = 'sqlite_stat1'")
            if cursor.fetchone()[0]:
                cursor.execute("SELECT count(*) FROM sqlite_stat1 WHERE tbl = %s", [TABLE])
                assert cursor.fetchone()[0] == 0, "the plan tests need a never-analyzed table"


# -- what each chunk runs ---------------------------------------------------


def _full_scans(sql: str, params: Any, raw: Any) -> list[str]:
    """The lines of ``sql``'s plan that read the whole table (empty: index-driven)."""
    if connection.vendor == "postgresql":
        raw.execute("EXPLAIN " + sql, params)
        plan = [row[0] for row in raw.fetchall()]
        return [line for line in plan if re.search(rf"Seq Scan on {TABLE}\b", line)]
    if connection.vendor == "mysql":
        raw.execute("EXPLAIN " + sql, params)
        names = [d[0] for d in raw.description]
        rows = [dict(zip(names, row, strict=True)) for row in raw.fetchall()]
        # an INSERT's own row shows type ALL: it reads nothing (conflicts go to the index)
        return [
            str(row)
            for row in rows
            if row["table"] in (TABLE, "t")
            and row["type"] == "ALL"
            and row["select_type"] != "INSERT"
        ]
    raw.execute("EXPLAIN QUERY PLAN " + sql, params)
    details = [row[-1] for row in raw.fetchall()]
    return [d for d in details if re.match(rf"SCAN (TABLE )?{TABLE}\b", d)]


@contextlib.contextmanager
def explained() -> Iterator[list[tuple[str, list[str]]]]:
    """EXPLAIN every statement on the table before it runs: ``(sql, full-scan lines)``."""
    plans: list[tuple[str, list[str]]] = []

    def explain(
        execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any
    ) -> Any:
        if not many and TABLE in sql and re.match(r"\s*(SELECT|UPDATE|DELETE|INSERT|WITH)", sql):
            plans.append((sql, _full_scans(sql, params, context["cursor"].cursor)))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(explain):
        yield plans


@contextlib.contextmanager
def recorded() -> Iterator[list[str]]:
    """Every statement issued, its numbers and parameters blanked out (the statement's shape).

    The COPY writer's look-up of column types in ``pg_attribute`` is left out:
    it runs once per connection, not per chunk.
    """
    statements: list[str] = []

    def record(execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any) -> Any:
        if "pg_attribute" not in sql:
            statements.append(re.sub(r"\b\d+\b", "N", sql))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(record):
        yield statements


def run_spec() -> RunSpec:
    return RunSpec(chunk=CHUNK, workers=1, executor="serial")


def records(first: int, count: int) -> list[dict[str, Any]]:
    """Load input: half of the serials exist when ``first`` is inside the table."""
    return [
        {"serial": f"s{i}", "label": "loaded", "value": -i, "data": {"i": i}}
        for i in range(first, first + count)
    ]


#: Every operation's spec, by name, for a table of ``rows`` rows.
OPERATIONS: dict[str, Callable[[int], Any]] = {
    "update-set": lambda rows: UpdateSpec(Reading, set={"label": "new"}, run=run_spec()),
    "update-set-filtered": lambda rows: UpdateSpec(
        Reading.objects.filter(value__gt=5), set={"label": "new"}, run=run_spec()
    ),
    **{
        f"update-func-{method}": (
            lambda rows, method=method: UpdateSpec(
                Reading, func=bump, method=method, run=run_spec()
            )
        )
        for method in UPDATE_METHODS
    },
    "save": lambda rows: SaveSpec(Reading, func=relabel, run=run_spec()),
    "save-input": lambda rows: SaveSpec(
        Reading, rows=records(rows // 2, CHUNK), match="serial", run=run_spec()
    ),
    "delete": lambda rows: DeleteSpec(Reading, run=run_spec()),
    **{
        f"{mode.value}-{method}": (
            lambda rows, mode=mode, method=method: LoadSpec(
                Reading,
                records(rows - CHUNK // 2, CHUNK),
                mode=mode,
                unique="serial" if mode is LoadMode.UPSERT else None,
                method=method,
                run=run_spec(),
            )
        )
        for mode in (LoadMode.CREATE_IGNORE, LoadMode.UPSERT)
        for method in (["values", "copy"] if TEST_DB_BACKEND == "postgres" else ["values"])
    },
}


def middle_chunk(operation: str, rows: int) -> tuple[Any, Any]:
    """A job and one chunk of it: the middle key range, or a load's first batch."""
    checked = OPERATIONS[operation](rows).validate()
    wanted = rows // CHUNK // 2
    for index, chunk in enumerate(checked.planner(None).chunks):
        if not isinstance(chunk, PkRange) or index == wanted:
            return checked.job, chunk
    raise AssertionError(f"{operation}: no chunk {wanted}")


def run_chunk(job: Any, chunk: Any) -> None:
    def atomic() -> Any:
        return transaction.atomic(using=job.database)

    job.execute(chunk, {}, atomic)


# -- the tests ------------------------------------------------------------------


@pytest.mark.parametrize("operation", sorted(OPERATIONS))
def test_a_chunk_reads_the_table_through_its_key_index(operation: str) -> None:
    fill(LARGE)
    job, chunk = middle_chunk(operation, LARGE)
    with explained() as plans:
        run_chunk(job, chunk)
    assert plans, "no statement on the table was seen: the recorder is broken"
    scans = [(sql, lines) for sql, lines in plans if lines]
    assert not scans, "\n\n".join(f"{sql[:300]}\n  {lines}" for sql, lines in scans)


@pytest.mark.parametrize("operation", sorted(OPERATIONS))
def test_a_chunk_issues_the_same_statements_on_a_small_and_a_large_table(operation: str) -> None:
    shapes = []
    for rows in (SMALL, LARGE):
        _empty()
        fill(rows)
        job, chunk = middle_chunk(operation, rows)
        with recorded() as statements:
            run_chunk(job, chunk)
        shapes.append(statements)
    small, large = shapes
    assert small, "no statement was recorded"
    assert len(small) == len(large), (len(small), len(large))
    assert small == large


def _empty() -> None:
    with connection.cursor() as cursor:
        for model in (ReadingTag, Reading):
            cursor.execute(f"DELETE FROM {model._meta.db_table}")


@pytest.mark.parametrize("filtered", [False, True], ids=["all-rows", "filtered"])
def test_the_planner_finds_each_boundary_through_the_key_index(filtered: bool) -> None:
    """Each boundary probe (``pk > previous ORDER BY pk LIMIT 1 OFFSET chunk-1``) is an
    index walk of one chunk; only the run's one COUNT of the selection reads it all."""
    if connection.vendor != "postgresql":
        pytest.skip("SQLite and MariaDB have no planner that skips the key for a LIMIT probe")
    fill(LARGE)
    selection = Reading.objects.filter(value__gt=5) if filtered else Reading
    checked = UpdateSpec(selection, set={"label": "new"}, run=run_spec()).validate()
    with explained() as plans:
        plan = checked.planner(None)
        chunks = [next(plan.chunks) for _ in range(3)]
    skipped = 5 if filtered else 0  # value = id, and value > 5 leaves out ids 1-5
    assert [c.hi for c in chunks] == [CHUNK * k + skipped for k in (1, 2, 3)]
    probes = [(sql, lines) for sql, lines in plans if "COUNT(" not in sql.upper()]
    assert len(probes) >= 3, plans
    scans = [(sql, lines) for sql, lines in probes if lines]
    assert not scans, scans
