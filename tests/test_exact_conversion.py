"""Loads store what the Django ORM would store: defaults, keys, limits, JSON, empty cells.

Each test runs bulkpar with the real process executor (2 workers) and, where it
helps, the same records through the plain ORM (``Model.objects.create``), and
compares the tables' full contents.
"""

from __future__ import annotations

import csv
import json
import os
import uuid
from decimal import Decimal
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db.models import JSONField, Value
from testproject.testapp.models import Asset, Org, Sample

import bulkpar
from bulkpar.errors import UsageError

SETTINGS = ("--settings", "testproject.settings")
BACKEND = os.environ.get("BULKPAR_TEST_DB", "").strip().lower() or "sqlite"
#: every writer of a plain create on this backend
CREATE_METHODS = ["values", "django"] + (["copy"] if BACKEND == "postgres" else [])


def write_csv(path: Any, header: list[str], rows: list[list[str]]) -> Any:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def rejects_of(path: Any) -> list[tuple[int, str | None]]:
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    return sorted((r["line"], r["field"]) for r in lines)


def json_kind(obj: Any) -> Any:
    """``data`` of a Sample as stored: "SQL NULL", "JSON null" or the JSON value."""
    row = Sample.objects.filter(pk=obj.pk)
    if row.filter(data__isnull=True).exists():
        return "SQL NULL"
    if row.filter(data=None).exists():  # Django: data=None matches JSON null
        return "JSON null"
    return obj.data


def sample_contents(prefix: str = "") -> dict[str, tuple[Any, ...]]:
    """Every Sample whose key starts with ``prefix``, by the rest of its key."""
    return {
        s.key.removeprefix(prefix): (
            s.label,
            s.note,
            s.price,
            json_kind(s),
            s.tags,
            s.at,
            s.version,
        )
        for s in Sample.objects.filter(key__startswith=prefix)
    }


@pytest.fixture
def users(db: None) -> Any:
    """auth.User, emptied before and after (the db fixture empties testapp only)."""
    User.objects.all().delete()
    yield User
    User.objects.all().delete()


# -- 1. a primary key with a callable default --------------------------------------------


@pytest.mark.parametrize("method", CREATE_METHODS)
def test_create_fills_a_uuid_primary_key_per_record(db, method):
    org, twin = Org.objects.create(name="o"), Org.objects.create(name="twin")
    records = [{"org_id": org.pk, "external_id": i, "name": f"n{i}"} for i in range(30)]
    report = bulkpar.create(Asset, records, method=method, chunk=7, workers=2)
    assert (report.created, report.rejected, report.failed_rows) == (30, 0, 0), report.errors
    assert report.ok and report.reconciles
    for record in records:  # the ORM, serially, into a twin organisation
        Asset.objects.create(**{**record, "org_id": twin.pk})

    def contents(o: Org) -> list[tuple[int, str]]:
        return sorted(Asset.objects.filter(org=o).values_list("external_id", "name"))

    assert contents(org) == contents(twin) == [(i, f"n{i}") for i in range(30)]
    ids = list(Asset.objects.values_list("id", flat=True))
    assert len(set(ids)) == 60 and all(isinstance(i, uuid.UUID) and i.version == 4 for i in ids)


def test_upsert_keeps_the_id_of_existing_rows_and_gives_new_rows_fresh_ones(db, load_method):
    org = Org.objects.create(name="o")
    old = {i: Asset.objects.create(org=org, external_id=i, name=f"old{i}").id for i in range(10)}
    records = [{"org_id": org.pk, "external_id": i, "name": f"new{i}"} for i in range(5, 15)]
    report = bulkpar.upsert(
        Asset, records, unique="org,external_id", method=load_method, chunk=4, workers=2
    )
    assert (report.created, report.updated, report.unchanged, report.rejected) == (5, 5, 0, 0)
    assert report.ok and report.reconciles, report.errors
    table = {
        e: (pk, name) for pk, e, name in Asset.objects.values_list("id", "external_id", "name")
    }
    assert {e: name for e, (_, name) in table.items()} == {
        i: f"old{i}" if i < 5 else f"new{i}" for i in range(15)
    }
    assert {i: table[i][0] for i in range(10)} == old  # never overwritten
    fresh = {table[i][0] for i in range(10, 15)}
    assert len(fresh) == 5 and not fresh & set(old.values())

    with pytest.raises(UsageError, match="never overwrites the key"):
        bulkpar.upsert(Asset, records, unique="org,external_id", update="id,name")


def test_asset_csv_create_and_upsert_through_the_cli(db, tmp_path, run_cli):
    org = Org.objects.create(name="o")
    path = write_csv(
        tmp_path / "assets.csv",
        ["org_id", "external_id", "name"],
        [[str(org.pk), str(i), f"n{i}"] for i in range(20)],
    )
    args = ("--model", "testapp.Asset", "--workers", "2", "--chunk", "6", "--json", *SETTINGS)
    result = run_cli("create", "--input", path, *args)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["created"] == 20
    ids = dict(Asset.objects.values_list("external_id", "id"))
    assert sorted(Asset.objects.values_list("external_id", "name")) == [
        (i, f"n{i}") for i in range(20)
    ]
    assert len(set(ids.values())) == 20

    path = write_csv(
        tmp_path / "more.csv",
        ["org_id", "external_id", "name"],
        [[str(org.pk), str(i), f"N{i}"] for i in range(15, 25)],
    )
    result = run_cli("upsert", "--input", path, "--unique", "org,external_id", *args)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["created"], report["updated"]) == (5, 5)
    after = dict(Asset.objects.values_list("external_id", "id"))
    assert {e: after[e] for e in range(20)} == ids and len(set(after.values())) == 25
    assert sorted(Asset.objects.values_list("external_id", "name")) == [
        (i, f"n{i}" if i < 15 else f"N{i}") for i in range(25)
    ]

    # a NOT NULL field without a default that the CSV has no column for: before any write
    path = write_csv(tmp_path / "noorg.csv", ["external_id", "name"], [["1", "x"]])
    result = run_cli("create", "--input", path, *args)
    assert result.returncode != 0 and Asset.objects.count() == 25
    assert "no column for required field(s) org of testapp.Asset" in result.stderr


# -- 2. required fields and validation, as Django has them -----------------------------------


def test_an_omitted_field_gets_what_model_gives_it(db, load_method):
    records: list[dict[str, Any]] = [
        {"key": "bare"},
        {"key": "empty", "label": "", "note": ""},
        {"key": "nulls", "note": None, "price": None, "data": None, "tags": None},
        {"key": "full", "label": "L", "note": "N", "price": "2.5", "data": {"a": 1}, "tags": []},
    ]
    report = bulkpar.create(Sample, records, method=load_method, chunk=2, workers=2)
    assert (report.created, report.rejected) == (4, 0), report.errors
    for record in records:
        # bulkpar reads None for a NOT NULL field with a default as "the default";
        # Model(tags=None).save() would fail, so the ORM copy leaves it out
        orm = {k: v for k, v in record.items() if not (k == "tags" and v is None)}
        Sample.objects.create(**{**orm, "key": "orm-" + record["key"]})
    ours, django_orm = sample_contents(), sample_contents("orm-")
    assert {k: v for k, v in ours.items() if not k.startswith("orm-")} == django_orm
    assert django_orm["bare"] == ("", None, None, "SQL NULL", ["new"], None, 0)
    assert django_orm["nulls"][4] == ["new"]  # None for a NOT NULL field with a default
    assert len(set(Sample.objects.values_list("ref", flat=True))) == 8  # callable default


def test_upsert_needs_no_field_it_never_writes(db, load_method, users):
    Sample.objects.create(key="a", label="keep", note="n")
    report = bulkpar.upsert(
        Sample,
        [{"key": "a", "note": "x"}, {"key": "b", "note": "y"}],  # no label
        unique="key",
        update=["note"],
        method=load_method,
        workers=2,
    )
    assert (report.created, report.updated, report.rejected) == (1, 1, 0), report.rejects_file
    assert sorted(Sample.objects.values_list("key", "label", "note")) == [
        ("a", "keep", "x"),
        ("b", "", "y"),
    ]

    # auth.User without a password: the existing user keeps hers, a new one gets ''
    ann = User.objects.create_user("ann", "old@example.com", "secret")
    report = bulkpar.upsert(
        User,
        [{"username": "ann", "email": "ann@example.com"}, {"username": "bob", "email": "b@x.org"}],
        unique="username",
        update=["email"],
        method=load_method,
        workers=2,
    )
    assert (report.created, report.updated, report.rejected) == (1, 1, 0)
    assert sorted(User.objects.values_list("username", "email", "password")) == [
        ("ann", "ann@example.com", ann.password),
        ("bob", "b@x.org", ""),
    ]


def test_database_limits_reject_the_record_not_the_chunk(db, tmp_path):
    from django.db import connection
    from django.db.models import IntegerField

    from bulkpar.inputs.conversion import integer_range

    lo, hi = integer_range(IntegerField(), connection)  # 64 bits on SQLite
    rejects = tmp_path / "rejects.jsonl"
    records: list[dict[str, Any]] = [
        {"key": "k1", "label": "x" * 41},  # max_length 40, on SQLite too
        {"key": "k2", "label": "x" * 40},
        {"key": "k3", "price": "1.23456"},  # 5 places > 4: rejected, not rounded
        {"key": "k4", "price": "1.50000"},  # trailing zeros fit
        {"key": "k5", "price": "12345678.1234"},  # 12 digits
        {"key": "k6", "price": "123456789.1234"},  # 13 digits > 12
        {"key": "k7", "version": hi + 1},  # out of the column's range
        {"key": "k8", "version": lo},
        {"key": "k9", "version": None},  # NOT NULL with a default: the default
        {"key": "k10", "label": None},  # NOT NULL without a default: rejected
        {"key": "k11", "price": "NaN"},
        {"key": "k12", "data": {1, 2}},  # not JSON
    ]
    report = bulkpar.create(Sample, records, chunk=4, workers=2, rejects=str(rejects))
    assert (report.created, report.rejected, report.failed_rows) == (5, 7, 0), report.errors
    assert rejects_of(rejects) == [
        (1, "label"),
        (3, "price"),
        (6, "price"),
        (7, "version"),
        (10, "label"),
        (11, "price"),
        (12, "data"),
    ]
    assert sorted(Sample.objects.values_list("key", "label", "price", "version")) == sorted(
        [
            ("k2", "x" * 40, None, 0),
            ("k4", "", Decimal("1.5"), 0),
            ("k5", "", Decimal("12345678.1234"), 0),
            ("k8", "", None, lo),
            ("k9", "", None, 0),
        ]
    )


def test_validators_run_only_with_validate(db, users, tmp_path):
    good = {"username": "ok_user", "email": "ok@example.com", "password": "!"}
    bad = {"username": "bad name!", "email": "not-an-email", "password": "!"}
    report = bulkpar.create(User, [good, bad], workers=2)  # as bulk_create: no validators
    assert (report.created, report.rejected) == (2, 0)
    User.objects.all().delete()

    rejects = tmp_path / "rejects.jsonl"
    report = bulkpar.create(User, [good, bad], validate=True, workers=2, rejects=str(rejects))
    assert (report.created, report.rejected) == (1, 1)
    assert list(User.objects.values_list("username", flat=True)) == ["ok_user"]
    (reject,) = [json.loads(line) for line in rejects.read_text().splitlines()]
    assert reject["line"] == 2 and reject["field"] == "username"
    assert (
        "Enter a valid username" in reject["error"]
        and "email: Enter a valid email" in (reject["error"])
    )

    # upsert checks the fields a record gives: no password here, and none needed
    report = bulkpar.upsert(
        User,
        [{"username": "ok_user", "email": "nope"}, {"username": "new", "email": "n@example.com"}],
        unique="username",
        update="email",
        validate=True,
        workers=2,
    )
    assert (report.created, report.updated, report.rejected) == (1, 0, 1)
    assert sorted(User.objects.values_list("username", "email")) == [
        ("new", "n@example.com"),
        ("ok_user", "ok@example.com"),
    ]

    # save: from records, and over a queryset
    report = bulkpar.save(User, [{**bad, "username": "s1"}, {**good, "username": "s2"}],
                          validate=True, workers=2)  # fmt: skip
    assert (report.created, report.rejected) == (1, 1)
    assert set(User.objects.values_list("username", flat=True)) == {"ok_user", "new", "s2"}
    User.objects.filter(username="new").update(email="broken")
    report = bulkpar.save(User.objects.all(), validate=True, workers=2)
    assert (report.written, report.rejected) == (2, 1)
    assert User.objects.get(username="new").email == "broken"


def test_json_numbers_for_a_decimal_field_are_exact(db, tmp_path):
    records = [
        {"key": "a", "price": 0.1, "data": 0.1},
        {"key": "b", "price": 12345678.1234},
        {"key": "c", "price": 1.23456},  # too many places: rejected, not rounded
        {"key": "d", "price": 3},
        {"key": "e", "price": 1e-05},
    ]
    jsonl = tmp_path / "s.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in records))
    array = tmp_path / "s.json"
    array.write_text(json.dumps([{**r, "key": "arr-" + r["key"]} for r in records]))
    for path in (jsonl, array):
        report = bulkpar.create(Sample, str(path), chunk=2, workers=2)
        assert (report.created, report.rejected) == (3, 2), report.errors
    expected = {
        "a": Decimal("0.1"),
        "b": Decimal("12345678.1234"),
        "d": Decimal("3"),
    }
    assert dict(Sample.objects.filter(key__in="abd").values_list("key", "price")) == expected
    assert {
        k.removeprefix("arr-"): v
        for k, v in Sample.objects.filter(key__startswith="arr-").values_list("key", "price")
    } == expected
    a = Sample.objects.get(key="a")
    assert a.data == 0.1 and isinstance(a.data, float)  # a JSON float stays a float


# -- 3. a str for a JSONField is a JSON string, except in a CSV cell -----------------------------


def test_json_field_values_from_typed_sources_are_stored_as_model_stores_them(
    db, tmp_path, load_method
):
    values: dict[str, Any] = {
        "str": "x",
        "objtext": '{"a": 1}',  # a JSON string that looks like an object
        "none": None,  # SQL NULL
        "jsonnull": Value(None, JSONField()),  # JSON null, as Django spells it
        "obj": {"a": [1, None, "é"]},
        "empty": "",
    }
    report = bulkpar.create(
        Sample,
        [{"key": k, "data": v} for k, v in values.items()],
        method=load_method,
        chunk=2,
        workers=2,
    )
    assert (report.created, report.rejected) == (6, 0), report.errors
    for k, v in values.items():
        Sample.objects.create(key="orm-" + k, data=v)
    ours = {s.key: json_kind(s) for s in Sample.objects.exclude(key__startswith="orm-")}
    django_orm = {
        s.key.removeprefix("orm-"): json_kind(s)
        for s in Sample.objects.filter(key__startswith="orm-")
    }
    assert ours == django_orm
    assert ours == {
        "str": "x",
        "objtext": '{"a": 1}',
        "none": "SQL NULL",
        "jsonnull": "JSON null",
        "obj": {"a": [1, None, "é"]},
        "empty": "",
    }

    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text(
        "".join(
            json.dumps({"key": f"l-{k}", "data": v}) + "\n"
            for k, v in [("str", "x"), ("objtext", '{"a": 1}'), ("null", None)]
        )
    )
    report = bulkpar.create(Sample, str(jsonl), method=load_method, workers=2)
    assert report.created == 3
    assert {s.key: json_kind(s) for s in Sample.objects.filter(key__startswith="l-")} == {
        "l-str": "x",
        "l-objtext": '{"a": 1}',
        "l-null": "SQL NULL",
    }


# -- 3 and 4. CSV cells: JSON text, empty cells -------------------------------------------------


def test_csv_cells_json_text_and_empty_cells(db, tmp_path, load_method):
    header = ["key", "label", "note", "price", "data", "tags", "at"]
    rows = [
        ["empty", "", "", "", "", "", ""],
        ["full", "L", "n", "1.25", '{"a": 1}', '["x"]', "2024-05-01T12:00:00+02:00"],
        ["jnull", "L", "n", "0", "null", "[]", ""],
        ["jstr", "L", "n", "0", '"text"', "[]", ""],
        ["bad", "L", "n", "0", "text", "[]", ""],  # not JSON: rejected, not stored as a string
    ]
    path = write_csv(tmp_path / "s.csv", header, rows)
    rejects = tmp_path / "rejects.jsonl"
    report = bulkpar.create(Sample, str(path), method=load_method, chunk=2, workers=2,
                            rejects=str(rejects))  # fmt: skip
    assert (report.created, report.rejected) == (4, 1), report.errors
    assert rejects_of(rejects) == [(6, "data")]
    contents = sample_contents()
    at = contents["full"][5]
    assert at is not None and at.isoformat() == "2024-05-01T10:00:00+00:00"
    assert contents == {
        # empty cells: NULL when nullable, else the default, else '' for text
        "empty": ("", None, None, "SQL NULL", ["new"], None, 0),
        "full": ("L", "n", Decimal("1.25"), {"a": 1}, ["x"], at, 0),
        "jnull": ("L", "n", Decimal("0"), "JSON null", [], None, 0),
        "jstr": ("L", "n", Decimal("0"), "text", [], None, 0),
    }
    # the empty note is NULL in the database, not ''
    assert Sample.objects.filter(key="empty", note__isnull=True).exists()


def test_cli_const_is_text_and_validate_is_an_option(db, tmp_path, run_cli):
    path = tmp_path / "s.jsonl"
    path.write_text(
        "".join(
            json.dumps({"key": k, "label": label, "data": "{}", "price": 1, "at": "2024-01-01"})
            + "\n"
            for k, label in [("a", "A"), ("b", "")]  # blank: refused by --validate only
        )
    )
    result = run_cli(
        "create", *SETTINGS, "--model", "testapp.Sample", "--input", path, "--workers", "2",
        "--const", 'tags=["c"]', "--validate", "--json",
    )  # fmt: skip
    report = json.loads(result.stdout)
    assert (report["created"], report["rejected"]) == (1, 1), result.stderr
    a = Sample.objects.get()
    assert (a.key, a.tags, a.data) == ("a", ["c"], "{}")  # --const parsed, the JSONL str not
