"""The runner: schedule a job's chunks on an executor and fold the results.

Invariants:

* **Bounded in-flight work.** At most ``workers * in_flight_per_worker``
  chunks are submitted and not yet finished; the plan is consumed lazily, so
  memory stays flat whatever the size of the job.
* **A partition's chunks run in input order.** A chunk with a ``partition``
  (records routed by their key, see :mod:`bulkpar.inputs.partitions`) starts only
  when no other chunk of its partition is in flight; until then it waits in a
  queue no longer than the in-flight limit. A key therefore meets itself in
  input order, and no two workers write the same row at once.
* **Descriptors, not data.** Workers receive the frozen job and a chunk
  descriptor (a primary-key range or a batch of plain values).
* **Failure stops scheduling.** With ``on_error="abort"`` a failed chunk stops
  new submissions; chunks already running finish and are counted, so the
  report reconciles with the database.
* **Interrupts are orderly.** The first Ctrl-C or SIGTERM stops scheduling and
  lets running chunks commit or roll back (and be recorded in the
  checkpoint); workers ignore both signals so a chunk is never cut in half. A
  second one ends the workers at once: their transactions roll back.
* **A dead worker is replaced.** When a worker process dies (OOM killer,
  ``kill -9``) the pool is rebuilt and the chunks that were in flight run
  again; a chunk whose runs keep killing workers fails after the retry limit.
* **Start-up overlaps.** The runner plans the first chunks before it starts
  anything: a job that ends within the backend's ``small_job_chunks`` runs in
  this process. Otherwise the pool starts (in a thread, where the start method
  allows) while this thread counts the rows; no chunk is sent before every
  worker has loaded the project, so a failed worker set-up still writes nothing.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Executor, Future, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import IO, Any, Generic, Protocol

from bulkpar.engine import worker
from bulkpar.engine.checkpoint import Checkpoint
from bulkpar.engine.contracts import ChunkT, ExecutorKind, Job, RunOptions, Target
from bulkpar.engine.executors import ExecutorBackend, PoolStart, backend
from bulkpar.errors import BulkparError, CheckpointMismatchError, UsageError
from bulkpar.report import ChunkResult, Report, build_report

#: The report's note when a chunk's created/updated/unchanged split could not be exact.
INEXACT_NOTE = (
    "counts inexact: another writer changed some of these keys during the run (or the input "
    "holds keys that the database's collation calls equal, such as 'a' and 'A '), so the split "
    "between created, updated and unchanged is an estimate; the data written is right"
)
#: The report's note when ``auto`` ran a small job in this process.
SMALL_JOB_NOTE = (
    "small job (at most {chunks} chunks): it ran in this process, which is quicker than "
    "starting worker processes; --executor process always starts them"
)


class ProgressSink(Protocol):
    """Receives progress as data; rendering is the caller's business (the library never prints)."""

    def start(self, total: int | None, description: str, unit: str) -> None:
        """The run begins: ``total`` rows (or bytes, by ``unit``), if known."""
        ...

    def advance(self, result: ChunkResult, position: int | None) -> None:
        """A chunk finished; ``position`` is the bytes read so far for ``unit="bytes"``."""
        ...

    def notice(self, message: str) -> None:
        """Something the user should know now, e.g. that an interrupt was received.

        May be called from a signal handler: render it, do not block.
        """
        ...

    def close(self) -> None:
        """The run ended (also after an error)."""
        ...


@dataclass
class Plan(Generic[ChunkT]):
    """The chunks to run, produced lazily, and how to measure progress through them.

    Attributes:
        chunks: chunk descriptors; consumed one at a time as workers free up.
        total: the progress total (rows, or bytes of an input file), if known.
        unit: ``"rows"`` or ``"bytes"``; with bytes a chunk's ``position``
            (bytes read when it was cut) drives the bar.
        matched: rows selected when the run was planned (updates).
        counts_input: True for loads: the report counts records read.
        checkpoint: the journal of committed chunks, if resuming is on.
        chunk: rows (records) per chunk, at most; a chunk of unknown
            ``size`` counts as this many when the runner decides whether the
            job is small. None: never small.
        count: counts the selected rows when the run starts, while the pool
            starts; the result is both ``total`` and ``matched``.
    """

    chunks: Iterable[ChunkT]
    total: int | None = None
    unit: str = "rows"
    matched: int | None = None
    counts_input: bool = False
    checkpoint: Checkpoint | None = None
    chunk: int | None = None
    count: Callable[[], int] | None = None


class RejectLog:
    """Appends rejected records to a JSON Lines file as chunks report them."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self._file: IO[str] | None = None
        if path is not None:
            try:
                self._file = open(path, "w", encoding="utf-8")  # noqa: SIM115
            except OSError as exc:
                raise UsageError(
                    f"cannot write the reject file {path!r}: {exc.strerror or exc}"
                ) from None

    def write(self, rejects: Iterable[Any]) -> None:
        if self._file is None:
            return
        for reject in rejects:
            record = {
                "line": reject.line,
                "row": reject.row,
                "field": reject.field,
                "error": reject.error,
            }
            if reject.traceback:
                record["traceback"] = reject.traceback
            self._file.write(json.dumps(record, default=str) + "\n")
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


def run(
    job: Job[ChunkT],
    plan: Plan[ChunkT],
    options: RunOptions,
    target: Target,
    *,
    progress: ProgressSink | None = None,
    notes: tuple[str, ...] = (),
) -> Report:
    """Run every chunk of ``plan`` for ``job`` and return the report.

    Args:
        job: the operation's frozen description, executed in workers.
        plan: the chunk descriptors (consumed lazily), progress totals and
            the checkpoint journal.
        options: workers, executor, start method, retries, error policy,
            reject file and limit, dry run.
        target: settings, import path and database alias for the workers.
        progress: optional sink for live progress.
        notes: remarks to carry into the report.

    Raises:
        WorkerSetupError: a worker could not load the project.
    """
    from django.db import connections

    vendor = connections[target.database].vendor
    started = time.perf_counter()
    scheduler = _Scheduler(job, plan, options, target, progress)
    try:
        with scheduler.signals():
            scheduler.start()
            startup = time.perf_counter() - started
            if progress is not None:
                progress.start(scheduler.total, f"{job.operation} {job.model}", plan.unit)
            scheduler.loop()
    finally:
        scheduler.close()
        if progress is not None:
            progress.close()
        if plan.checkpoint is not None:
            plan.checkpoint.close()
    workers = scheduler.workers
    inexact = any(r.inexact for r in scheduler.results)
    if inexact:
        notes = (*notes, INEXACT_NOTE)
    if scheduler.small_job:
        notes = (*notes, SMALL_JOB_NOTE.format(chunks=backend(options.executor).small_job_chunks))
    if vendor == "sqlite" and workers > 1:
        notes = (
            *notes,
            "SQLite allows one writer at a time: extra workers speed up reading and "
            "Python-side work, while writes are serialised.",
        )
    resumed = plan.checkpoint.done if plan.checkpoint is not None else []
    matched = scheduler.matched
    return build_report(
        scheduler.results,
        operation=job.operation,
        model=job.model,
        seconds=time.perf_counter() - started,
        matched=matched if matched is not None else scheduler.input_rows,
        input_rows=scheduler.input_rows if plan.counts_input else None,
        database=target.database,
        vendor=vendor,
        method=job.method,
        workers=workers,
        executor=scheduler.backend.label + (" (small job)" if scheduler.small_job else ""),
        start_method=scheduler.start_method,
        startup_seconds=round(startup, 6),
        interrupted=scheduler.signal_number is not None,
        signal=scheduler.signal_number,
        dry_run=options.dry_run,
        stopped=scheduler.stopped,
        workers_lost=scheduler.workers_lost,
        resumed_chunks=len(resumed),
        resumed_rows=sum(d.rows for d in resumed),
        checkpoint=plan.checkpoint.path if plan.checkpoint is not None else None,
        rejects_file=options.rejects,
        max_rejects=options.max_rejects,
        notes=notes,
        inexact=inexact,
    )


@dataclass
class _Scheduler(Generic[ChunkT]):
    """The state of one run: the executor, the chunks in flight, what came back."""

    job: Job[ChunkT]
    plan: Plan[ChunkT]
    options: RunOptions
    target: Target
    progress: ProgressSink | None
    results: list[ChunkResult] = field(default_factory=list)
    input_rows: int = 0
    rejected: int = 0
    stopped: str | None = None
    signal_number: int | None = None
    workers_lost: int = 0
    start_method: str | None = None
    executor: Executor | None = None
    pool: PoolStart | None = None
    workers: int = 1
    small_job: bool = False
    starting: bool = False
    result_dir: str | None = None
    in_flight: dict[Future[ChunkResult], ChunkT] = field(default_factory=dict)
    waiting: list[ChunkT] = field(default_factory=list)
    ahead: deque[ChunkT] = field(default_factory=deque)
    ahead_error: BulkparError | None = None
    plan_ended: bool = False
    exhausted: bool = False
    position: int = 0
    deaths: dict[int, int] = field(default_factory=dict)
    stopping: bool = False
    abort_now: bool = False

    def __post_init__(self) -> None:
        self.backend: ExecutorBackend = backend(self.options.executor)
        self.rejects = RejectLog(self.options.rejects)
        self.skip = self.plan.checkpoint.done_indexes() if self.plan.checkpoint else set()
        self.chunks: Iterator[ChunkT] = iter(self.plan.chunks)
        self.total = self.plan.total
        self.matched = self.plan.matched
        self.chunk_options = worker.ChunkOptions()

    # -- lifecycle ----------------------------------------------------------

    def start(self) -> None:
        """Decide where the chunks run and start it; count the rows meanwhile.

        The first chunks are planned before anything starts (a few indexed
        probes, or a few batches of input): when the plan ends within the
        backend's ``small_job_chunks``, the job runs in this process. The pool
        then starts, in a thread where the backend allows, while this thread
        counts the rows; :meth:`PoolStart.wait` raises a worker's set-up
        error before any chunk is sent. An interrupt stops the start-up:
        nothing has been written yet.
        """
        self.starting = True
        try:
            small = self.backend.small_job_chunks
            if small and self._plan_ends_within(small):
                self.backend = backend(ExecutorKind.SERIAL)
                self.small_job = True
            self.workers = self.backend.slots(self.options.workers)
            if self.backend.result_files:
                self.result_dir = tempfile.mkdtemp(prefix="bulkpar-results-")
            self.chunk_options = worker.ChunkOptions(
                retries=self.options.retries,
                bisect=self.options.on_error == "bisect",
                dry_run=self.options.dry_run,
                close_after=self.backend.closes_connections_after_chunk,
                result_dir=self.result_dir,
            )
            self.pool = PoolStart(self.backend, self.options, self.target, self.workers)
            if self.plan.count is not None:
                self.total = self.matched = self.plan.count()
            self.executor = self.pool.wait()
            self.start_method = self.pool.start_method
        except KeyboardInterrupt:  # a second interrupt during start-up
            self.abort_now = True
            if self.signal_number is None:
                self.signal_number = signal.SIGINT
        except BaseException:
            if not self.abort_now:
                raise
            # workers ended by a second interrupt fail the pool's start: the
            # interrupt is what happened, and nothing was written
        finally:
            self.starting = False

    def _plan_ends_within(self, chunks: int) -> bool:
        """Plan ahead; True when the whole plan holds at most ``chunks`` chunks' worth.

        Planned chunks wait in ``ahead`` for the loop. A chunk whose size is
        not known (a key range) counts as a full one. An error that stops the
        plan is kept for the loop too, so the chunks before it still run. In
        a file, the bytes read so far tell early that the job is not small
        (the records left would fill twice the allowance), so that a big job
        with big chunks does not read three of them before its pool starts.
        """
        if self.plan.chunk is None:
            return False
        budget = chunks * self.plan.chunk
        held = 0
        while held <= budget:
            try:
                chunk = self._pull()
            except BulkparError as exc:
                self.ahead_error = exc
                return True
            if chunk is None:
                return True
            self.ahead.append(chunk)
            held += chunk.size or self.plan.chunk
            total = self.plan.total if self.plan.unit == "bytes" else None
            if total and chunk.position and held * total > 2 * budget * chunk.position:
                return False
        return False

    def close(self) -> None:
        self.rejects.close()
        if self.pool is not None:
            self.pool.join()  # a start cut short by an error or an interrupt
            if self.executor is None:
                self.executor = self.pool.executor
        if self.executor is not None:
            self.executor.shutdown(wait=True, cancel_futures=True)
        if self.result_dir is not None:
            shutil.rmtree(self.result_dir, ignore_errors=True)

    @contextlib.contextmanager
    def signals(self) -> Iterator[None]:
        """Turn SIGINT and SIGTERM into an orderly stop while the run lasts."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        for signum in previous:
            signal.signal(signum, self._on_signal)
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def _on_signal(self, signum: int, frame: Any) -> None:
        if self.signal_number is None:
            self.signal_number = signum
            self.stopping = True
            if self.progress is not None:
                self.progress.notice(
                    f"bulkpar: {signal.Signals(signum).name} received; letting the chunks in "
                    "flight finish (again to stop at once)"
                )
            return
        # the second signal: end the workers now; their transactions roll back. The
        # loop notices within half a second; raising here could cut the bookkeeping
        # of a chunk that already committed in half.
        self.abort_now = True
        executor = self.executor or (self.pool.executor if self.pool is not None else None)
        if executor is not None:
            self.backend.stop_now(executor)
        if self.backend.in_process or self.starting:
            # the chunk runs in this thread, or nothing runs yet (the count, the
            # pool's start): stop what this thread does
            raise KeyboardInterrupt

    # -- scheduling ---------------------------------------------------------

    def loop(self) -> None:
        """Submit chunks with bounded look-ahead until the plan ends or the run stops."""
        limit = max(1, self.workers * self.options.in_flight_per_worker)
        try:
            while not self.abort_now:
                while not self.stopping and len(self.in_flight) < limit:
                    chunk = self._ready_chunk(limit)
                    if chunk is None:
                        break
                    self.input_rows += chunk.size
                    self._submit(chunk)
                if not self.in_flight:
                    return
                done, _ = wait(self.in_flight, timeout=0.5, return_when=FIRST_COMPLETED)
                if self.abort_now:
                    break
                if self.signal_number is not None:
                    self._cancel_queued()
                for future in done:
                    self._collect(future)
        except KeyboardInterrupt:  # serial executor, or outside the main thread
            self.abort_now = True
            if self.signal_number is None:
                self.signal_number = signal.SIGINT
        if self.abort_now:
            self.stopped = "stopped at once by a second interrupt; chunks in flight rolled back"
            self._salvage()

    def _salvage(self) -> None:
        """Count (and journal) the chunks in flight that committed before the workers died."""
        for chunk in list(self.in_flight.values()):
            finished = worker.load_result(self.result_dir, chunk.index) if self.result_dir else None
            if finished is not None:
                self._record(chunk, finished)
        self.in_flight.clear()

    def _ready_chunk(self, limit: int) -> ChunkT | None:
        """The next chunk that may start now, or None when none may.

        A waiting chunk whose partition has freed goes first (the earliest
        one of its partition, since the queue keeps plan order); then the
        plan's next chunk, unless its partition is busy: it joins the queue,
        which holds at most ``limit`` chunks. Every waiting chunk belongs to
        a busy partition, so a chunk read from the plan never overtakes one
        of its own partition.
        """
        busy = {c.partition for c in self.in_flight.values()}
        busy.discard(None)
        for place, chunk in enumerate(self.waiting):
            if chunk.partition not in busy:
                return self.waiting.pop(place)
        while not self.exhausted and len(self.waiting) < limit:
            planned = self._next_chunk()
            if planned is None:
                self.exhausted = True
                return None
            if planned.partition not in busy:
                return planned
            self.waiting.append(planned)
        return None

    def _next_chunk(self) -> ChunkT | None:
        if self.ahead:
            return self.ahead.popleft()
        try:
            return self._pull()
        except BulkparError as exc:  # bad input mid-stream: stop, keep what committed
            if isinstance(exc, CheckpointMismatchError) and not (self.results or self.in_flight):
                raise  # nothing written yet: refuse the run outright
            self.stopped = str(exc)
            self.stopping = True
            return None

    def _pull(self) -> ChunkT | None:
        """The plan's next chunk that a resume does not skip; None at the plan's end."""
        if self.ahead_error is not None:
            error, self.ahead_error = self.ahead_error, None
            raise error
        checkpoint = self.plan.checkpoint
        while not self.plan_ended:
            chunk = next(self.chunks, None)
            if chunk is None:
                self.plan_ended = True
                if checkpoint is not None:  # what a resume skips must be what was committed
                    checkpoint.verify_end()
                return None
            if chunk.index not in self.skip:
                return chunk
            if checkpoint is not None:
                checkpoint.verify(chunk)
        return None

    def _submit(self, chunk: ChunkT) -> None:
        assert self.executor is not None
        try:
            future = self.executor.submit(worker.run_chunk, self.job, chunk, self.chunk_options)
        except BrokenProcessPool:
            # a worker died since the last wait and the pool refuses new work: this
            # chunk never started; replace the pool (rerunning what was in flight)
            self._replace_pool(None)
            future = self.executor.submit(worker.run_chunk, self.job, chunk, self.chunk_options)
        self.in_flight[future] = chunk

    def _cancel_queued(self) -> None:
        self.in_flight = {f: c for f, c in self.in_flight.items() if not f.cancel()}

    def _collect(self, future: Future[ChunkResult]) -> None:
        chunk = self.in_flight.pop(future, None)
        if chunk is None:
            return
        try:
            result = future.result()
        except BrokenProcessPool:
            self._replace_pool(chunk)
            return
        self._record(chunk, result)

    def _record(self, chunk: ChunkT, result: ChunkResult) -> None:
        """Count a chunk's result, journal it, show it, and decide whether to go on."""
        if self.result_dir is not None:
            with contextlib.suppress(FileNotFoundError):
                os.remove(worker.result_path(self.result_dir, chunk.index))
        self.results.append(result)
        self.rejects.write(result.rejects)
        self.rejected += result.rejected
        if not result.failed and self.plan.checkpoint is not None and not self.options.dry_run:
            self.plan.checkpoint.record(chunk, result.rows)
        if self.progress is not None:
            position = chunk.position
            if position is not None:  # chunks finish out of order: the bar only moves on
                self.position = position = max(self.position, position)
            self.progress.advance(result, position)
        if result.failed and self.options.on_error == "abort":
            self.stopping = True
        limit = self.options.max_rejects
        if limit is not None and self.rejected > limit:
            self.stopping = True
            self.stopped = (
                f"more than {limit} rows rejected (--max-rejects); fix the input and run again"
            )

    def _replace_pool(self, first: ChunkT | None) -> None:
        """A worker died: start a new pool and rerun the chunks that did not finish.

        When one worker dies the pool ends the others too and drops every
        result it had not delivered yet, including those of chunks that had
        committed. Workers also leave each result in ``result_dir`` right
        after the commit, so those chunks are counted, not run twice.
        ``first`` is the chunk whose future reported the death (None when a
        submission found the pool broken).
        """
        lost = [*([] if first is None else [first]), *self.in_flight.values()]
        for future in list(self.in_flight):
            with contextlib.suppress(Exception):
                future.exception()  # they all fail with the broken pool
        self.in_flight.clear()
        self.workers_lost += 1
        assert self.executor is not None
        self.executor.shutdown(wait=True, cancel_futures=True)
        self.executor, self.start_method = self.backend.create(self.options, self.target)
        self.backend.warm_up(self.executor, self.workers)
        for chunk in lost:
            finished = worker.load_result(self.result_dir, chunk.index) if self.result_dir else None
            if finished is not None:
                self._record(chunk, finished)
                continue
            deaths = self.deaths.get(chunk.index, 0) + 1
            self.deaths[chunk.index] = deaths
            if deaths > self.options.retries:
                self.results.append(
                    ChunkResult(
                        index=chunk.index,
                        label=chunk.label,
                        rows=worker.chunk_rows(self.job, chunk),
                        error=f"worker processes died {deaths} times while running this "
                        "chunk (out of memory? a crash in a C extension?)",
                    )
                )
                if self.options.on_error == "abort":
                    self.stopping = True
                continue
            self._submit(chunk)
