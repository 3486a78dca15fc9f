"""``update`` stores exactly what the Django ORM would, and writes only what changed.

The awkward values live in ``Sample.data`` (JSONField null=True): SQL NULL and
JSON null both load as Python ``None``; ``1``, ``True`` and ``1.0`` are equal
in Python but stored apart. The table is read back with raw SQL so that the
difference between them is visible on every backend.
"""

from __future__ import annotations

import datetime
import json
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection
from django.db.models import JSONField, Value
from testproject.testapp.models import Sample

import bulkpar
from bulkpar.errors import UsageError

OLD = datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc)
JSON_NULL = Value(None, JSONField())
SQL_NULL = "SQL NULL"
#: ``Sample.data`` of row ``n`` is ``KINDS[n % len(KINDS)]``.
KINDS: list[Any] = [None, JSON_NULL, {"a": 1}, 1, '{"a": 1}', [1, 2], True, 1.0, "x"]
FUNC = f"{__name__}:exact_transform"


def exact_transform(obj: Sample) -> None:
    """Change some rows' label, price or data; leave JSON null and SQL NULL alone."""
    n = int(obj.key[2:])
    if n % 2 == 0:
        obj.label += "!"
    if n % 3 == 0:
        obj.price = (obj.price or Decimal(0)) + Decimal("0.0001")
    data = obj.data
    if isinstance(data, dict):
        if n % 2 == 0:
            obj.data = None  # to SQL NULL, as save() stores None
        else:
            data["b"] = 2  # mutated in place
    elif data is True:
        obj.data = 1
    elif type(data) is int:
        obj.data = True  # 1 == True in Python: only the type changes
    elif type(data) is float:
        obj.data = 1
    elif isinstance(data, list) and n % 2:
        data.append(3)


def make_samples(prefix: str, n: int) -> None:
    Sample.objects.bulk_create(
        Sample(
            key=f"{prefix}-{i:03d}",
            label=f"L{i}",
            price=Decimal(i) / 4 if i % 4 else None,
            data=KINDS[i % len(KINDS)],
        )
        for i in range(n)
    )
    Sample.objects.update(touched=OLD)


def canonical(text: str | None) -> str:
    """A stored JSON text as comparable text, types kept (``1`` vs ``true`` vs ``1.0``)."""
    return SQL_NULL if text is None else json.dumps(json.loads(text), sort_keys=True)


def json_text(value: Any) -> str:
    if value is None:
        return SQL_NULL
    return "null" if value is JSON_NULL else json.dumps(value, sort_keys=True)


def stored(prefix: str) -> dict[str, tuple[Any, ...]]:
    """Every row of one copy, by key suffix: its values, data as stored, and untouched-ness."""
    quote = connection.ops.quote_name
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {quote('Sample Key')}, data FROM {quote(Sample._meta.db_table)} "
            f"WHERE {quote('Sample Key')} LIKE %s",
            [f"{prefix}-%"],
        )
        data = {key: canonical(text) for key, text in cursor.fetchall()}
    rows = Sample.objects.filter(key__startswith=f"{prefix}-").values_list(
        "key", "label", "note", "price", "tags", "version", "touched"
    )
    return {
        key[2:]: (label, note, price, tags, version, touched == OLD, data[key])
        for key, label, note, price, tags, version, touched in rows
    }


def serial_reference(prefix: str) -> int:
    """The same transform with plain Django: ``save(update_fields=changed)`` per row."""
    fields = [f for f in Sample._meta.concrete_fields if not f.primary_key]

    def snapshot(obj: Sample) -> list[str]:
        return [json.dumps(getattr(obj, f.attname), sort_keys=True, default=repr) for f in fields]

    written = 0
    for obj in Sample.objects.filter(key__startswith=f"{prefix}-").order_by("pk"):
        before = snapshot(obj)
        exact_transform(obj)
        after = snapshot(obj)
        changed = [f.name for f, b, a in zip(fields, before, after, strict=True) if b != a]
        if changed:
            obj.save(update_fields=[*changed, "touched"])
            written += 1
    return written


def test_func_writes_each_rows_own_changes_only(db, update_method):
    make_samples("a", 60)
    make_samples("b", 60)
    json_nulls = Sample.objects.filter(key__startswith="a-", data=JSON_NULL).count()
    assert json_nulls == 7

    report = bulkpar.update(
        Sample.objects.filter(key__startswith="a-"),
        func=FUNC,
        chunk=7,
        workers=2,
        method=update_method,
    )
    expected_written = serial_reference("b")

    assert report.ok
    assert (report.matched, report.written) == (60, expected_written)
    assert report.unchanged == 60 - expected_written
    ours, django = stored("a"), stored("b")
    assert ours == django
    # JSON null rows whose label changed were written with the label only
    assert Sample.objects.filter(key__startswith="a-", data=JSON_NULL).count() == json_nulls
    assert ours["000"][6] == SQL_NULL and ours["001"][6] == "null"
    assert ours["010"][6] == "null" and ours["010"][0] == "L10!"  # written, data kept
    assert ours["003"][6] == "true"  # 1 -> True is a change
    assert ours["006"][6] == "1"  # True -> 1 too
    assert ours["007"][6] == "1"  # 1.0 -> 1 too
    assert ours["002"][6] == SQL_NULL  # changed to None: SQL NULL, as save() stores it
    assert ours["011"][6] == '{"a": 1, "b": 2}'
    # rows the transform left alone were not written
    untouched = [k for k, row in ours.items() if row[5]]
    assert len(untouched) == 60 - expected_written
    assert "001" in untouched and "017" in untouched


def test_set_sql_null_writes_only_rows_not_already_sql_null(db):
    make_samples("a", 36)
    sql_nulls = Sample.objects.filter(data__isnull=True).count()
    assert sql_nulls == 4

    report = bulkpar.update(Sample, set={"data": None}, chunk=5, workers=2)

    assert (report.written, report.unchanged) == (36 - sql_nulls, sql_nulls)
    rows = stored("a")
    assert {row[6] for row in rows.values()} == {SQL_NULL}  # JSON nulls too
    assert sum(row[5] for row in rows.values()) == sql_nulls  # their auto_now kept


@pytest.mark.parametrize(
    "value",
    [JSON_NULL, {"a": 1}, 1, True, 1.0, "x", '{"a": 1}', [1, 2]],
    ids=["json-null", "object", "one", "true", "one-point-zero", "string", "object-text", "list"],
)
def test_set_json_value_skips_exactly_the_rows_holding_it(db, value):
    make_samples("a", 36)
    target = json_text(value)
    before = stored("a")
    holding = {k for k, row in before.items() if row[6] == target}
    assert len(holding) == 4

    report = bulkpar.update(Sample, set={"data": value}, chunk=5, workers=2)

    assert (report.written, report.unchanged) == (32, 4)
    after = stored("a")
    assert {row[6] for row in after.values()} == {target}
    assert {k for k, row in after.items() if row[5]} == holding  # only they kept auto_now


def test_set_compares_text_exactly(db):
    """MariaDB's default collation ignores case and trailing spaces; the stored bytes do not."""
    for i, label in enumerate(["x", "X", "x ", "x", "ẋ"]):
        Sample.objects.create(key=f"a-{i:03d}", label=label)
    Sample.objects.update(touched=OLD)

    report = bulkpar.update(Sample, set={"label": "x"}, chunk=2, workers=2)

    assert (report.written, report.unchanged) == (3, 2)
    assert list(Sample.objects.order_by("key").values_list("label", flat=True)) == ["x"] * 5
    assert Sample.objects.filter(touched=OLD).count() == 2


def test_cli_json_null_and_sql_null(db, run_cli):
    make_samples("a", 18)
    sql_nulls = Sample.objects.filter(data__isnull=True).count()
    json_nulls = Sample.objects.filter(data=JSON_NULL).count()

    marked = run_cli(
        "update", "--model", "testapp.Sample", "--filter", "data=json:null",
        "--set", "note=was json null", "--workers", "2", "--chunk", "4", "--json",
    )  # fmt: skip
    assert marked.returncode == 0, marked.stderr
    assert json.loads(marked.stdout)["written"] == json_nulls
    assert Sample.objects.filter(note="was json null", data=JSON_NULL).count() == json_nulls

    to_json_null = run_cli(
        "update", "--model", "testapp.Sample", "--set", "data=json:null",
        "--workers", "2", "--chunk", "4", "--json",
    )  # fmt: skip
    assert to_json_null.returncode == 0, to_json_null.stderr
    assert json.loads(to_json_null.stdout)["written"] == 18 - json_nulls
    assert Sample.objects.filter(data=JSON_NULL).count() == 18
    assert Sample.objects.filter(data__isnull=True).count() == 0

    text = run_cli(
        "update", "--model", "testapp.Sample", "--filter", "key=a-000",
        "--set", 'data=json:"null"', "--workers", "2",
    )  # fmt: skip
    assert text.returncode == 0, text.stderr
    assert stored("a")["000"][6] == '"null"'  # the JSON string "null"

    to_sql_null = run_cli(
        "update", "--model", "testapp.Sample", "--set", "data=null",
        "--workers", "2", "--chunk", "4", "--json",
    )  # fmt: skip
    assert to_sql_null.returncode == 0, to_sql_null.stderr
    assert json.loads(to_sql_null.stdout)["written"] == 18
    assert Sample.objects.filter(data__isnull=True).count() == 18
    assert sql_nulls == 2


@pytest.mark.parametrize(
    ("assignment", "message"),
    [
        (
            {"price": Decimal("1.23456")},
            "price=1.23456: Ensure that there are no more than 4 decimal places",
        ),
        ({"price": 1.23456}, "price=1.23456: Ensure that there are no more than 4 decimal places"),
        ({"price": Decimal("123456789")}, "no more than 8 digits before the decimal point"),
        (
            {"label": "x" * 60},
            "--set label=xxxxxxxxxxxxxxxxxxxxxxx…: Ensure this value has at most 40 characters "
            "(it has 60); nothing was written",
        ),
        ({"note": "é" * 41}, "at most 40 characters (it has 41)"),
        ({"version": 2**63}, "Ensure this value is less than or equal to"),
        ({"version": "seven"}, "value must be an integer"),
        ({"label": None}, "label is NOT NULL"),
        ({"price": "abc"}, "value must be a decimal number"),
        ({"data": {1, 2}}, "Object of type set is not JSON serializable"),
    ],
    ids=[
        "decimal-places",
        "float-places",
        "decimal-digits",
        "max-length",
        "max-length-unicode",
        "integer-range",
        "integer-text",
        "not-null",
        "decimal-text",
        "json",
    ],
)
def test_set_values_are_checked_before_any_write(db, assignment, message):
    make_samples("a", 10)
    before = stored("a")
    with pytest.raises(UsageError) as raised:
        bulkpar.update(Sample, set={"note": "written?", **assignment}, workers=2)
    text = str(raised.value)
    assert message in text
    assert text.endswith("; nothing was written") and "\n" not in text
    assert stored("a") == before


@pytest.mark.parametrize(
    ("assignment", "column", "expected"),
    [
        ({"price": Decimal("1.23450")}, "price", Decimal("1.2345")),
        ({"price": 1.1}, "price", Decimal("1.1")),
        ({"price": Decimal("12345678.1234")}, "price", Decimal("12345678.1234")),
        ({"version": "7"}, "version", 7),
        ({"label": "é" * 40}, "label", "é" * 40),
    ],
    ids=["trailing-zero", "float", "precision-limit", "int-text", "max-length"],
)
def test_set_values_within_the_limits_are_written(db, assignment, column, expected):
    make_samples("a", 10)
    report = bulkpar.update(Sample, set=assignment, workers=2, chunk=3)
    assert report.ok and report.written == 10
    assert set(Sample.objects.values_list(column, flat=True)) == {expected}


def test_set_integer_range_is_the_databases(db, backend):
    make_samples("a", 4)
    if backend == "sqlite":  # 64-bit integers, whatever the column type says
        assert bulkpar.update(Sample, set={"version": 2**31}, workers=2).written == 4
        assert set(Sample.objects.values_list("version", flat=True)) == {2**31}
    else:
        with pytest.raises(UsageError, match="less than or equal to 2147483647"):
            bulkpar.update(Sample, set={"version": 2**31}, workers=2)
        assert set(Sample.objects.values_list("version", flat=True)) == {0}


def test_cli_set_beyond_the_limits_is_one_line_and_writes_nothing(db, run_cli):
    make_samples("a", 6)
    before = stored("a")
    for spec, message in [
        ("label=" + "y" * 60, "Ensure this value has at most 40 characters (it has 60)"),
        ("price=1.23456", "--set price=1.23456: Ensure that there are no more than 4 decimal"),
    ]:
        result = run_cli(
            "update", "--model", "testapp.Sample", "--set", spec, "--workers", "2"
        )  # fmt: skip
        assert result.returncode == 2, result.stderr
        error = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
        assert len(error) == 1 and message in error[0] and "nothing was written" in error[0]
        assert "Traceback" not in result.stderr
    assert stored("a") == before
