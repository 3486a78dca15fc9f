"""``bulkpar save``: save() per object in parallel; signals fire exactly once per object."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from testproject.testapp.models import SaveLog, Signalled

import bulkpar
from bulkpar.errors import WorkerSetupError

T = "testproject.testapp.transforms"
SETTINGS = ("--settings", "testproject.settings")


def records(n, prefix="s"):
    return [{"name": f"{prefix}{i}", "value": i} for i in range(n)]


def signal_log():
    """post_save calls per object pk, as (pk, created) -> count."""
    rows = SaveLog.objects.exclude(model_name="setup").values_list("object_pk", "created")
    return Counter((int(pk), created) for pk, created in rows)


def test_input_rows_saved_with_one_signal_each(db):
    report = bulkpar.save(Signalled, records(60), chunk=7, workers=2)
    assert report.ok and (report.written, report.created, report.updated) == (60, 60, 0)
    assert report.input_rows == 60 and report.reconciles
    pks = list(Signalled.objects.values_list("pk", flat=True))
    assert signal_log() == Counter({(pk, True): 1 for pk in pks})
    assert all(s.derived == f"{s.name}:{s.value}" for s in Signalled.objects.all())


def test_match_updates_existing_objects_with_the_right_created_flag(db):
    for i in range(10):
        Signalled.objects.create(name=f"s{i}", value=-1)
    SaveLog.objects.all().delete()
    report = bulkpar.save(Signalled, records(25), match="name", chunk=6, workers=2)
    assert (report.created, report.updated) == (15, 10)
    by_name = dict(Signalled.objects.values_list("name", "pk"))
    expected = {(by_name[f"s{i}"], i >= 10): 1 for i in range(25)}
    assert signal_log() == Counter(expected)
    assert dict(Signalled.objects.values_list("name", "value")) == {f"s{i}": i for i in range(25)}
    assert Signalled.objects.filter(derived="s3:3").exists()


def test_queryset_mode_with_func_derives_fields_through_save(db, run_cli):
    for i in range(30):
        Signalled.objects.create(name=f"q{i}", value=i)
    SaveLog.objects.all().delete()
    result = run_cli(
        "save",
        *SETTINGS,
        "--model",
        "testapp.Signalled",
        "--filter",
        "value__gte=10",
        "--func",
        f"{T}:bump_value",
        "--chunk",
        "4",
        "--workers",
        "2",
        "--json",
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["saved"], report["updated"], report["created"]) == (20, 20, 0)
    for obj in Signalled.objects.all():
        original = int(obj.name[1:])
        expected = original + 1 if original >= 10 else original
        assert obj.value == expected and obj.derived == f"{obj.name}:{expected}"
    selected = Signalled.objects.filter(value__gte=11).values_list("pk", flat=True)
    assert signal_log() == Counter({(pk, False): 1 for pk in selected})


def test_setup_runs_once_per_worker(db):
    report = bulkpar.save(Signalled, records(20), setup=f"{T}:record_setup", chunk=5, workers=2)
    assert report.ok
    pids = list(SaveLog.objects.filter(model_name="setup").values_list("object_pk", flat=True))
    assert len(pids) == len(set(pids)) == 2


@pytest.mark.parametrize("executor", ["auto", "process"])
def test_failing_setup_stops_before_any_write(db, run_cli, executor):
    # auto runs these small jobs in this process (the set-up too); process starts workers
    with pytest.raises(WorkerSetupError, match="cache server unreachable"):
        bulkpar.save(
            Signalled, records(5), setup=f"{T}:failing_setup", workers=2, executor=executor
        )
    result = run_cli(
        "save",
        *SETTINGS,
        "--model",
        "testapp.Signalled",
        "--setup",
        f"{T}:failing_setup",
        "--filter",
        "value__gte=0",
        "--executor",
        executor,
    )
    assert result.returncode == 1 and "cache server unreachable" in result.stderr
    assert Signalled.objects.count() == 0


@pytest.mark.parametrize("transaction", ["chunk", "object"])
def test_a_raising_signal_rejects_only_its_object(db, tmp_path, run_cli, transaction):
    rows = records(23)
    rows[13]["name"] = "boom13"
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    rejects = tmp_path / "rejects.jsonl"
    result = run_cli(
        "save",
        *SETTINGS,
        "--model",
        "testapp.Signalled",
        "--input",
        path,
        "--transaction",
        transaction,
        "--chunk",
        "8",
        "--workers",
        "2",
        "--rejects",
        rejects,
        "--json",
    )
    assert result.returncode == 1  # a rejected object is not a success unless --max-rejects
    expected = f"Error: 1 object rejected; see {rejects}, or allow them with --max-rejects 1"
    assert expected in result.stderr.splitlines()
    report = json.loads(result.stdout)
    assert (report["saved"], report["rejected"], report["input_rows"]) == (22, 1, 23)
    assert report["reconciles"]
    [reject] = [json.loads(line) for line in rejects.read_text().splitlines()]
    assert reject["line"] == 14 and reject["row"]["name"] == "boom13"
    assert "ValueError: boom on boom13" in reject["error"] and "Traceback" in reject["traceback"]
    assert not Signalled.objects.filter(name="boom13").exists()
    pks = list(Signalled.objects.values_list("pk", flat=True))
    assert len(pks) == 22 and signal_log() == Counter({(pk, True): 1 for pk in pks})


def test_help_says_signals_cannot_be_turned_off(run_cli):
    result = run_cli("save", "-h")
    assert "Signals cannot be" in result.stdout and "bulkpar create" in result.stdout
