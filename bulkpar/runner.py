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

import multiprocessing
import os
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import (
    FIRST_COMPLETED,
    Executor,
    Future,
    ProcessPoolExecutor,
    ThreadPoolExecutor,
    wait,
)
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Protocol

from bulkpar import worker
from bulkpar.django_setup import close_connections
from bulkpar.errors import WorkerSetupError
from bulkpar.job import Job, RunOptions, Target
from bulkpar.report import ChunkResult, Report, build_report


class ProgressSink(Protocol):
    """Receives progress as data; rendering is the caller's business."""

    def start(self, total_rows: int | None, description: str) -> None: ...

    def advance(self, result: ChunkResult) -> None: ...

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
        return SerialExecutor(), None
    initargs = (target.settings, target.pythonpath, target.database)
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


def run(
    job: Job,
    options: RunOptions,
    target: Target,
    *,
    progress: ProgressSink | None = None,
    notes: tuple[str, ...] = (),
) -> Report:
    """Run every chunk of ``job`` and return the report.

    Args:
        job: the operation's frozen description (plans in the parent,
            executes in workers).
        options: workers, executor, start method, retries, error policy.
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
    total_rows = job.total_rows()
    close_connections()
    executor, start_method = _make_executor(options, target)
    results: list[ChunkResult] = []
    interrupted = False
    try:
        if options.executor != "serial":
            _warm_up(executor, workers)
        startup = time.perf_counter() - started
        if progress is not None:
            progress.start(total_rows, f"{job.operation} {job.model}")
        interrupted = _schedule(job, options, executor, workers, results, progress)
    finally:
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
        results,
        operation=job.operation,
        model=job.model,
        seconds=time.perf_counter() - started,
        matched=total_rows,
        database=target.database,
        vendor=vendor,
        method=job.method,
        workers=workers,
        executor=options.executor,
        start_method=start_method,
        startup_seconds=round(startup, 6),
        interrupted=interrupted,
        notes=notes,
    )


def _schedule(
    job: Job,
    options: RunOptions,
    executor: Executor,
    workers: int,
    results: list[ChunkResult],
    progress: ProgressSink | None,
) -> bool:
    """Submit chunks with bounded look-ahead; returns True if interrupted."""
    close_after = options.executor == "thread"
    limit = max(1, workers * options.in_flight_per_worker)
    plan: Iterator[Any] = job.plan()
    in_flight: dict[Future[ChunkResult], Any] = {}
    stopping = False
    interrupted = False
    while True:
        try:
            while not stopping and len(in_flight) < limit:
                chunk = next(plan, None)
                if chunk is None:
                    stopping = True
                    break
                future = executor.submit(worker.run_chunk, job, chunk, options.retries, close_after)
                in_flight[future] = chunk
            if not in_flight:
                return interrupted
            done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
        except KeyboardInterrupt:
            if interrupted:
                raise
            interrupted = stopping = True
            in_flight = {f: c for f, c in in_flight.items() if not f.cancel()}
            print(
                "bulkpar: interrupted; letting chunks in flight finish "
                "(Ctrl-C again to stop at once)",
                file=sys.stderr,
            )
            continue
        for future in done:
            result = _result_of(future, in_flight.pop(future))
            results.append(result)
            if progress is not None:
                progress.advance(result)
            if result.failed and (options.on_error == "abort" or result.worker is None):
                stopping = True


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
