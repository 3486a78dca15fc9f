"""Checkpoints that prove what they skip, and one-line messages for bad inputs and options.

A resumed load re-reads its input and checks every chunk it skips against the
digest the journal committed: a different stdin stream or a file edited in
place is refused, never silently skipped. Every message here is checked
through the ``bulkpar`` executable, on each backend.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import one_line_error
from django.db import connection
from testproject.testapp.models import Event, Person, Product

import bulkpar
from bulkpar.engine.checkpoint import FORMAT_VERSION
from bulkpar.errors import InputError
from bulkpar.inputs import sources

PERSON = ("--settings", "testproject.settings", "--model", "testapp.Person")


def create(run_cli, path, *extra, input=None):
    return run_cli("create", *PERSON, "--input", path, "--workers", "2", "-q", *extra, input=input)


# -- checkpoints: what a resume skips must be what was committed -----------------------


def test_a_different_stdin_stream_is_refused_not_skipped(db, run_cli, tmp_path):
    journal = tmp_path / "s.ck"
    stdin = ("-", "--format", "csv", "--checkpoint", journal)
    first = create(run_cli, *stdin, input="username,score\nq1,1\n")
    assert first.returncode == 0, first.stderr
    second = create(run_cli, *stdin, input="username,score\nq2,2\nq3,3\n")
    one_line_error(
        second, 1, f"checkpoint {journal}: chunk 0 (lines 2-2", "of stdin differs",
        "use a new checkpoint file",
    )  # fmt: skip
    assert list(Person.objects.values_list("username", flat=True)) == ["q1"]
    # the same stream again resumes: nothing to do, nothing written twice
    again = create(run_cli, *stdin, "--json", input="username,score\nq1,1\n")
    assert again.returncode == 0, again.stderr
    report = json.loads(again.stdout)
    assert (report["resumed_chunks"], report["resumed_rows"], report["input_rows"]) == (1, 1, 0)
    assert Person.objects.count() == 1


def test_a_shorter_stdin_stream_is_refused(db, run_cli, tmp_path):
    journal = tmp_path / "s.ck"
    stdin = ("-", "--format", "jsonl", "--chunk", "2", "--checkpoint", journal)
    rows = "".join(json.dumps({"username": f"u{i}", "score": i}) + "\n" for i in range(6))
    assert create(run_cli, *stdin, input=rows).returncode == 0
    shorter = create(run_cli, *stdin, input="".join(rows.splitlines(True)[:4]))
    one_line_error(shorter, 1, "stdin ends before chunk", "new checkpoint file")
    assert Person.objects.count() == 6


def test_a_file_changed_in_place_is_refused_even_with_the_same_size_and_mtime(
    db, run_cli, tmp_path
):
    path = tmp_path / "people.csv"
    path.write_text("username,score\nann,1\nbob,2\n")
    journal = tmp_path / "job.ck"
    assert create(run_cli, path, "--checkpoint", journal).returncode == 0
    stat = path.stat()
    path.write_text("username,score\nann,1\nbea,2\n")  # same size
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # and the same mtime
    assert path.stat().st_size == stat.st_size
    result = create(run_cli, path, "--checkpoint", journal)
    one_line_error(result, 1, f"of {path} differs from the run that committed it")
    assert sorted(Person.objects.values_list("username", flat=True)) == ["ann", "bob"]


def test_a_file_rewritten_with_the_same_content_still_resumes(db, run_cli, tmp_path):
    path = tmp_path / "people.csv"
    content = "username,score\n" + "".join(f"u{i},{i}\n" for i in range(10))
    path.write_text(content)
    journal = tmp_path / "job.ck"
    assert create(run_cli, path, "--chunk", "4", "--checkpoint", journal).returncode == 0
    path.write_text(content)
    os.utime(path, ns=(1, 1))  # a new mtime: a fresh copy of the same export
    result = create(run_cli, path, "--chunk", "4", "--checkpoint", journal, "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["resumed_rows"], report["input_rows"]) == (10, 0)
    assert report["resumed_chunks"] >= 3
    assert Person.objects.count() == 10


def _failing_chunk(tmp_path, rows=12):
    """An input of ``rows`` people whose ``u4`` collides with an existing row."""
    path = tmp_path / "people.csv"
    path.write_text("username,score\n" + "".join(f"u{i},{i}\n" for i in range(rows)))
    Person.objects.create(username="u4")
    return path


def test_a_resume_verifies_the_skipped_chunks_and_writes_the_rest(db, tmp_path):
    path = _failing_chunk(tmp_path)
    journal = str(tmp_path / "job.ck")
    options = dict(chunk=3, workers=2, checkpoint=journal)
    first = bulkpar.create(Person, path, **options)
    assert first.failed_chunks == 1 and not first.ok
    committed = first.created
    Person.objects.filter(username="u4").delete()
    second = bulkpar.create(Person, path, **options)
    assert second.ok, second.errors
    assert second.resumed_chunks == first.chunks  # the committed ones
    assert second.resumed_rows == committed
    assert second.created == 12 - committed == second.input_rows
    assert second.reconciles
    assert sorted(Person.objects.values_list("score", flat=True)) == list(range(12))


def test_a_change_in_a_later_skipped_chunk_stops_the_resume(db, tmp_path):
    path = _failing_chunk(tmp_path, rows=40)
    journal = str(tmp_path / "job.ck")
    options = dict(chunk=3, workers=2, checkpoint=journal, on_error="skip")
    first = bulkpar.create(Person, path, **options)
    assert (first.failed_chunks, first.created) == (1, 40 - first.failed_rows)
    failed = first.errors[0].chunk
    # a chunk committed after the failed one (in plan order): change its last record
    entries = [json.loads(line) for line in Path(journal).read_text().splitlines()[1:]]
    later = min((e for e in entries if e["index"] > failed), key=lambda e: e["index"])
    last_line = int(re.match(r"lines \d+-(\d+)", later["label"]).group(1))
    lines = path.read_text().splitlines(True)
    username = lines[last_line - 1].split(",")[0]
    lines[last_line - 1] = f"{username},999\n"
    path.write_text("".join(lines))
    Person.objects.filter(username="u4").delete()

    second = bulkpar.create(Person, path, **options)
    assert not second.ok
    assert second.stopped == (
        f"checkpoint {journal}: chunk {later['index']} ({later['label']}) of {path} differs "
        "from the run that committed it; the input changed — use a new checkpoint file"
    )
    # the failed chunk, read before the changed one, was this run's to write
    assert second.created == first.failed_rows
    assert second.reconciles
    assert Person.objects.get(username=username).score != 999
    assert Person.objects.count() == 40


def test_an_old_format_journal_is_refused(db, run_cli, tmp_path):
    path = tmp_path / "people.csv"
    path.write_text("username,score\nann,1\n")
    journal = tmp_path / "job.ck"
    journal.write_text(json.dumps({"bulkpar_checkpoint": 1, "fingerprint": "x", "job": {}}) + "\n")
    result = create(run_cli, path, "--checkpoint", journal)
    one_line_error(result, 2, f"has format 1, this bulkpar reads format {FORMAT_VERSION}")
    assert Person.objects.count() == 0


def test_a_checkpoint_naming_a_directory_is_one_line(db, run_cli, tmp_path):
    path = tmp_path / "people.csv"
    path.write_text("username,score\nann,1\n")
    folder = tmp_path / "journals"
    folder.mkdir()
    one_line_error(create(run_cli, path, "--checkpoint", folder), 2, "is a directory; name a file")
    assert Person.objects.count() == 0


# -- an unmigrated database --------------------------------------------------------------


@pytest.fixture
def empty_database(tmp_path) -> Iterator[str]:
    """A database on the same server with no tables at all; yields its name."""
    if connection.vendor == "sqlite":
        yield str(tmp_path / "empty.sqlite3")
        return
    name = f"bulkpar_empty_{uuid.uuid4().hex[:8]}"
    quoted = connection.ops.quote_name(name)
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE {quoted}")
    try:
        yield name
    finally:
        force = " WITH (FORCE)" if connection.vendor == "postgresql" else ""
        with connection.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS {quoted}{force}")


def test_an_unmigrated_database_names_the_table_and_migrate(db, run_cli, tmp_path, empty_database):
    path = tmp_path / "people.csv"
    path.write_text("username,score\nann,1\n")
    env = {"BULKPAR_TEST_DB_NAME": empty_database}
    commands = [
        ("create", *PERSON, "--input", path),
        ("upsert", *PERSON, "--input", path, "--unique", "username"),
        ("save", *PERSON, "--input", path),
        ("update", *PERSON, "--set", "score=1"),
        ("save", *PERSON),
    ]
    for command in commands:
        result = run_cli(*command, "-q", env=env)
        one_line_error(
            result, 1, "the table 'testapp_person' of testapp.Person does not exist",
            "migrate testapp",
        )  # fmt: skip


# -- CSV: large fields, other delimiters --------------------------------------------------


def test_a_csv_field_over_128_kib_loads(db, run_cli, tmp_path):
    blob = "x" * 300_000
    path = tmp_path / "products.csv"
    cell = json.dumps({"blob": blob}).replace('"', '""')
    path.write_text(f'sku,price,data\nbig,1.50,"{cell}"\n')
    result = run_cli("create", "--settings", "testproject.settings", "--model", "testapp.Product",
                     "--input", path, "--workers", "2", "-q")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert Product.objects.get(sku="big").data == {"blob": blob}


def test_a_csv_field_over_the_limit_names_the_file_and_line(db, tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "CSV_FIELD_LIMIT", 1000)
    path = tmp_path / "people.csv"
    path.write_text("username,email\nann,a@example.com\n" + f"bob,{'b' * 2000}\n")
    report = bulkpar.create(Person, path, workers=2, chunk=1)
    assert report.stopped is not None
    assert f"{path}, line 3: field larger than field limit (1000)" in report.stopped
    path.write_text(f"username,email\nbob,{'b' * 2000}\n")
    with pytest.raises(InputError, match=r"people\.csv, line 2: field larger than field limit"):
        bulkpar.create(Person, path, workers=2)


@pytest.mark.parametrize(
    ("delimiter", "separator"), [(";", ";"), ("tab", "\t"), ("\\t", "\t"), ("|", "|")]
)
def test_delimiter(db, run_cli, tmp_path, delimiter, separator):
    path = tmp_path / "people.csv"
    path.write_text(f"username{separator}email{separator}score\nann{separator}a,b{separator}7\n")
    result = create(run_cli, path, "--delimiter", delimiter)
    assert result.returncode == 0, result.stderr
    assert Person.objects.values_list("username", "email", "score").get() == ("ann", "a,b", 7)


def test_delimiter_in_the_api(db, tmp_path):
    path = tmp_path / "people.csv"
    path.write_text("username;score\nann;3\nbob;4\n")
    report = bulkpar.upsert(Person, path, unique="username", delimiter=";", workers=2)
    assert report.ok and report.created == 2
    path.write_text("username;score\nann;30\n")
    bulkpar.save(Person, path, match="username", delimiter=";", workers=2)
    assert dict(Person.objects.values_list("username", "score")) == {"ann": 30, "bob": 4}


def test_delimiter_refused_where_it_means_nothing(db, run_cli, tmp_path):
    rows = tmp_path / "people.jsonl"
    rows.write_text('{"username": "ann"}\n')
    one_line_error(create(run_cli, rows, "--delimiter", ";"), 2, "--delimiter goes with CSV input")
    csv_file = tmp_path / "people.csv"
    csv_file.write_text("username\nann\n")
    one_line_error(create(run_cli, csv_file, "--delimiter", ";;"), 2, "give one character")
    one_line_error(run_cli("save", *PERSON, "--delimiter", ";"), 2, "--delimiter goes with --input")
    with pytest.raises(bulkpar.errors.UsageError, match="not with an iterable"):
        bulkpar.create(Person, [{"username": "ann"}], delimiter=";")
    assert Person.objects.count() == 0


# -- JSON: an object where an array is expected ---------------------------------------------


def test_a_json_object_instead_of_an_array(db, run_cli, tmp_path):
    path = tmp_path / "people.json"
    path.write_text('\n  {"username": "ann"}\n{"username": "bob"}\n')
    one_line_error(
        create(run_cli, path), 1,
        f"{path}: expected a JSON array of objects, found an object; "
        "for one object per line use --format jsonl",
    )  # fmt: skip
    path.write_text('\ufeff [{"username": "ann"}]')  # a BOM and spaces before the array
    assert create(run_cli, path).returncode == 0
    assert Person.objects.get().username == "ann"


# -- options checked in the parent before any write ---------------------------------------


def test_map_naming_a_missing_column(db, run_cli, tmp_path):
    path = tmp_path / "people.csv"
    path.write_text("username,score\nann,1\n")
    one_line_error(
        create(run_cli, path, "--map", "nocol=email"), 2,
        f"--map nocol=email: {path} has no column 'nocol' (its columns: username, score)",
    )  # fmt: skip
    assert Person.objects.count() == 0


def test_const_with_a_bad_value_fails_before_any_write(db, run_cli, tmp_path):
    path = tmp_path / "people.csv"
    path.write_text("username\nann\n")
    result = create(run_cli, path, "--const", "score=abc")
    one_line_error(result, 2, "--const score='abc'", "must be an integer")
    assert "chunk" not in result.stderr and "rejected" not in result.stdout
    assert Person.objects.count() == 0


def test_update_naming_a_field_the_input_lacks(db, run_cli, tmp_path):
    Event.objects.create(organization_id=1, external_id="e1", name="old")
    path = tmp_path / "events.csv"
    path.write_text("organization_id,external_id,name\n1,e1,new\n")
    result = run_cli("upsert", "--settings", "testproject.settings", "--model", "testapp.Event",
                     "--input", path, "--unique", "organization_id,external_id",
                     "--update", "name,started", "-q")  # fmt: skip
    one_line_error(
        result, 2, "--update names started, which the input",
        "(it gives organization_id, external_id, name)",
    )  # fmt: skip
    assert Event.objects.get().name == "old"
