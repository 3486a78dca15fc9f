"""The input's order is the truth: the same key in several chunks ends as a serial loop would.

Records are routed to partitions by a hash of their (converted) unique key and
a partition's chunks run one at a time, in input order; these tests write each
key several times, spread over many chunks, with two process workers.
"""

from __future__ import annotations

import csv
import random
import threading
import time

import pytest
from django.db import connection
from testproject.testapp.models import Event, Person, Signalled

import bulkpar
from bulkpar.engine import worker
from bulkpar.inputs.conversion import plan_columns
from bulkpar.inputs.partitions import KeyPartitioner
from bulkpar.inputs.sources import Record
from bulkpar.operations.load import plan_batches


def _fold(text: str) -> str:
    """What MariaDB's default collation (utf8mb4_general_ci, PAD SPACE) compares."""
    return text.casefold().rstrip() if connection.vendor == "mysql" else text


def test_upsert_last_record_in_the_input_wins_across_chunks(db, tmp_path):
    rng = random.Random(7)
    keys = [(1 + k % 2, f"e{k}") for k in range(3000)]
    old = keys[::3]  # a third of the keys exist before the run
    Event.objects.bulk_create(Event(organization_id=o, external_id=x, name="old") for o, x in old)
    records = [key for key in keys for _ in range(rng.choice((3, 4)))]
    rng.shuffle(records)
    path = tmp_path / "events.csv"
    expected: dict[tuple[int, str], str] = {}
    with open(path, "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["organization_id", "external_id", "name"])
        for line, (org, external_id) in enumerate(records):
            # "01" and "1" are the same IntegerField value: the same key, the same partition
            out.writerow([f"0{org}" if line % 5 == 0 else str(org), external_id, f"v{line}"])
            expected[(org, external_id)] = f"v{line}"

    report = bulkpar.upsert(
        Event, str(path), unique="organization_id,external_id", chunk=100, workers=2
    )

    assert report.ok and report.reconciles, report
    rows = Event.objects.values_list("organization_id", "external_id", "name")
    names = {(org, external_id): name for org, external_id, name in rows}
    wrong = [k for k in keys if names[k] != expected[k]]
    assert not wrong, f"{len(wrong)} of {len(keys)} keys hold an earlier record's value"
    assert report.input_rows == len(records)
    assert report.created == len(keys) - len(old)
    assert report.unchanged == 0  # every record carries a value its key never held
    assert report.updated + report.duplicates == len(records) - report.created
    assert report.updated >= len(old)  # each pre-existing key is updated at least once


def test_upsert_case_and_padding_variants_of_a_key(db):
    """On MariaDB 'Key', 'key' and 'key ' are one row: they meet in order there too."""
    rng = random.Random(3)
    spellings = ["k{}", "K{}", "k{} "]
    records = [(k, rng.choice(spellings).format(k)) for k in range(400) for _ in range(4)]
    rng.shuffle(records)
    rows = [
        {"organization_id": 1, "external_id": spelled, "name": f"v{line}"}
        for line, (_, spelled) in enumerate(records)
    ]
    expected = {_fold(row["external_id"]): row["name"] for row in rows}

    report = bulkpar.upsert(Event, rows, unique="organization_id,external_id", chunk=50, workers=2)

    assert report.ok and report.reconciles, report
    stored = {_fold(x): n for x, n in Event.objects.values_list("external_id", "name")}
    assert stored == expected
    assert report.created == len(expected)


def test_ignore_conflicts_first_record_wins_across_chunks(db):
    rng = random.Random(11)
    usernames = [f"u{k}" for k in range(2000)]
    Person.objects.bulk_create(Person(username=u, score=-1) for u in usernames[:200])
    records = [u for u in usernames for _ in range(3)]
    rng.shuffle(records)
    rows = [{"username": u, "score": line} for line, u in enumerate(records)]
    expected = {u: -1 for u in usernames[:200]}
    for row in rows:
        expected.setdefault(row["username"], row["score"])

    report = bulkpar.create(Person, rows, ignore_conflicts=True, chunk=100, workers=2)

    assert report.ok and report.reconciles, report
    assert dict(Person.objects.values_list("username", "score")) == expected
    assert (report.created, report.skipped) == (1800, len(rows) - 1800)


def test_save_match_last_record_wins_across_chunks(db):
    rng = random.Random(5)
    records = [f"s{k}" for k in range(300) for _ in range(3)]
    rng.shuffle(records)
    rows = [{"name": name, "value": line} for line, name in enumerate(records)]
    expected = {row["name"]: row["value"] for row in rows}

    report = bulkpar.save(Signalled, rows, match="name", chunk=20, workers=2)

    assert report.ok, report
    assert dict(Signalled.objects.values_list("name", "value")) == expected
    assert (report.created, report.updated) == (300, len(rows) - 300)


# -- the partitioner ---------------------------------------------------------


def _partitioner(vendor: str, partitions: int = 8) -> KeyPartitioner:
    columns = plan_columns(Event, ["organization_id", "external_id", "name"])
    return KeyPartitioner(
        Event, columns, ("organization_id", "external_id"), partitions, vendor=vendor
    )


def test_partitioner_routes_equal_keys_together_and_is_stable(db):
    partition = _partitioner("postgresql")

    def of(org: object, external_id: str) -> int:
        return partition(Record(2, {"organization_id": org, "external_id": external_id}))

    assert of("1", "a") == of("01", "a") == of(1, "a") == of(" 1", "a")
    assert len({of(1, f"e{k}") for k in range(200)}) == 8  # spread over every partition
    # a stable hash (not Python's salted hash()): the same input plans the same chunks
    # in every process, which checkpoint resume relies on
    assert [of(1, f"e{k}") for k in range(6)] == [3, 5, 7, 1, 2, 4]
    folded = _partitioner("mysql")
    spellings = ("Ab", "ab", "aB  ", "AB", "áb")
    same = {folded(Record(2, {"organization_id": 1, "external_id": s})) for s in spellings}
    assert len(same) == 1
    # a key that does not convert goes somewhere (the worker rejects it)
    assert 0 <= partition(Record(2, {"organization_id": "x", "external_id": "a"})) < 8


def test_partitioned_plan_is_deterministic_and_keeps_input_order_per_key(db):
    rng = random.Random(1)
    records = [
        Record(line, {"organization_id": 1, "external_id": f"e{rng.randrange(50)}"})
        for line in range(1000)
    ]

    def plan() -> list[tuple[int, int | None, tuple[int, ...]]]:
        chunks = plan_batches(iter(records), 30, partition=_partitioner("sqlite", 4))
        return [(c.index, c.partition, tuple(r.line for r in c.records)) for c in chunks]

    first = plan()
    assert first == plan()
    assert [index for index, _, _ in first] == list(range(len(first)))
    assert sorted(line for *_, lines in first for line in lines) == list(range(1000))
    assert {p for _, p, _ in first} == {0, 1, 2, 3}
    for partition in range(4):
        lines = [line for _, p, ls in first if p == partition for line in ls]
        assert lines == sorted(lines)  # a partition's chunks hold its records in input order


def test_a_partition_never_has_two_chunks_in_flight(db, monkeypatch):
    """Thread executor, 4 workers: record which partitions are running when a chunk starts."""
    run_chunk = worker.run_chunk
    lock = threading.Lock()
    running: set[int] = set()
    started: list[tuple[int, int]] = []
    clashes: list[int] = []
    concurrent = [0]

    def watched(job, chunk, options):
        with lock:
            if chunk.partition in running:
                clashes.append(chunk.index)
            running.add(chunk.partition)
            started.append((chunk.partition, chunk.index))
            concurrent[0] = max(concurrent[0], len(running))
        try:
            time.sleep(0.005)  # widen the window a wrong scheduler would need
            return run_chunk(job, chunk, options)
        finally:
            with lock:
                running.discard(chunk.partition)

    monkeypatch.setattr(worker, "run_chunk", watched)
    rows = [{"username": f"u{k % 300}", "score": k} for k in range(3000)]
    report = bulkpar.upsert(Person, rows, unique="username", chunk=20, workers=4, executor="thread")
    assert report.ok and report.reconciles
    assert not clashes, f"chunks {clashes} started while their partition had one in flight"
    for partition in {p for p, _ in started}:
        indexes = [i for p, i in started if p == partition]
        assert indexes == sorted(indexes)
    assert concurrent[0] > 1  # the pool did run partitions side by side
    assert dict(Person.objects.values_list("username", "score")) == {
        f"u{k}": 2700 + k for k in range(300)
    }


# -- counts that a concurrent writer made inexact ------------------------------


def test_counts_stay_non_negative_and_say_when_another_writer_interfered(db, monkeypatch):
    if connection.vendor != "mysql":
        pytest.skip(
            "only MariaDB/MySQL count existing keys where another writer can slip in: "
            "PostgreSQL counts with RETURNING (xmax = 0), SQLite inside its only write lock"
        )
    from bulkpar.writers import values

    Person.objects.bulk_create(Person(username=f"u{k}", score=0) for k in range(30))
    # another writer inserted every key between the chunk's count and its upsert
    monkeypatch.setattr(values._InsertStatement, "_count_existing", lambda *a, **k: 0)
    rows = [{"username": f"u{k}", "score": 1 if k < 20 else 0} for k in range(30)]
    report = bulkpar.upsert(Person, rows, unique="username", update="score", executor="serial")
    assert report.ok and report.reconciles
    assert min(report.created, report.updated, report.unchanged) >= 0
    assert report.updated == 20  # from the statement's own row count: exact
    assert any("inexact" in note for note in report.notes), report.notes
    assert report.inexact and report.to_dict()["inexact"]
    assert dict(Person.objects.values_list("username", "score")) == {
        f"u{k}": 1 if k < 20 else 0 for k in range(30)
    }
