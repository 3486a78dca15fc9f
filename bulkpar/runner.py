"""The runner: schedule a job's chunks on an executor and fold the results.

Invariants:

* **Bounded in-flight work.** At most ``workers * in_flight_per_worker``
  chunks are submitted and not yet finished; the plan is consumed lazily, so
  memory stays flat whatever the size of the job.
* **Descriptors, not data.** Workers receive the frozen job and a chunk
  descriptor (a primary-key range or a batch of plain values).
* **Failure stops scheduling.** With ``on_error="abort"`` a failed chunk stops
  new submissions; chunks already running finish and are counted, so the
  report reconciles with the database.
* **Ctrl-C is orderly.** The first interrupt stops scheduling and lets
  in-flight chunks commit or roll back; workers ignore SIGINT so a terminal's
  Ctrl-C never cuts a chunk in half. A second interrupt ends at once.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import (
    FIRST_COMPLETED,
    Executor,
    Future,
    ProcessPoolExecutor,
    ThreadPoolExecutor,
    wait,
)
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import IO, Any, Protocol

from bulkpar import worker
from bulkpar.django_setup import close_connections
from bulkpar.errors import BulkparError, UsageError, WorkerSetupError
from bulkpar.job import Job, RunOptions, Target
from bulkpar.report import ChunkResult, Report, build_report


class ProgressSink(Protocol):
    """Receives progress as data; rendering is the caller's business."""

    def start(self, total: int | None, description: str, unit: str) -> None: ...

    def advance(self, result: ChunkResult, position: int | None) -> None: ...

    def close(self) -> None: ...


class SerialExecutor(Executor):
    """Runs each task at once in the calling thread (``--executor serial``)."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:
            future.set_exception(exc)
        return future


def default_start_method() -> str:
    """The multiprocessing start method bulkpar uses unless told otherwise.

    ``forkserver`` where the platform has it, else ``spawn``. Measured on the
    2-core Linux development machine (``python bench/startup.py --workers 2``,
    median of 5, from interpreter start until both workers have run
    ``django.setup()``): fork 0.20 s, forkserver 0.47 s, spawn 0.66 s. Fork is
    the fastest but duplicates whatever the parent holds at that moment — open
    database sockets, the progress display's refresh thread, locks held by
    other threads — which is how forked children hang or break the parent's
    connection (and why Python 3.14 no longer defaults to it on Linux).
    forkserver forks every worker from a clean, single-threaded server process
    that has pre-imported Django and bulkpar: a quarter of a second once per
    run buys safety under every condition. ``--start-method fork`` remains
    available for very short jobs.
    """
    methods = multiprocessing.get_all_start_methods()
    return "forkserver" if "forkserver" in methods else "spawn"


def _make_executor(options: RunOptions, target: Target) -> tuple[Executor, str | None]:
    if options.executor == "serial":
        worker.tune_connections(target.database)
        try:
            worker.run_setup(target.setup)
        except Exception as exc:
            raise WorkerSetupError(
                f"--setup {target.setup} failed: {type(exc).__name__}: {exc}"
            ) from exc
        return SerialExecutor(), None
    initargs = (target.settings, target.pythonpath, target.database, target.setup)
    if options.executor == "thread":
        executor = ThreadPoolExecutor(
            max_workers=options.workers,
            thread_name_prefix="bulkpar",
            initializer=worker.init_worker,
            initargs=initargs,
        )
        return executor, None
    method = options.start_method or default_start_method()
    context = multiprocessing.get_context(method)
    if method == "forkserver":
        context.set_forkserver_preload(["bulkpar.worker", "django.db.models"])
    # A forked child must not inherit the parent's open database sockets.
    close_connections()
    process_pool = ProcessPoolExecutor(
        max_workers=options.workers,
        mp_context=context,
        initializer=worker.init_worker,
        initargs=initargs,
    )
    return process_pool, method


def _warm_up(executor: Executor, workers: int) -> None:
    """Start every worker and surface a failed set-up before any chunk is sent."""
    try:
        infos = [f.result() for f in [executor.submit(worker.ping) for _ in range(workers)]]
    except BrokenProcessPool as exc:
        raise WorkerSetupError(
            "a worker process died while starting (django.setup() in the worker); "
            "run with --executor serial to see the error in this process"
        ) from exc
    for info in infos:
        if info.error:
            first_line = info.error.splitlines()[0]
            raise WorkerSetupError(
                f"worker set-up failed in process {info.pid}: {first_line}\n{info.error}"
            )


@dataclass
class Plan:
    """The chunks to run, produced lazily, and how to measure progress through them.

    Attributes:
        chunks: chunk descriptors; consumed one at a time as workers free up.
        total: the progress total (rows, or bytes of an input file), if known.
        unit: ``"rows"`` or ``"bytes"``; with bytes a chunk's ``position``
            (bytes read when it was cut) drives the bar.
        matched: rows selected when the run was planned (updates).
        counts_input: True for loads: the report counts records read.
    """

    chunks: Iterable[Any]
    total: int | None = None
    unit: str = "rows"
    matched: int | None = None
    counts_input: bool = False


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
    job: Job,
    plan: Plan,
    options: RunOptions,
    target: Target,
    *,
    progress: ProgressSink | None = None,
    notes: tuple[str, ...] = (),
) -> Report:
    """Run every chunk of ``plan`` for ``job`` and return the report.

    Args:
        job: the operation's frozen description, executed in workers.
        plan: the chunk descriptors (consumed lazily) and progress totals.
        options: workers, executor, start method, retries, error policy,
            reject file and limit.
        target: settings, import path and database alias for the workers.
        progress: optional sink for live progress.
        notes: remarks to carry into the report.

    Raises:
        WorkerSetupError: a worker could not load the project.
        KeyboardInterrupt: on a second Ctrl-C (the first one ends the run
            with ``report.interrupted``).
    """
    from django.db import connections

    vendor = connections[target.database].vendor
    workers = 1 if options.executor == "serial" else options.workers
    started = time.perf_counter()
    rejects = RejectLog(options.rejects)
    close_connections()
    executor, start_method = _make_executor(options, target)
    state = _RunState()
    try:
        if options.executor != "serial":
            _warm_up(executor, workers)
        startup = time.perf_counter() - started
        if progress is not None:
            progress.start(plan.total, f"{job.operation} {job.model}", plan.unit)
        _schedule(job, plan, options, executor, workers, state, progress, rejects)
    finally:
        rejects.close()
        if progress is not None:
            progress.close()
        executor.shutdown(wait=True, cancel_futures=True)
    if vendor == "sqlite" and workers > 1:
        notes = (
            *notes,
            "SQLite allows one writer at a time: extra workers speed up reading and "
            "Python-side work, while writes are serialised.",
        )
    return build_report(
        state.results,
        operation=job.operation,
        model=job.model,
        seconds=time.perf_counter() - started,
        matched=plan.matched if plan.matched is not None else state.input_rows,
        input_rows=state.input_rows if plan.counts_input else None,
        database=target.database,
        vendor=vendor,
        method=job.method,
        workers=workers,
        executor=options.executor,
        start_method=start_method,
        startup_seconds=round(startup, 6),
        interrupted=state.interrupted,
        dry_run=options.dry_run,
        stopped=state.stopped,
        rejects_file=options.rejects,
        notes=notes,
    )


@dataclass
class _RunState:
    results: list[ChunkResult] = field(default_factory=list)
    input_rows: int = 0
    rejected: int = 0
    interrupted: bool = False
    stopped: str | None = None


def _schedule(
    job: Job,
    plan: Plan,
    options: RunOptions,
    executor: Executor,
    workers: int,
    state: _RunState,
    progress: ProgressSink | None,
    rejects: RejectLog,
) -> None:
    """Submit chunks with bounded look-ahead until the plan ends or the run stops."""
    chunk_options = worker.ChunkOptions(
        retries=options.retries,
        bisect=options.on_error == "bisect",
        dry_run=options.dry_run,
        close_after=options.executor == "thread",
    )
    limit = max(1, workers * options.in_flight_per_worker)
    chunks: Iterator[Any] = iter(plan.chunks)
    in_flight: dict[Future[ChunkResult], Any] = {}
    stopping = False
    while True:
        try:
            while not stopping and len(in_flight) < limit:
                try:
                    chunk = next(chunks, None)
                except BulkparError as exc:  # bad input mid-stream: stop, keep what committed
                    state.stopped = str(exc)
                    chunk = None
                if chunk is None:
                    stopping = True
                    break
                state.input_rows += getattr(chunk, "size", 0)
                future = executor.submit(worker.run_chunk, job, chunk, chunk_options)
                in_flight[future] = chunk
            if not in_flight:
                return
            done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
        except KeyboardInterrupt:
            if state.interrupted:
                raise
            state.interrupted = stopping = True
            in_flight = {f: c for f, c in in_flight.items() if not f.cancel()}
            print(
                "bulkpar: interrupted; letting chunks in flight finish "
                "(Ctrl-C again to stop at once)",
                file=sys.stderr,
            )
            continue
        for future in done:
            chunk = in_flight.pop(future)
            result = _result_of(future, chunk)
            state.results.append(result)
            rejects.write(result.rejects)
            state.rejected += result.rejected
            if progress is not None:
                progress.advance(result, getattr(chunk, "position", None))
            if result.failed and (options.on_error == "abort" or result.worker is None):
                stopping = True
            if options.max_rejects is not None and state.rejected > options.max_rejects:
                stopping = True
                state.stopped = (
                    f"more than {options.max_rejects} rows rejected (--max-rejects); "
                    "fix the input and run again"
                )


def _result_of(future: Future[ChunkResult], chunk: Any) -> ChunkResult:
    """The chunk's result, or a failed result if the worker process itself died."""
    try:
        return future.result()
    except BrokenProcessPool as exc:
        return ChunkResult(
            index=chunk.index,
            label=chunk.label,
            error=f"worker process died while running this chunk: {exc}",
            traceback=None,
            worker=None,
        )


def cpu_count() -> int:
    """CPUs this process may use (the default number of workers)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1
