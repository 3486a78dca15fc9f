"""``bulkpar delete``: chunked deletes that behave as ``queryset.delete()``, archived.

Each scenario builds the same data twice: once deleted by the ORM (the
reference), once by bulkpar with two worker processes; every table must end
the same, with the same per-model counts and each post_delete seen once.
"""

from __future__ import annotations

import datetime
import decimal
import gzip
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from conftest import _empty_testapp_tables
from testproject.testapp.models import Account, DeleteLog, Entry, Guard, Note, Tenant

import bulkpar
from bulkpar.errors import UsageError

SETTINGS = ("--settings", "testproject.settings")
MODELS = (Tenant, Account, Entry, Note, Guard)
AT = datetime.datetime(2024, 1, 2, 3, 4, 5, 678901, tzinfo=datetime.timezone.utc)


def build(tenants: int = 6, guarded: tuple[int, ...] = ()) -> None:
    """Tenants ``old0…`` (even) and ``keep1…`` (odd), two accounts each, entries and notes.

    ``guarded``: tenant numbers whose first account a Guard protects.
    """
    for t in range(tenants):
        tenant = Tenant.objects.create(name=f"old{t}" if t % 2 == 0 else f"keep{t}")
        for a in range(2):
            account = Account.objects.create(
                tenant=tenant,
                name=f"acct{t}-{a}",
                balance=decimal.Decimal(f"{t}{a}.25"),
                opened=AT if a else None,
                extra={"t": t, "tags": ["x", a]} if a else None,
            )
            Entry.objects.bulk_create(Entry(account=account, amount=t * 10 + e) for e in range(3))
            Note.objects.create(account=account, text=f"note{t}-{a}")
            if a == 0 and t in guarded:
                Guard.objects.create(account=account, reason=f"hold {t}")
    Guard.objects.create(account=None, reason="unattached")


def snapshot() -> dict[str, list[dict[str, Any]]]:
    """Every row of the delete models, by attname, in pk order."""
    tables = {
        model._meta.label: [
            dict(row)
            for row in model.objects.order_by("pk").values(
                *[f.attname for f in model._meta.concrete_fields]
            )
        ]
        for model in MODELS
    }
    tables["log"] = sorted(DeleteLog.objects.values_list("model_name", "object_pk"))
    return tables


def old_tenants() -> Any:
    return Tenant.objects.filter(name__startswith="old")


def reference(
    tenants: int = 6, ours: tuple[int, ...] = ()
) -> tuple[dict[str, int], dict[str, Any], dict[str, Any]]:
    """``queryset.delete()`` on fresh data: its counts, and the tables before and after.

    Then the same data is built again for bulkpar, with Guards on the tenants ``ours``.
    """
    _empty_testapp_tables()
    build(tenants)
    before = snapshot()
    _total, counts = old_tenants().delete()
    after = snapshot()
    _empty_testapp_tables()
    build(tenants, guarded=ours)
    return counts, before, after


def read_archive(path: Path) -> list[dict[str, Any]]:
    opener: Any = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as file:
        return [json.loads(line) for line in file]


def removed(before: dict[str, Any], after: dict[str, Any]) -> set[tuple[str, Any]]:
    """``(model, pk)`` of the rows in ``before`` and not in ``after``."""
    gone = set()
    for label in (m._meta.label for m in MODELS):
        kept = {row["id"] for row in after[label]}
        gone |= {(label, row["id"]) for row in before[label] if row["id"] not in kept}
    return gone


def test_delete_is_queryset_delete_in_parallel_chunks_and_archives_what_it_deleted(db, tmp_path):
    counts, before, expected = reference()
    archive = tmp_path / "old.jsonl.gz"

    report = bulkpar.delete(old_tenants(), chunk=1, workers=2, archive=str(archive))

    assert report.ok, report.errors
    assert snapshot() == expected  # Notes kept with account NULL, Entries gone, keep* intact
    assert report.deleted == counts
    assert counts["testapp.Entry"] == 18  # the fast-deleted cascade is counted too
    assert report.matched == report.written == 3
    assert report.chunks == 3
    log = Counter(DeleteLog.objects.values_list("model_name", "object_pk"))
    assert set(log.values()) == {1}, log  # every post_delete exactly once
    assert sorted(log) == expected["log"]
    assert len(log) == 3 + 6

    rows = read_archive(archive)
    archived = [(row["_model"], row["id"]) for row in rows]
    assert sorted(archived) == sorted(removed(before, expected))  # each once, Notes not
    assert not (tmp_path / "old.jsonl.gz.parts").exists()


def test_the_archive_loads_back_with_create(db, tmp_path):
    _counts, before, _after = reference()
    archive = tmp_path / "old.jsonl"
    bulkpar.delete(old_tenants(), chunk=2, workers=2, archive=str(archive))

    rows = read_archive(archive)
    for model in (Tenant, Account, Entry):  # parents first: foreign keys are checked
        report = bulkpar.create(model, str(archive), workers=2, chunk=4)
        assert report.ok, report.errors
        assert report.created == sum(row["_model"] == model._meta.label for row in rows) > 0
        assert report.skipped == len(rows) - report.created  # the other models' rows
    restored = snapshot()
    for model in (Tenant, Account, Entry):
        assert restored[model._meta.label] == before[model._meta.label], model


def test_protect_fails_its_chunk_and_leaves_it_whole(db, tmp_path):
    build(guarded=(2,))
    archive = tmp_path / "old.jsonl"

    report = bulkpar.delete(
        old_tenants(), chunk=1, workers=2, on_error="skip", archive=str(archive)
    )

    assert not report.ok
    assert report.failed_chunks == 1 and report.chunks == 2
    guard = Guard.objects.get(reason="hold 2")
    error = report.errors[0].error
    assert "\n" not in error
    assert (
        f"cannot delete testapp.Account pk={guard.account_id}: protected by testapp.Guard "
        f"pk={guard.pk} (on_delete=PROTECT)" in error
    )
    # tenant old2's chunk is whole; old0 and old4 are gone
    assert list(old_tenants().values_list("name", flat=True)) == ["old2"]
    tenant = Tenant.objects.get(name="old2")
    assert Account.objects.filter(tenant=tenant).count() == 2
    assert Entry.objects.filter(account__tenant=tenant).count() == 6
    assert Note.objects.filter(account__tenant=tenant).count() == 2
    assert report.deleted == {"testapp.Tenant": 2, "testapp.Account": 4, "testapp.Entry": 12}
    assert report.failed_rows == 1 and report.written == 2
    logged = set(DeleteLog.objects.values_list("model_name", "object_pk"))
    assert ("testapp.Tenant", str(tenant.pk)) not in logged
    archived = {(row["_model"], row["id"]) for row in read_archive(archive)}
    assert ("testapp.Tenant", tenant.pk) not in archived
    assert len(archived) == 2 + 4 + 12


def test_dry_run_deletes_nothing_and_counts_the_cascades(db, tmp_path):
    counts, before, _ = reference()
    archive = tmp_path / "dry.jsonl"

    report = bulkpar.delete(old_tenants(), chunk=2, workers=2, dry_run=True, archive=str(archive))

    assert report.ok and report.dry_run
    assert report.deleted == counts
    assert report.written == 3
    assert snapshot() == before
    assert not archive.exists()


def test_a_resume_completes_exactly(db, tmp_path):
    counts, _before, expected = reference(tenants=10, ours=(4,))
    archive = tmp_path / "old.jsonl"
    journal = tmp_path / "purge.ck"

    first = bulkpar.delete(
        old_tenants(), chunk=1, workers=2, on_error="skip", archive=str(archive),
        checkpoint=str(journal),
    )  # fmt: skip
    assert first.failed_chunks == 1 and first.chunks == 4
    Guard.objects.filter(reason="hold 4").update(account=None)
    second = bulkpar.delete(
        old_tenants(), chunk=1, workers=2, archive=str(archive), checkpoint=str(journal)
    )

    assert second.ok, second.errors
    assert second.resumed_chunks == 4
    assert second.chunks == 1 and second.written == 1
    after = snapshot()
    assert after["log"] == expected["log"]  # each post_delete once over both runs
    total = Counter(first.deleted) + Counter(second.deleted)
    assert dict(total) == counts
    for model in (Tenant, Account, Entry, Note):
        assert after[model._meta.label] == expected[model._meta.label], model
    archived = Counter((row["_model"], row["id"]) for row in read_archive(archive))
    assert set(archived.values()) == {1}
    assert sum(archived.values()) == sum(counts.values())


def test_bisect_is_refused(db):
    with pytest.raises(UsageError, match="abort' or 'skip'"):
        bulkpar.delete(Tenant, on_error="bisect")


def test_cli_delete_with_archive_and_json_then_create_loads_it_back(db, tmp_path, run_cli):
    counts, before, expected = reference()
    archive = tmp_path / "old.jsonl.gz"

    result = run_cli(
        "delete", *SETTINGS, "--model", "testapp.Tenant", "--filter", "name__startswith=old",
        "--chunk", "2", "--workers", "2", "--archive", archive, "--json",
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["deleted"] == counts and data["written"] == 3 and data["ok"]
    assert snapshot() == expected
    assert len(read_archive(archive)) == sum(counts.values())

    loaded = run_cli("create", *SETTINGS, "--model", "testapp.Tenant", "--input", archive, "--json")
    assert loaded.returncode == 0, loaded.stderr
    data = json.loads(loaded.stdout)
    assert data["created"] == 3 and data["skipped"] == sum(counts.values()) - 3
    assert snapshot()["testapp.Tenant"] == before["testapp.Tenant"]

    refused = run_cli(
        "delete", *SETTINGS, "--model", "testapp.Tenant", "--on-error", "bisect", "--json"
    )
    assert refused.returncode == 2
    assert "abort' or 'skip'" in refused.stderr


def test_bench_delete_is_rolled_back(db, run_cli):
    build()
    before = snapshot()

    result = run_cli(
        "bench", "delete", *SETTINGS, "--model", "testapp.Tenant",
        "--filter", "name__startswith=old", "--workers", "1,2", "--chunk", "1",
        "--repeat", "1", "--json", timeout=600,
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert len(data["runs"]) == 3  # the serial reference, then 1 and 2 workers
    assert all(run["ok"] and run["rows"] == 3 for run in data["runs"])
    assert all(run["combo"]["method"] is None for run in data["runs"])
    assert snapshot() == before
