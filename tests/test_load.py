"""``bulkpar create`` / ``bulkpar upsert``: inputs, conversion, counts, rejects, concurrency."""

from __future__ import annotations

import csv
import datetime
import functools
import gzip
import json
import subprocess
import sys
import uuid
from decimal import Decimal

import pytest
from django.utils import timezone
from testproject.testapp.models import (
    Article,
    Author,
    Event,
    Item,
    Person,
    Product,
    Restaurant,
    Token,
)

import bulkpar
from bulkpar.errors import UsageError

SETTINGS = ("--settings", "testproject.settings")


def write_csv(path, rows):
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_jsonl(path, rows, opener=open):
    with opener(path, "wt") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    return path


@pytest.fixture
def create(load_method):
    """bulkpar.create with each writer of this backend."""
    return functools.partial(bulkpar.create, method=load_method)


@pytest.fixture
def upsert(load_method):
    """bulkpar.upsert with each writer of this backend."""
    return functools.partial(bulkpar.upsert, method=load_method)


def events(n, org=1, name=None):
    return [
        {"organization_id": org, "external_id": f"e{i}", "name": name or f"n{i}"} for i in range(n)
    ]


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "json", "jsonl.gz", "csv.gz"])
def test_create_from_every_file_format(db, tmp_path, run_cli, fmt):
    rows = [
        {"username": f"u{i}", "email": f"u{i}@x.org", "score": i, "active": i % 2 == 0}
        for i in range(25)
    ]
    path = tmp_path / f"people.{fmt}"
    if fmt.startswith("csv"):
        write_csv(tmp_path / "plain.csv", rows)
        data = (tmp_path / "plain.csv").read_bytes()
        path.write_bytes(gzip.compress(data) if fmt.endswith(".gz") else data)
    elif fmt == "json":
        path.write_text(json.dumps(rows))
    else:
        write_jsonl(path, rows, opener=gzip.open if fmt.endswith(".gz") else open)
    result = run_cli(
        "create",
        *SETTINGS,
        "--model",
        "testapp.Person",
        "--input",
        path,
        "--chunk",
        "7",
        "--workers",
        "2",
        "--json",
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["input_rows"], report["created"], report["rejected"]) == (25, 25, 0)
    assert report["chunks"] == 4 and report["reconciles"]
    got = {p.username: (p.email, p.score, p.active) for p in Person.objects.all()}
    assert got == {f"u{i}": (f"u{i}@x.org", i, i % 2 == 0) for i in range(25)}
    assert Person.objects.filter(created_on__isnull=False, updated_on__isnull=False).count() == 25


def test_create_from_stdin(db, run_cli):
    lines = "".join(
        json.dumps({"name": f"i{i}", "qty": i, "weight": i / 4}) + "\n" for i in range(12)
    )
    result = run_cli(
        "create",
        *SETTINGS,
        "--model",
        "testapp.Item",
        "--input",
        "-",
        "--format",
        "jsonl",
        "--chunk",
        "5",
        "--json",
        input=lines,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["created"] == 12
    assert sorted(Item.objects.values_list("qty", "weight")) == [(i, i / 4) for i in range(12)]


def test_every_field_type_is_converted(db, tmp_path, create):
    author = Author.objects.create(name="ann")
    rows = [
        {
            "author_id": str(author.pk),
            "title": "t1",
            "slug": "s1",
            "published_at": "2024-03-01T12:30:00+02:00",
            "published_on": "2024-03-01",
            "rating": "4.25",
            "meta": {"tags": ["a", "b"]},  # a Python str would be a JSON string
            "wc": "120",
        },
        {
            "author": str(author.pk),
            "title": "t2",
            "slug": "s2",
            "published_at": "2024-03-02 08:00",
            "published_on": "",
            "rating": "",
            "meta": [],
            "word_count": "0",
        },
    ]
    report = create(Article, rows, workers=1, executor="serial")
    assert report.created == 2 and report.rejected == 0, report.errors
    first, second = Article.objects.order_by("slug")
    assert first.author_id == author.pk
    assert first.published_at == datetime.datetime(2024, 3, 1, 10, 30, tzinfo=datetime.UTC)
    assert first.published_on == datetime.date(2024, 3, 1)
    assert first.rating == Decimal("4.25") and first.meta == {"tags": ["a", "b"]}
    assert first.word_count == 120
    # a naive datetime is read in the current time zone (UTC here); empty cells are NULL
    assert second.published_at == datetime.datetime(2024, 3, 2, 8, 0, tzinfo=datetime.UTC)
    assert second.published_on is None and second.rating is None and second.meta == []

    token_id = uuid.uuid4()
    create(
        Token,
        [{"id": str(token_id), "label": "x", "used": "yes"}, {"label": "y"}],
        executor="serial",
    )
    assert Token.objects.get(pk=token_id).used is True
    assert Token.objects.get(label="y").id != token_id  # default=uuid4 filled in
    create(Product, [{"sku": "A-1", "price": 9.5, "data": None}], executor="serial")
    assert Product.objects.get(pk="A-1").price == Decimal("9.50")


def test_ignore_conflicts_counts_exactly(db, create):
    Person.objects.bulk_create(Person(username=f"u{i}", score=-1) for i in range(0, 40, 2))
    rows = [{"username": f"u{i}", "score": i} for i in range(40)]
    report = create(Person, rows, ignore_conflicts=True, chunk=9, workers=2)
    assert (report.created, report.skipped, report.input_rows) == (20, 20, 40)
    assert report.reconciles and report.ok
    scores = dict(Person.objects.values_list("username", "score"))
    assert scores == {f"u{i}": (-1 if i % 2 == 0 else i) for i in range(40)}


def test_create_without_ignore_conflicts_fails_the_chunk(db, create):
    Person.objects.create(username="u3")
    report = create(
        Person, [{"username": f"u{i}"} for i in range(10)], chunk=5, workers=1, executor="serial"
    )
    assert not report.ok and report.failed_chunks == 1
    assert report.created > 0 and report.failed_rows > 0 and report.reconciles
    assert "IntegrityError" in report.errors[0].error
    assert Person.objects.count() == 1 + report.created  # u3 plus the committed chunks


def test_upsert_thirds_created_updated_unchanged_and_auto_now(db, upsert):
    long_ago = timezone.now() - datetime.timedelta(days=30)
    Event.objects.bulk_create(
        Event(organization_id=1, external_id=f"e{i}", name=f"n{i}") for i in range(20)
    )
    Event.objects.update(updated_at=long_ago, created_at=long_ago)
    # e0..e9 unchanged, e10..e19 renamed, e20..e29 new
    rows = [
        {"organization_id": 1, "external_id": f"e{i}", "name": f"n{i}" if i < 10 else f"N{i}"}
        for i in range(30)
    ]
    report = upsert(Event, rows, unique="organization_id,external_id", chunk=7, workers=2)
    assert (report.created, report.updated, report.unchanged) == (10, 10, 10)
    assert report.input_rows == 30 and report.reconciles
    names = dict(Event.objects.values_list("external_id", "name"))
    assert names == {f"e{i}": f"n{i}" if i < 10 else f"N{i}" for i in range(30)}
    unchanged = Event.objects.filter(external_id__in=[f"e{i}" for i in range(10)])
    assert all(e.updated_at == long_ago and e.created_at == long_ago for e in unchanged)
    updated = Event.objects.filter(external_id__in=[f"e{i}" for i in range(10, 20)])
    assert all(e.updated_at > long_ago and e.created_at == long_ago for e in updated)
    created = Event.objects.filter(external_id__in=[f"e{i}" for i in range(20, 30)])
    assert all(e.updated_at > long_ago and e.created_at > long_ago for e in created)


def test_upsert_update_limits_the_overwritten_fields(db, upsert):
    Event.objects.create(organization_id=1, external_id="a", name="old")
    started = "2024-05-01T00:00:00Z"
    report = upsert(
        Event,
        [{"organization_id": 1, "external_id": "a", "name": "new", "started": started}],
        unique=["organization_id", "external_id"],
        update=["started"],
        executor="serial",
    )
    assert report.updated == 1
    event = Event.objects.get()
    assert event.name == "old" and event.started == datetime.datetime(
        2024, 5, 1, tzinfo=datetime.UTC
    )


def test_upsert_duplicates_in_input_last_one_wins(db, upsert):
    rows = [*events(5), {"organization_id": 1, "external_id": "e2", "name": "last"}]
    report = upsert(Event, rows, unique="organization_id,external_id", executor="serial")
    assert (report.created, report.duplicates, report.input_rows) == (5, 1, 6)
    assert report.reconciles
    assert Event.objects.get(external_id="e2").name == "last"


def test_upsert_needs_a_unique_constraint_before_any_write(db):
    with pytest.raises(
        UsageError,
        match=r"no unique constraint of testapp.Event covers exactly "
        r"\(external_id\).*--unique organization_id,external_id",
    ):
        bulkpar.upsert(Event, events(3), unique="external_id")
    assert Event.objects.count() == 0


def test_upsert_single_field_unique_key(db, upsert):
    Person.objects.create(username="a", score=1)
    report = upsert(
        Person,
        [{"username": "a", "score": 2}, {"username": "b", "score": 3}],
        unique="username",
        executor="serial",
    )
    assert (report.created, report.updated) == (1, 1)
    assert dict(Person.objects.values_list("username", "score")) == {"a": 2, "b": 3}


def test_bad_rows_are_rejected_and_their_chunk_still_written(db, tmp_path, run_cli):
    rows = [{"username": f"u{i}", "score": str(i), "created_on": ""} for i in range(10)]
    rows[2]["score"] = "twelve"  # string in an integer field
    rows[5]["username"] = "x" * 151  # longer than max_length
    path = write_csv(tmp_path / "p.csv", rows)
    dates = tmp_path / "a.jsonl"
    rejects = tmp_path / "rejects.jsonl"
    result = run_cli(
        "create",
        *SETTINGS,
        "--model",
        "testapp.Person",
        "--input",
        path,
        "--chunk",
        "100",
        "--rejects",
        rejects,
        "--ignore-unknown",
        "--max-rejects",
        "2",
        "--json",
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["created"], report["rejected"]) == (8, 2) and report["reconciles"]
    # the file is written as chunks finish: a partition's chunks interleave with others'
    lines = sorted((json.loads(line) for line in rejects.read_text().splitlines()),
                   key=lambda r: r["line"])  # fmt: skip
    assert [(r["line"], r["field"]) for r in lines] == [(4, "score"), (7, "username")]
    assert "twelve" in lines[0]["error"] and lines[0]["row"]["username"] == "u2"
    assert Person.objects.count() == 8

    author = Author.objects.create(name="a")
    write_jsonl(
        dates,
        [
            {
                "author": author.pk,
                "title": "t",
                "slug": f"s{i}",
                "published_on": "2024-13-45" if i == 1 else "2024-01-01",
            }
            for i in range(3)
        ],
    )
    report = bulkpar.create(Article, str(dates), rejects=str(rejects), executor="serial")
    assert (report.created, report.rejected) == (2, 1)
    assert json.loads(rejects.read_text())["line"] == 2


def test_max_rejects_stops_the_run(db):
    rows = [{"username": f"u{i}", "score": "x" if i % 2 else i} for i in range(40)]
    report = bulkpar.create(Person, rows, chunk=5, max_rejects=3, executor="serial")
    assert not report.ok and "more than 3 rows rejected" in (report.stopped or "")
    # chunks stop starting once more than 3 are rejected (which records share a chunk
    # depends on their key's partition); the chunks that ran are counted
    assert report.rejected > 3 and report.input_rows <= 20 and report.reconciles
    assert Person.objects.count() == report.created == report.input_rows - report.rejected


def test_unknown_column_is_an_error_before_any_write(db, tmp_path, run_cli):
    path = write_csv(tmp_path / "p.csv", [{"username": "a", "scroe": "1"}])
    result = run_cli("create", *SETTINGS, "--model", "testapp.Person", "--input", path)
    assert result.returncode == 2
    assert "column 'scroe' of" in result.stderr and "did you mean 'score'?" in result.stderr
    result = run_cli(
        "create",
        *SETTINGS,
        "--model",
        "testapp.Person",
        "--input",
        path,
        "--map",
        "scroe=score",
        "--const",
        "nickname=imported",
        "--json",
    )
    assert result.returncode == 0, result.stderr
    assert Person.objects.get().score == 1 and Person.objects.get().nickname == "imported"


def test_empty_input_and_multi_table_inheritance(db, tmp_path):
    report = bulkpar.create(Person, [], executor="serial")
    assert report.ok and report.input_rows == 0 and report.created == 0
    with pytest.raises(UsageError, match=r"multi-table inheritance.*bulkpar save"):
        bulkpar.create(Restaurant, [{"name": "x"}])


def test_two_concurrent_upsert_runs_on_overlapping_keys(db, tmp_path):
    first = write_jsonl(tmp_path / "a.jsonl", events(300, name="from-a"))
    second = write_jsonl(
        tmp_path / "b.jsonl",
        [{"organization_id": 1, "external_id": f"e{i}", "name": "same"} for i in range(150, 450)],
    )
    Event.objects.bulk_create(
        Event(organization_id=1, external_id=f"e{i}", name="old") for i in range(100, 200)
    )
    command = [
        sys.executable,
        "-m",
        "bulkpar",
        "upsert",
        *SETTINGS,
        "--model",
        "testapp.Event",
        "--unique",
        "organization_id,external_id",
        "--chunk",
        "25",
        "--workers",
        "2",
        "--update",
        "name",
        "--json",
        "--input",
    ]
    procs = [
        subprocess.Popen(
            [*command, str(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for path in (first, second)
    ]
    outputs = [p.communicate(timeout=180) for p in procs]
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
        assert "IntegrityError" not in err
        report = json.loads(out)
        assert report["reconciles"] and report["failed_chunks"] == 0
    assert Event.objects.count() == 450
    names = dict(Event.objects.values_list("external_id", "name"))
    for i in range(450):
        if i < 150:
            assert names[f"e{i}"] == "from-a"
        elif i >= 300:
            assert names[f"e{i}"] == "same"
        else:  # written by both runs: either value, never lost or the pre-existing "old"
            assert names[f"e{i}"] in ("from-a", "same")
