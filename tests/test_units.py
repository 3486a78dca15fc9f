"""Unit tests of the pure parts: no worker, no pool, no database write.

The end-to-end tests prove the behaviour on real servers; these pin down the
small decisions underneath them (which error is retried, how ranges merge,
how latencies are summarised, how a command-line string becomes a value) so
that a change in one of them fails with a message naming it.
"""

from __future__ import annotations

import datetime
from decimal import Decimal

import pytest
from testproject.testapp.models import Article, Person, Product

from bulkpar.engine.checkpoint import merge_ranges
from bulkpar.engine.transient import is_transient
from bulkpar.errors import FieldNotFoundError, UsageError
from bulkpar.inputs.selection_strings import parse_bool, parse_lookup, split_assignment
from bulkpar.report import latency_summary


class FakePostgresError(Exception):
    """Shaped like psycopg's errors: the SQLSTATE is an attribute."""

    def __init__(self, sqlstate: str, message: str = "error") -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


class FakeMySQLError(Exception):
    """Shaped like MySQLdb's errors: ``args == (errno, message)``."""


# -- transient errors ------------------------------------------------------------------


@pytest.mark.parametrize(
    "sqlstate",
    ["40001", "40P01", "55P03", "57P01", "57P02", "57P03", "08000", "08006"],
    ids=["serialization", "deadlock", "lock-timeout", "admin-shutdown", "crash-shutdown",
         "cannot-connect-now", "connection-exception", "connection-failure"],
)  # fmt: skip
def test_postgres_transient_sqlstates(sqlstate: str) -> None:
    assert is_transient(FakePostgresError(sqlstate))


@pytest.mark.parametrize(
    "sqlstate", ["23505", "23502", "22001", "42P01"],
    ids=["unique", "not-null", "too-long", "undefined-table"],
)  # fmt: skip
def test_postgres_data_errors_are_not_retried(sqlstate: str) -> None:
    assert not is_transient(FakePostgresError(sqlstate))


@pytest.mark.parametrize("errno", [1205, 1213, 2006, 2013, 1927, 1053, 4031])
def test_mysql_transient_error_numbers(errno: int) -> None:
    assert is_transient(FakeMySQLError(errno, "boom"))


@pytest.mark.parametrize("errno", [1062, 1048, 1406, 1146])
def test_mysql_data_errors_are_not_retried(errno: int) -> None:
    assert not is_transient(FakeMySQLError(errno, "Duplicate entry"))


def test_sqlite_busy_is_transient_and_a_constraint_is_not() -> None:
    import sqlite3

    assert is_transient(sqlite3.OperationalError("database is locked"))
    assert not is_transient(sqlite3.IntegrityError("UNIQUE constraint failed: person.username"))


def test_the_cause_chain_is_followed_and_cycles_end() -> None:
    from django.db import OperationalError

    wrapped = OperationalError("wrapped")
    wrapped.__cause__ = FakePostgresError("40P01")
    assert is_transient(wrapped)
    a, b = ValueError("a"), ValueError("b")
    a.__context__, b.__context__ = b, a
    assert not is_transient(a)


# -- checkpoint ranges ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("ranges", "merged"),
    [
        ([], []),
        ([(None, 10)], [(None, 10)]),
        ([(10, 20), (None, 10)], [(None, 20)]),
        ([(None, 10), (15, 20)], [(None, 10), (15, 20)]),
        ([(30, 40), (10, 20), (20, 30)], [(10, 40)]),
        ([(10, 30), (15, 20)], [(10, 30)]),
        ([("a", "c"), ("c", "f"), ("x", "z")], [("a", "f"), ("x", "z")]),
    ],
    ids=["empty", "one", "touching-start", "gap", "chain", "contained", "strings"],
)
def test_merge_ranges(ranges: list, merged: list) -> None:
    assert merge_ranges(ranges) == merged


# -- latency summary ---------------------------------------------------------------


def test_latency_summary() -> None:
    assert latency_summary([]) == {"p50": 0.0, "p95": 0.0, "max": 0.0}
    assert latency_summary([0.25]) == {"p50": 0.25, "p95": 0.25, "max": 0.25}
    summary = latency_summary([i / 100 for i in range(1, 101)])
    assert summary == {"p50": pytest.approx(0.505), "p95": pytest.approx(0.9505), "max": 1.0}
    assert latency_summary([3.0, 1.0, 2.0])["max"] == 3.0  # unsorted input


# -- command-line values ---------------------------------------------------------------


def test_split_assignment() -> None:
    assert split_assignment("name=a=b", "--set") == ("name", "a=b")
    assert split_assignment(" note = ", "--set") == ("note", " ")
    with pytest.raises(UsageError, match="expected FIELD=VALUE"):
        split_assignment("=x", "--set")
    with pytest.raises(UsageError, match="expected FIELD=VALUE"):
        split_assignment("flag", "--set")


@pytest.mark.parametrize("raw", ["1", "t", "True", "yes", "ON", " y "])
def test_parse_bool_true(raw: str) -> None:
    assert parse_bool(raw, what="--set active") is True


@pytest.mark.parametrize("raw", ["0", "f", "False", "no", "off", "N"])
def test_parse_bool_false(raw: str) -> None:
    assert parse_bool(raw, what="--set active") is False


def test_parse_bool_refuses_other_words() -> None:
    with pytest.raises(UsageError, match="--set active"):
        parse_bool("maybe", what="--set active")


def test_parse_lookup_converts_by_the_field() -> None:
    assert parse_lookup(Person, "score__gte=10") == ("score__gte", 10)
    assert parse_lookup(Person, "active=false") == ("active", False)
    assert parse_lookup(Person, "nickname=null") == ("nickname__isnull", True)
    assert parse_lookup(Person, "username__icontains=Ab") == ("username__icontains", "Ab")
    assert parse_lookup(Person, "pk__in=1,2,3") == ("pk__in", [1, 2, 3])
    assert parse_lookup(Product, "price__lt=9.99") == ("price__lt", Decimal("9.99"))
    name, when = parse_lookup(Article, "published_at__lt=2024-01-01")
    assert name == "published_at__lt"
    assert when == datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)


def test_parse_lookup_names_the_unknown_field() -> None:
    with pytest.raises(FieldNotFoundError, match="did you mean 'score'"):
        parse_lookup(Person, "scor=1")


# -- executor backends -------------------------------------------------------------------


def test_each_executor_kind_has_one_backend_saying_what_it_offers() -> None:
    from bulkpar.engine.contracts import EXECUTORS, ExecutorKind
    from bulkpar.engine.executors import BACKENDS, backend

    assert set(BACKENDS) == set(ExecutorKind)
    assert EXECUTORS == ("auto", "process", "thread", "serial")
    auto, process = backend("auto"), backend("process")
    thread, serial = backend("thread"), backend(ExecutorKind.SERIAL)
    # only a process pool's workers load the project by name and leave result files
    assert (process.needs_settings_module, process.result_files) == (True, True)
    assert (auto.needs_settings_module, auto.result_files) == (True, True)
    assert (thread.needs_settings_module, thread.result_files) == (False, False)
    assert thread.closes_connections_after_chunk and not process.closes_connections_after_chunk
    assert serial.in_process and not process.in_process and not thread.in_process
    assert [b.slots(4) for b in (auto, process, thread, serial)] == [4, 4, 4, 1]
    # only auto runs a small job in this process; the report names what ran
    assert [b.small_job_chunks for b in (auto, process, thread, serial)] == [2, 0, 0, 0]
    assert [b.label for b in (auto, process, thread, serial)] == [
        "process", "process", "thread", "serial"
    ]  # fmt: skip


def test_run_options_check_the_executor_name_once_into_the_enum() -> None:
    from bulkpar.engine.contracts import ExecutorKind
    from bulkpar.operations.options import RunSpec

    assert RunSpec(executor="thread", workers=2).validate().executor is ExecutorKind.THREAD
    with pytest.raises(UsageError, match="unknown executor 'dask'"):
        RunSpec(executor="dask").validate()


# -- compiled converters: the fast paths give what the field's own path gives -----------------


@pytest.mark.parametrize(
    ("name", "raw", "expected"),
    [
        ("username", "ab", "ab"),  # CharField fast path
        ("username", 12, "12"),
        ("score", "42", 42),  # IntegerField fast path
        ("score", 7.0, 7),
        ("active", "yes", True),  # BooleanField fast path
        ("active", 0, False),
        ("nickname", "", None),  # nullable CharField: an empty cell is NULL
    ],
)
def test_converters_fast_paths(name: str, raw: object, expected: object) -> None:
    from bulkpar.inputs.conversion import compile_converter

    field = Person._meta.get_field(name)
    convert = compile_converter(field, use_default=False, text_cells=True)
    assert convert(raw) == expected
    assert type(convert(raw)) is type(expected)


@pytest.mark.parametrize(
    ("name", "raw", "message"),
    [
        ("username", "x" * 151, "at most 150 characters"),
        ("score", "abc", "must be an integer"),
        ("score", 2**63, "out of range"),
        ("score", 1.5, "integer"),
        ("active", "maybe", "maybe"),
    ],
)
def test_converters_fast_paths_reject_what_the_field_refuses(
    name: str, raw: object, message: str
) -> None:
    from bulkpar.inputs.conversion import RowRejected, compile_converter

    convert = compile_converter(Person._meta.get_field(name), use_default=False, text_cells=True)
    with pytest.raises(RowRejected, match=message) as refused:
        convert(raw)
    assert refused.value.field == name


def test_decimal_converter_is_exact_and_never_rounds() -> None:
    from bulkpar.inputs.conversion import RowRejected, compile_converter

    convert = compile_converter(Product._meta.get_field("price"), use_default=False)
    assert convert(0.1) == Decimal("0.1")  # a JSON number, read exactly
    assert convert("1.50") == Decimal("1.50")
    with pytest.raises(RowRejected, match="decimal places"):
        convert("1.234")  # decimal_places=2: rejected, not rounded


def test_the_demo_finds_its_project_in_the_checkout() -> None:
    from bulkpar.cli.demo import DEMO_DIR

    assert (DEMO_DIR / "manage.py").is_file(), DEMO_DIR


JSON_LINES = [
    b'{"a": 1, "a": 2}',  # duplicate keys: the last wins
    b'{"n": 18446744073709551616}',  # beyond 64 bits: orjson would give a float
    b'{"n": -9223372036854775809}',
    b'{"n": 9223372036854775807, "m": -9223372036854775808}',
    b'{"f": 0.1, "g": 5e-324, "h": 1.7976931348623157e308, "z": -0.0, "e": 1e-320}',
    b'{"f": 0.12345678901234567890123}',
    b'{"x": NaN, "y": Infinity, "w": -Infinity}',  # json's extensions
    b'{"s": "\\ud800"}',  # a lone surrogate
    b'\xef\xbb\xbf{"bom": true}',
    b'{"u": "caf\xc3\xa9 \\u00e9 \xf0\x9f\x98\x80", "nested": {"l": [1, null, "", false]}}',
    '{"utf16": 1}'.encode("utf-16"),
]


@pytest.mark.parametrize("line", JSON_LINES)
def test_json_lines_are_read_exactly_as_json_reads_them(line: bytes) -> None:
    import json
    import math

    from bulkpar.inputs.sources import parse_json_line

    def typed(value: object) -> object:  # 1 == 1.0 == True and nan != nan: compare by repr
        if isinstance(value, dict):
            return {k: typed(v) for k, v in value.items()}
        if isinstance(value, list):
            return [typed(v) for v in value]
        if isinstance(value, float) and math.isnan(value):
            return "nan"
        return (type(value).__name__, repr(value))

    assert typed(parse_json_line(line)) == typed(json.loads(line))


def test_a_line_that_is_not_json_raises_json_s_error() -> None:
    import json

    from bulkpar.inputs.sources import parse_json_line

    with pytest.raises(json.JSONDecodeError):
        parse_json_line(b'{"a": }')


@pytest.mark.parametrize(
    ("model", "name", "values"),
    [
        (
            Product,
            "price",
            [
                None,
                Decimal("1.50"),
                Decimal("-0.00"),
                Decimal("12345678.99"),
                Decimal("1E+2"),
                Decimal("NaN"),
                "2.5",
                3,
                0.25,
            ],
        ),
        (
            Article,
            "published_at",
            [
                None,
                datetime.datetime(2024, 3, 31, 1, 30, tzinfo=datetime.timezone.utc),
                datetime.datetime(
                    2024, 3, 31, 2, 30, tzinfo=datetime.timezone(datetime.timedelta(hours=-7))
                ),
                "2024-01-01T00:00:00+05:30",
            ],
        ),
    ],
)
def test_the_writers_fast_preparers_give_what_the_field_gives(
    model: type, name: str, values: list[object]
) -> None:
    import warnings

    from django.db import connection

    from bulkpar.writers.values import preparer

    field = model._meta.get_field(name)
    prepare = preparer(field, connection)
    for value in values:
        try:
            expected = field.get_db_prep_save(value, connection)
        except Exception as exc:  # the fast path must refuse it the same way
            with pytest.raises(type(exc)):
                prepare(value)
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a naive datetime warns in both or neither
            got = prepare(value)
        assert (type(got), got) == (type(expected), expected), value
        assert str(got) == str(expected), value
