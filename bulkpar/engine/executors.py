"""Executors: where chunks run (a process pool, threads, or inline).

All three speak ``concurrent.futures.Executor``, so the runner does not care
which one it drives. A process pool's workers are started by
:func:`bulkpar.engine.worker.init_worker` with only picklable strings, so every
start method works; :func:`warm_up` makes them all load the project before
the first chunk is sent.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from bulkpar.bootstrap import close_connections
from bulkpar.engine import worker
from bulkpar.engine.contracts import RunOptions, Target
from bulkpar.errors import WorkerSetupError


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


def make_executor(options: RunOptions, target: Target) -> tuple[Executor, str | None]:
    """The executor ``options`` ask for, and the start method used (process pools)."""
    if options.executor == "serial":
        worker.tune_connections(target.database)
        try:
            worker.run_setup(target.setup)
        except Exception as exc:
            raise WorkerSetupError(
                f"--setup {target.setup} failed: {type(exc).__name__}: {exc}"
            ) from exc
        return SerialExecutor(), None
    initargs = (target.settings, target.pythonpath, target.database, target.setup, target.environ)
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
        context.set_forkserver_preload(["bulkpar.engine.worker", "django.db.models"])
    # A forked child must not inherit the parent's open database sockets.
    close_connections()
    process_pool = ProcessPoolExecutor(
        max_workers=options.workers,
        mp_context=context,
        initializer=worker.init_worker,
        initargs=initargs,
    )
    return process_pool, method


def warm_up(executor: Executor, workers: int) -> None:
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


def cpu_count() -> int:
    """CPUs this process may use (the default number of workers)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def kill_workers(executor: Executor) -> None:
    """End a process pool's workers at once (their open transactions roll back)."""
    processes = getattr(executor, "_processes", None) or {}
    for process in list(processes.values()):
        if process.is_alive():
            process.kill()
