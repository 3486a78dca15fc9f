"""``bulkpar bench``: a grid of real runs, dry by default, with table, JSON and plot."""

from __future__ import annotations

import hashlib
import json
import struct
import sys

import pytest
from testproject.testapp.models import Event, Person

from bulkpar.cli.bench import BenchResult, plot
from bulkpar.errors import BulkparError

T = "testproject.testapp.transforms"
SETTINGS = ("--settings", "testproject.settings")


def checksum(model):
    rows = model.objects.order_by("pk").values_list()
    return hashlib.sha256(repr(list(rows)).encode()).hexdigest()


def test_update_grid_is_dry_and_complete(people, run_cli, tmp_path):
    people(600)
    before = checksum(Person)
    plot_path = tmp_path / "bench.png"
    result = run_cli("bench", "update", *SETTINGS, "--model", "testapp.Person", "--func",
                     f"{T}:bump_score", "--workers", "1,2", "--chunk", "100,300", "--repeat",
                     "2", "--json", "--plot", plot_path, timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    combos = {json.dumps(run["combo"], sort_keys=True) for run in data["runs"]}
    # the reference (serial, django) + 2 workers × 2 chunk sizes with the default method
    assert len(combos) == 5 and len(data["runs"]) == 5 * 2
    reference = [row for row in data["summary"] if row["reference"]]
    assert len(reference) == 1 and reference[0]["combo"]["executor"] == "serial"
    assert reference[0]["combo"]["method"] == "django" and reference[0]["speedup"] == 1.0
    assert all(run["ok"] and run["rows"] == 600 for run in data["runs"])
    assert data["recommendation"].startswith("use --workers")
    assert data["machine"]["cpus"] >= 1 and data["machine"]["database"]
    assert checksum(Person) == before  # every run was rolled back
    header = plot_path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", header[16:24])
    assert (width, height) == (800, 500)


def test_upsert_grid_with_a_table(db, run_cli, tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text("".join(
        json.dumps({"organization_id": 1, "external_id": f"e{i}", "name": "n"}) + "\n"
        for i in range(200)
    ))  # fmt: skip
    result = run_cli("bench", "upsert", *SETTINGS, "--model", "testapp.Event", "--input", path,
                     "--unique", "organization_id,external_id", "--workers", "1,2",
                     "--repeat", "1")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "speed-up" in result.stdout and "(reference)" in result.stdout
    assert "use --workers" in result.stdout
    assert Event.objects.count() == 0


def test_commit_needs_the_database_name(people, run_cli, backend):
    people(50)
    args = ("bench", "update", *SETTINGS, "--model", "testapp.Person", "--set", "score=0",
            "--workers", "1", "--repeat", "1", "--commit")  # fmt: skip
    refused = run_cli(*args)
    assert refused.returncode == 2 and "--confirm-database" in refused.stderr
    wrong = run_cli(*args, "--confirm-database", "production")
    assert wrong.returncode == 2 and "does not match" in wrong.stderr
    assert not Person.objects.filter(score=0).exclude(username="user0").exists()
    from django.db import connection

    name = str(connection.settings_dict["NAME"])
    committed = run_cli(*args, "--confirm-database", name)
    assert committed.returncode == 0, committed.stderr
    assert Person.objects.filter(score=0).count() == 50


def test_plot_without_matplotlib_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    result = BenchResult(operation="update", machine={})
    with pytest.raises(BulkparError, match=r"pip install 'bulkpar\[plot\]'"):
        plot(result, str(tmp_path / "x.png"))
