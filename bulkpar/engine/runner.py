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
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Executor, Future, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import IO, Any, Generic, Protocol

from bulkpar.bootstrap import close_connections
from bulkpar.engine import worker
from bulkpar.engine.checkpoint import Checkpoint
from bulkpar.engine.contracts import ChunkT, Job, RunOptions, Target
from bulkpar.engine.executors import backend
from bulkpar.errors import BulkparError, CheckpointMismatchError, UsageError
from bulkpar.report import ChunkResult, Report, build_report

#: The report's note when a chunk's created/updated/unchanged split could not be exact.
INEXACT_NOTE = (
    "counts inexact: another writer changed some of these keys during the run (or the input "
    "holds keys that the database's collation calls equal, such as 'a' and 'A '), so the split "
    "between created, updated and unchanged is an estimate; the data written is right"
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
    """

    chunks: Iterable[ChunkT]
    total: int | None = None
    unit: str = "rows"
    matched: int | None = None
    counts_input: bool = False
    checkpoint: Checkpoint | None = None


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
    workers = backend(options.executor).slots(options.workers)
    started = time.perf_counter()
    scheduler = _Scheduler(job, plan, options, target, workers, progress)
    try:
        with scheduler.signals():
            scheduler.start()
            startup = time.perf_counter() - started
            if progress is not None:
                progress.start(plan.total, f"{job.operation} {job.model}", plan.unit)
            scheduler.loop()
    finally:
        scheduler.close()
        if progress is not None:
            progress.close()
        if plan.checkpoint is not None:
            plan.checkpoint.close()
    inexact = any(r.inexact for r in scheduler.results)
    if inexact:
        notes = (*notes, INEXACT_NOTE)
    if vendor == "sqlite" and workers > 1:
        notes = (
            *notes,
            "SQLite allows one writer at a time: extra workers speed up reading and "
            "Python-side work, while writes are serialised.",
        )
    resumed = plan.checkpoint.done if plan.checkpoint is not None else []
    return build_report(
        scheduler.results,
        operation=job.operation,
        model=job.model,
        seconds=time.perf_counter() - started,
        matched=plan.matched if plan.matched is not None else scheduler.input_rows,
        input_rows=scheduler.input_rows if plan.counts_input else None,
        database=target.database,
        vendor=vendor,
        method=job.method,
        workers=workers,
        executor=backend(options.executor).kind.value,
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
    workers: int
    progress: ProgressSink | None
    results: list[ChunkResult] = field(default_factory=list)
    input_rows: int = 0
    rejected: int = 0
    stopped: str | None = None
    signal_number: int | None = None
    workers_lost: int = 0
    start_method: str | None = None
    executor: Executor | None = None
    in_flight: dict[Future[ChunkResult], ChunkT] = field(default_factory=dict)
    waiting: list[ChunkT] = field(default_factory=list)
    exhausted: bool = False
    position: int = 0
    deaths: dict[int, int] = field(default_factory=dict)
    stopping: bool = False
    abort_now: bool = False

    def __post_init__(self) -> None:
        self.backend = backend(self.options.executor)
        self.rejects = RejectLog(self.options.rejects)
        self.result_dir = (
            tempfile.mkdtemp(prefix="bulkpar-results-") if self.backend.result_files else None
        )
        self.chunk_options = worker.ChunkOptions(
            retries=self.options.retries,
            bisect=self.options.on_error == "bisect",
            dry_run=self.options.dry_run,
            close_after=self.backend.closes_connections_after_chunk,
            result_dir=self.result_dir,
        )
        self.skip = self.plan.checkpoint.done_indexes() if self.plan.checkpoint else set()
        self.chunks: Iterator[ChunkT] = iter(self.plan.chunks)

    # -- lifecycle ----------------------------------------------------------

    def start(self) -> None:
        close_connections()
        self.executor, self.start_method = self.backend.create(self.options, self.target)
        self.backend.warm_up(self.executor, self.workers)

    def close(self) -> None:
        self.rejects.close()
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
        if self.executor is not None:
            self.backend.stop_now(self.executor)
        if self.backend.in_process:
            raise KeyboardInterrupt  # the chunk runs in this thread: stop it

    # -- scheduling ---------------------------------------------------------

    def loop(self) -> None:
        """Submit chunks with bounded look-ahead until the plan ends or the run stops."""
        limit = max(1, self.workers * self.options.in_flight_per_worker)
        try:
            while True:
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
        checkpoint = self.plan.checkpoint
        while True:
            try:
                chunk = next(self.chunks, None)
                if checkpoint is not None:  # what a resume skips must be what was committed
                    if chunk is None:
                        checkpoint.verify_end()
                    elif chunk.index in self.skip:
                        checkpoint.verify(chunk)
            except BulkparError as exc:  # bad input mid-stream: stop, keep what committed
                if isinstance(exc, CheckpointMismatchError) and not (
                    self.results or self.in_flight
                ):
                    raise  # nothing written yet: refuse the run outright
                self.stopped = str(exc)
                self.stopping = True
                return None
            if chunk is None or chunk.index not in self.skip:
                return chunk

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
