"""Reports that say why, add up, and exit non-zero when records were rejected.

Rejected records fail the run unless ``--max-rejects`` allows them; the report
carries the first few reasons; every operation's counts reconcile (the
autouse fixture in conftest.py checks that on every report of the suite, the
tests here check the equation itself); dry runs say what they would write;
chunks failing with one error print it once.
"""

from __future__ import annotations

import json
import re

import pytest
from django.db.models import F
from testproject.testapp.models import Event, Person, Signalled

import bulkpar
import bulkpar.engine.runner
from bulkpar.report import ChunkResult, RejectSample, Report

T = "testproject.testapp.transforms"
SETTINGS = ("--settings", "testproject.settings")
PERSON = (*SETTINGS, "--model", "testapp.Person")


def person_csv(path, n, bad=()):
    """``n`` Person records; those whose index is in ``bad`` have the score ``abc``."""
    lines = ["username,score"] + [f"u{i},{'abc' if i in bad else i}" for i in range(n)]
    path.write_text("\n".join(lines) + "\n")
    return path


def line_of(stdout, pattern):
    """The rendered line matching ``pattern`` (a regex over the whole line)."""
    found = [line for line in stdout.splitlines() if re.fullmatch(pattern, line.strip())]
    assert found, f"no line matches {pattern!r} in:\n{stdout}"
    return found[0]


# -- rejected records are not silent -------------------------------------------------------


def test_rejected_records_exit_1_and_the_report_says_why(db, tmp_path, run_cli):
    path = person_csv(tmp_path / "p.csv", 30, bad={2, 13, 27})
    result = run_cli("create", *PERSON, "--input", path, "--chunk", "10", "--workers", "2",
                     "--json")  # fmt: skip
    assert result.returncode == 1, result.stderr
    expected = "Error: 3 records rejected; see --rejects FILE, or allow them with --max-rejects 3"
    assert expected in result.stderr.splitlines()
    report = json.loads(result.stdout)
    assert (report["created"], report["rejected"], report["ok"]) == (27, 3, False)
    samples = report["reject_samples"]
    # CSV line numbers: the header is line 1
    assert [(s["line"], s["field"]) for s in samples] == [
        (4, "score"),
        (15, "score"),
        (29, "score"),
    ]
    assert all("abc" in s["error"] for s in samples)
    assert Person.objects.count() == 27


def test_max_rejects_allows_them_with_a_warning_and_the_human_report_lists_them(
    db, tmp_path, run_cli
):
    path = person_csv(tmp_path / "p.csv", 30, bad={2, 13, 27})
    result = run_cli("create", *PERSON, "--input", path, "--chunk", "10", "--workers", "2",
                     "--max-rejects", "5")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "bulkpar: 3 records rejected (allowed by --max-rejects 5); see --rejects FILE"
    )
    line_of(result.stdout, r"records rejected\s+3")
    line_of(result.stdout, r"3 records rejected:")
    assert "abc" in line_of(result.stdout, r"line 4, field score: .*")
    line_of(result.stdout, r"line 29, field score: .*")
    assert Person.objects.count() == 27

    rejects = tmp_path / "rejects.jsonl"
    Person.objects.all().delete()
    again = run_cli("create", *PERSON, "--input", path, "--chunk", "10", "--workers", "2",
                    "--max-rejects", "3", "--rejects", rejects, "--json")  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert f"bulkpar: 3 records rejected (allowed by --max-rejects 3); see {rejects}" in (
        again.stderr.splitlines()
    )
    assert json.loads(again.stdout)["ok"] is True
    assert len(rejects.read_text().splitlines()) == 3


def test_more_rejects_than_allowed_stop_the_run_and_exit_1(db, tmp_path, run_cli):
    path = person_csv(tmp_path / "p.csv", 100, bad={1, 2, 3, 4})
    result = run_cli("create", *PERSON, "--input", path, "--chunk", "10", "--workers", "1",
                     "--max-rejects", "2", "--json")  # fmt: skip
    assert result.returncode == 1
    assert "Error: more than 2 rows rejected (--max-rejects)" in result.stderr
    report = json.loads(result.stdout)
    assert report["rejected"] == 4 and report["stopped"] and not report["ok"]


def test_the_report_keeps_the_first_five_rejects_in_input_order(db):
    rows = [{"username": f"u{i}", "score": "x" if i % 3 == 0 else i} for i in range(60)]
    report = bulkpar.create(Person, rows, chunk=7, workers=2)
    assert (report.created, report.rejected, report.ok) == (40, 20, False)
    assert all(isinstance(s, RejectSample) for s in report.reject_samples)
    assert [s.line for s in report.reject_samples] == [1, 4, 7, 10, 13]
    assert {(s.field, s.pk) for s in report.reject_samples} == {("score", None)}

    more = [{"username": f"v{i}", "score": "x" if i % 3 == 0 else i} for i in range(60)]
    allowed = bulkpar.create(Person, more, chunk=7, workers=2, max_rejects=20)
    assert allowed.ok and allowed.rejected == 20 and allowed.rejects_allowed
    assert allowed.to_dict()["reject_samples"][0] == {
        "chunk": allowed.reject_samples[0].chunk, "line": 1, "pk": None, "field": "score",
        "error": allowed.reject_samples[0].error,
    }  # fmt: skip


def test_a_save_that_breaks_a_constraint_is_rejected_and_fails_the_run(db, tmp_path, run_cli):
    Signalled.objects.create(name="taken")
    names = [f"s{i}" for i in range(10)]
    names.insert(5, "taken")
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps({"name": n}) + "\n" for n in names))
    result = run_cli("save", *SETTINGS, "--model", "testapp.Signalled", "--input", path,
                     "--chunk", "4", "--workers", "2", "--json")  # fmt: skip
    assert result.returncode == 1
    expected = "Error: 1 object rejected; see --rejects FILE, or allow them with --max-rejects 1"
    assert expected in result.stderr.splitlines()
    report = json.loads(result.stdout)
    assert (report["saved"], report["written"], report["rejected"]) == (10, 10, 1)
    [sample] = report["reject_samples"]
    assert sample["line"] == 6 and sample["error"].startswith("IntegrityError")
    assert Signalled.objects.count() == 11


def test_bisect_rejects_in_an_update_are_rejected_rows_not_unattempted(people, run_cli):
    people(100)  # user17 (pk 18) raises
    command = ("update", *PERSON, "--func", f"{T}:bump_unless_cursed", "--chunk", "10",
               "--workers", "2", "--on-error", "bisect")  # fmt: skip
    result = run_cli(*command, "--json")
    assert result.returncode == 1
    assert "Error: 1 row rejected; see --rejects FILE" in result.stderr
    report = json.loads(result.stdout)
    assert (report["matched"], report["written"], report["rejected"]) == (100, 99, 1)
    assert report["not_attempted"] == 0 and report["reconciles"] and not report["ok"]
    [sample] = report["reject_samples"]
    assert (sample["pk"], sample["line"]) == (18, None)
    assert sample["error"] == "ValueError: cursed row user17"

    Person.objects.update(score=F("id") - 1)
    human = run_cli(*command, "--max-rejects", "1")
    assert human.returncode == 0, human.stderr
    assert "not attempted" not in human.stdout
    line_of(human.stdout, r"rows rejected\s+1")
    line_of(human.stdout, r"pk 18: ValueError: cursed row user17")
    line_of(human.stdout, r"rows matched 100 = written 99 \+ rejected 1 ✓")
    assert Person.objects.filter(score=F("id")).count() == 99


def test_bisect_rejects_count_through_the_python_api(people):
    people(100)
    report = bulkpar.update(
        Person, func=f"{T}:bump_unless_cursed", chunk=10, workers=2, on_error="bisect"
    )
    assert (report.written, report.rejected, report.not_attempted) == (99, 1, 0)
    assert report.reconciles and not report.ok
    Person.objects.update(score=F("id") - 1)
    allowed = bulkpar.update(Person, func=f"{T}:bump_unless_cursed", chunk=10, workers=2,
                             on_error="bisect", max_rejects=1)  # fmt: skip
    assert allowed.ok and allowed.rejected == 1


# -- reports that add up -------------------------------------------------------------------


def reconcile(report):
    """The documented equation of each operation, written out independently of Report."""
    if report["operation"] == "update":
        terms = ("written", "unchanged", "skipped", "rejected")
    elif report["operation"] == "save":
        terms = ("saved", "skipped", "rejected")
    else:
        terms = ("created", "updated", "unchanged", "skipped", "rejected", "duplicates")
    total = report["input_rows"] if report["input_rows"] is not None else report["matched"]
    accounted = sum(report[t] for t in terms) + report["failed_rows"] + report["not_attempted"]
    return total, accounted


@pytest.mark.parametrize("mode", ["set", "func", "create", "upsert", "save-input", "save-query"])
def test_every_operation_reconciles_and_counts_written(people, tmp_path, run_cli, mode):
    people(30)
    Event.objects.bulk_create(Event(organization_id=1, external_id=f"e{i}", name="x")
                              for i in range(0, 20, 2))  # fmt: skip
    events = tmp_path / "events.jsonl"
    events.write_text("".join(json.dumps({"organization_id": 1, "external_id": f"e{i}",
                      "name": "y" if i % 4 else "x"}) + "\n" for i in range(20)))  # fmt: skip
    people_in = person_csv(tmp_path / "p.csv", 12, bad={3})
    signalled = tmp_path / "s.jsonl"
    signalled.write_text("".join(json.dumps({"name": f"s{i}"}) + "\n" for i in range(10)))
    run = ("--workers", "2", "--chunk", "7", "--json", "--max-rejects", "1")
    args = {
        "set": ("update", *PERSON, "--filter", "active=true", "--set", "nickname=n"),
        "func": ("update", *PERSON, "--func", f"{T}:skip_odd"),
        "create": ("create", *PERSON, "--input", people_in),
        "upsert": ("upsert", *SETTINGS, "--model", "testapp.Event", "--input", events,
                   "--unique", "organization_id,external_id"),
        "save-input": ("save", *SETTINGS, "--model", "testapp.Signalled", "--input", signalled),
        "save-query": ("save", *PERSON, "--filter", "score__lt=25", "--func", f"{T}:noop"),
    }[mode]  # fmt: skip
    if mode == "create":
        Person.objects.all().delete()
    result = run_cli(*args, *run)
    assert result.returncode == 0, result.stdout
    report = json.loads(result.stdout)
    total, accounted = reconcile(report)
    assert total == accounted and report["reconciles"]
    assert total > 0
    if report["operation"] in ("create", "upsert"):
        assert report["written"] == report["created"] + report["updated"] > 0
    elif report["operation"] == "save":
        assert report["written"] == report["saved"] == report["created"] + report["updated"] > 0
    else:
        assert report["written"] > 0
    if mode == "create":
        assert (report["created"], report["rejected"]) == (11, 1)
    if mode == "func":
        assert (report["written"], report["skipped"]) == (15, 15)


def test_reconciles_checks_updates_too_and_refuses_negative_counts():
    update = Report(operation="update", model="m", matched=100, written=99, rejected=1)
    assert update.reconciles
    assert not Report(operation="update", model="m", matched=100, written=99).reconciles
    assert not Report(operation="update", model="m", matched=10, written=11).reconciles
    assert Report(operation="update", model="m", matched=10, written=5, not_attempted=5).reconciles
    load = Report(operation="upsert", model="m", input_rows=10, written=10, created=7, updated=4,
                  unchanged=-1)  # fmt: skip
    assert not load.reconciles  # it adds up, but with a negative count
    assert not Report(operation="create", model="m", input_rows=10, created=10).reconciles
    assert Report(operation="create", model="m", input_rows=10, created=10, written=10).reconciles
    assert not Report(operation="create", model="m", input_rows=10, created=10, written=10,
                      rejected=1, max_rejects=5).reconciles  # fmt: skip


def test_the_suite_checks_every_report_it_builds():
    """The conftest fixture wraps the runner's build_report: a miscount cannot pass."""
    miscounted = ChunkResult(index=0, label="pk (0, 10]", rows=10, matched=10, written=5)
    with pytest.raises(AssertionError, match="does not add up"):
        bulkpar.engine.runner.build_report(
            [miscounted], operation="update", model="m", seconds=1.0, matched=10
        )


def test_a_dry_run_says_what_it_would_write(people, tmp_path, run_cli):
    people(30)
    result = run_cli("update", *PERSON, "--set", "nickname=d", "--workers", "2", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "DRY RUN, nothing was written" in result.stdout
    line_of(result.stdout, r"rows that would be written\s+30")
    assert not re.search(r"^\s*rows written", result.stdout, re.M)
    line_of(result.stdout, r"rows matched 30 = would write 30 ✓")
    assert not Person.objects.filter(nickname="d").exists()

    path = person_csv(tmp_path / "p.csv", 5)
    Person.objects.all().delete()
    load = run_cli("create", *PERSON, "--input", path, "--workers", "2", "--dry-run")
    assert load.returncode == 0, load.stderr
    line_of(load.stdout, r"rows that would be created\s+5")
    line_of(load.stdout, r"records read 5 = would create 5 ✓")
    assert Person.objects.count() == 0


# -- failed chunks: each distinct error once ------------------------------------------------


def test_chunks_failing_with_one_error_print_it_once(people, run_cli):
    people(40)  # pks 5, 15, 25 and 35 raise: every chunk of 10 fails
    command = ("update", *PERSON, "--func", f"{T}:fail_on_pk_ending_in_5", "--chunk", "10",
               "--workers", "2", "--on-error", "skip")  # fmt: skip
    result = run_cli(*command)
    assert result.returncode == 1
    assert result.stdout.count("Traceback (most recent call last)") == 1
    assert result.stdout.count("ValueError: pk ends in 5") == 2  # the message and its traceback
    line_of(result.stdout, r"chunk 0 \(.*\) failed: ValueError: pk ends in 5 \(row pk=5\)")
    line_of(
        result.stdout, r"and 3 more chunks failed with the same error: 1 \(.*\), 2 \(.*\), 3 .*"
    )
    assert "Error: 4 chunk(s) failed and were rolled back (40 rows)" in result.stderr

    report = json.loads(run_cli(*command, "--json").stdout)
    assert [e["chunk"] for e in report["errors"]] == [0, 1, 2, 3]
    assert [e["row"] for e in report["errors"]] == [5, 15, 25, 35]
    assert all("Traceback" in e["traceback"] for e in report["errors"])
    assert Person.objects.filter(score=F("id")).count() == 0
