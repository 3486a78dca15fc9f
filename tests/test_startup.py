"""Start-up: a small job runs without a pool; a bigger one starts its pool while the
runner counts and plans, and a worker that cannot start still stops it before any write."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
from django.db.models import F
from testproject.testapp.models import Person, SaveLog, Signalled

import bulkpar
from bulkpar.engine import executors
from bulkpar.engine.contracts import ChunkMark, RunOptions
from bulkpar.engine.runner import SMALL_JOB_NOTE, Plan, _Scheduler
from bulkpar.errors import InputError, WorkerSetupError

T = "testproject.testapp.transforms"
MODEL = ("--settings", "testproject.settings", "--model", "testapp.Person")
SMALL = "serial (small job)"


@pytest.fixture
def pools(monkeypatch):
    """The process pools the runs in this process start (each as its PoolStart)."""
    started = []
    original = executors.PoolStart.__init__

    def spy(self, backend, options, target, workers):
        original(self, backend, options, target, workers)
        if not backend.in_process:
            started.append(self)

    monkeypatch.setattr(executors.PoolStart, "__init__", spy)
    return started


def table_state():
    """What the tables hold, without keys and timestamps (they differ from run to run)."""
    people = Person.objects.order_by("username")
    signalled = Signalled.objects.order_by("name")
    return (
        list(people.values_list("username", "email", "score", "active", "nickname")),
        list(signalled.values_list("name", "value", "derived")),
    )


@pytest.mark.parametrize(("rows", "chunks"), [(10, 1), (20, 1), (35, 2), (40, 2)])
def test_a_job_of_one_or_two_chunks_starts_no_pool(people, pools, rows, chunks):
    people(rows)
    report = bulkpar.update(Person, func=f"{T}:bump_score", chunk=20, workers=2)
    assert pools == []
    assert report.ok and report.chunks == chunks and report.written == rows
    assert (report.executor, report.workers, report.start_method) == (SMALL, 1, None)
    assert SMALL_JOB_NOTE.format(chunks=2) in report.notes
    assert Person.objects.filter(score=F("id")).count() == rows


def test_a_job_of_three_chunks_starts_its_pool_while_it_counts(people, pools):
    people(41)
    report = bulkpar.update(Person, set={"nickname": "x"}, chunk=20, workers=2)
    [pool] = pools
    # forkserver (the default) may start in a thread: the rows are counted meanwhile
    assert pool._thread is not None
    assert report.ok and report.chunks == 3 and report.matched == 41
    assert (report.executor, report.workers, report.start_method) == ("process", 2, "forkserver")
    assert not any("small job" in note for note in report.notes)


def test_fork_starts_its_pool_in_this_thread(people, pools):
    # fork copies the parent as it is: no other thread may be counting on its connection
    people(41)
    report = bulkpar.update(Person, set={"nickname": "x"}, chunk=20, workers=2, start_method="fork")
    [pool] = pools
    assert pool._thread is None and report.ok and report.start_method == "fork"


def test_executor_process_always_starts_a_pool(people, pools):
    people(5)
    report = bulkpar.update(Person, set={"nickname": "x"}, chunk=20, workers=2, executor="process")
    assert len(pools) == 1 and report.executor == "process" and report.workers == 2
    assert Person.objects.filter(nickname="x").count() == 5


def test_records_count_toward_the_small_job_not_partitions(db, pools):
    # an upsert routes records to 2 x workers partitions: 30 records make four
    # chunks of a few records, but only one chunk's worth of rows
    rows = [{"username": f"u{i}", "score": i} for i in range(30)]
    report = bulkpar.upsert(Person, rows, unique="username", chunk=20, workers=2)
    assert pools == [] and report.executor == SMALL and report.chunks == 4
    assert report.created == 30 and Person.objects.count() == 30


@pytest.mark.parametrize("operation", ["set", "func", "create", "upsert", "save", "delete"])
def test_a_small_job_writes_and_counts_what_a_pool_does(people, operation):
    def run(executor):
        Person.objects.all().delete()
        Signalled.objects.all().delete()
        people(30)
        Person.objects.filter(score__lt=10).update(email="already@example.com")
        records = [{"username": f"user{i}", "score": 100 + i} for i in range(20, 45)]
        options = {"chunk": 20, "workers": 2, "executor": executor}
        if operation == "set":
            return bulkpar.update(Person, set={"email": "already@example.com"}, **options)
        if operation == "func":
            return bulkpar.update(Person, func=f"{T}:lowercase_email", **options)
        if operation == "create":
            return bulkpar.create(Person, records, ignore_conflicts=True, **options)
        if operation == "upsert":
            return bulkpar.upsert(Person, records, unique="username", **options)
        if operation == "save":
            return bulkpar.save(Signalled, [{"name": f"s{i}"} for i in range(25)], **options)
        return bulkpar.delete(Person.objects.filter(active=True), **options)

    keys = ("matched", "written", "unchanged", "skipped", "created", "updated", "rejected",
            "deleted", "chunks", "input_rows")  # fmt: skip
    pooled = run("process")
    state = table_state()
    small = run("auto")
    assert (pooled.executor, small.executor) == ("process", SMALL)
    assert {k: getattr(small, k) for k in keys} == {k: getattr(pooled, k) for k in keys}
    assert small.ok and small.reconciles
    assert table_state() == state


@pytest.mark.parametrize("rows", [5, 60])
def test_a_failing_setup_raises_before_any_write(db, rows):
    # 5 records: one chunk, the set-up runs in this process; 60: the pool starts
    # in a thread while the rows are counted, and its set-up error still comes first
    records = [{"name": f"s{i}"} for i in range(rows)]
    with pytest.raises(WorkerSetupError, match="cache server unreachable"):
        bulkpar.save(Signalled, records, setup=f"{T}:failing_setup", chunk=20, workers=2)
    assert Signalled.objects.count() == 0


def test_a_pool_that_cannot_start_fails_before_any_write(people, monkeypatch, pools):
    # workers that cannot load the project (here: a settings module they cannot import)
    people(60)
    monkeypatch.setattr(
        executors, "_initargs", lambda target: ("no_such_settings_module", (), "default")
    )
    with pytest.raises(WorkerSetupError, match="no_such_settings_module"):
        bulkpar.update(Person, set={"nickname": "x"}, chunk=20, workers=2)
    assert len(pools) == 1 and not Person.objects.filter(nickname="x").exists()


def test_a_lambda_is_refused_whatever_the_size_of_the_job(people):
    # a small job would run it here, but the same call on a bigger table needs workers
    people(3)
    with pytest.raises(bulkpar.BulkparError, match="cannot be sent to worker processes"):
        bulkpar.update(Person, func=lambda obj: None, chunk=20)
    report = bulkpar.update(Person, func=lambda obj: None, chunk=20, executor="serial")
    assert report.ok and report.executor == "serial"


@pytest.mark.parametrize("executor", ["auto", "process"])
def test_bad_input_in_the_third_chunk_stops_after_the_first_two(db, tmp_path, executor):
    # auto reads three chunks ahead before it starts anything: the error waits its turn
    path = tmp_path / "log.csv"
    lines = ["model_name,object_pk,created", *(f"m,{i},1" for i in range(4)), "m,4,1,x", "m,5,1"]
    path.write_text("\n".join(lines) + "\n")
    report = bulkpar.create(SaveLog, str(path), chunk=2, workers=2, executor=executor)
    assert "line 6: 4 fields where the header has 3" in (report.stopped or "")
    assert report.created == 4 and SaveLog.objects.count() == 4
    assert report.executor == (SMALL if executor == "auto" else "process")


def test_sqlite_settings_of_a_small_job_do_not_outlive_it(people, backend):
    if backend != "sqlite":
        pytest.skip("only SQLite connections are tuned (BEGIN IMMEDIATE, busy_timeout)")
    from django.db import connection

    people(3)
    connection.ensure_connection()
    before = connection.connection.execute("PRAGMA busy_timeout").fetchone()[0]
    # Django >= 5.1 has transaction_mode; 4.2 gets BEGIN IMMEDIATE by a patched method
    names = ("transaction_mode", "_start_transaction_under_autocommit")
    tuned = [connection.__dict__.get(name) for name in names]
    mode = getattr(connection, "transaction_mode", None)
    report = bulkpar.update(Person, func=f"{T}:bump_score", chunk=20)
    assert report.executor == SMALL
    assert getattr(connection, "transaction_mode", None) == mode
    assert [connection.__dict__.get(name) for name in names] == tuned
    assert connection.connection.execute("PRAGMA busy_timeout").fetchone()[0] == before


def test_interrupting_a_small_job_lets_its_chunk_commit(people, run_cli, markers):
    people(600)
    result = run_cli("update", *MODEL, "--func", f"{T}:bump_and_interrupt", "--chunk", "1000",
                     "--workers", "2", "--json")  # fmt: skip
    assert result.returncode == 130, result.stderr
    report = json.loads(result.stdout)
    assert report["executor"] == SMALL and report["interrupted"]
    assert "SIGINT received; letting the chunks in flight finish" in result.stderr
    assert report["written"] == 600 == Person.objects.filter(score=F("id")).count()


def test_a_second_interrupt_rolls_a_small_job_back(people, run_cli, markers):
    people(600)
    result = run_cli("update", *MODEL, "--func", f"{T}:bump_and_interrupt_twice", "--chunk",
                     "1000", "--workers", "2", "--json")  # fmt: skip
    assert result.returncode == 130, result.stderr
    report = json.loads(result.stdout)
    assert report["executor"] == SMALL and "stopped at once" in report["stopped"]
    assert report["written"] == 0 and not Person.objects.filter(score=F("id")).exists()


# -- the decision, on a scripted plan ----------------------------------------------------


@dataclass(frozen=True)
class Part:
    """A chunk of a scripted plan: ``size`` records (0: a key range), cut at ``position``."""

    index: int
    size: int = 0
    position: int | None = None
    partition: int | None = None

    @property
    def label(self) -> str:
        return f"part {self.index}"

    def mark(self) -> ChunkMark:
        return ChunkMark()


def plan_ahead(parts, *, total=None, unit="rows", fail_at=None):
    """Whether the scripted plan is small (chunk 10), how many parts were read, and the runner."""
    read = []

    def chunks():
        for part in parts:
            if part.index == fail_at:
                raise InputError("line 99: bad record")
            read.append(part)
            yield part

    plan = Plan(chunks=chunks(), total=total, unit=unit, chunk=10)
    scheduler = _Scheduler(None, plan, RunOptions(workers=2), None, None)  # type: ignore[arg-type]
    return scheduler._plan_ends_within(2), len(read), scheduler


@pytest.mark.parametrize(
    ("sizes", "small", "read"),
    [
        ([0], True, 1),  # one key range
        ([0, 0], True, 2),
        ([0, 0, 0, 0], False, 3),  # a third range: the plan stops being read there
        ([10, 10], True, 2),
        ([10, 10, 1, 10], False, 3),
        ([5, 5, 5, 5], True, 4),  # four partitions' partial chunks: twenty records
        ([], True, 0),
    ],
)
def test_a_plan_is_small_when_it_ends_within_two_chunks_of_rows(sizes, small, read):
    parts = [Part(i, size) for i, size in enumerate(sizes)]
    assert plan_ahead(parts)[:2] == (small, read)


def test_the_bytes_read_of_a_file_tell_early_that_it_is_big():
    # ten records in the first 50 of 1,000 bytes: some 200 records, more than 2 x 2 chunks
    parts = [Part(i, 10, position=50 * (i + 1)) for i in range(20)]
    assert plan_ahead(parts, total=1000, unit="bytes")[:2] == (False, 1)
    # the same first chunk in a 120-byte file: keep reading to know
    parts = [Part(0, 10, position=50), Part(1, 10, position=100), Part(2, 4, position=120)]
    assert plan_ahead(parts, total=120, unit="bytes")[:2] == (False, 3)


def test_an_error_in_the_plan_waits_for_the_chunks_before_it():
    small, read, scheduler = plan_ahead([Part(0, 10), Part(1, 10), Part(2, 10)], fail_at=1)
    assert (small, read, len(scheduler.ahead)) == (True, 1, 1)
    assert scheduler._next_chunk() == Part(0, 10) and scheduler.stopped is None
    assert scheduler._next_chunk() is None and scheduler.stopped == "line 99: bad record"
