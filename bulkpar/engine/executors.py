"""Executors: where chunks run (a process pool, threads, or inline).

All three speak ``concurrent.futures.Executor``; what differs between them is
said once, by their :class:`ExecutorBackend` (how to create, warm up and stop
one, and what it offers), so the runner never compares executor names and a
new executor is one class here. A process pool's workers are started by
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
from typing import Any, Protocol

from bulkpar.bootstrap import close_connections
from bulkpar.engine import worker
from bulkpar.engine.contracts import ExecutorKind, RunOptions, Target
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


class ExecutorBackend(Protocol):
    """What the runner needs of an executor backend; a new backend is one class.

    Attributes:
        kind: the name users give (``--executor``).
        in_process: tasks run in the calling thread (an interrupt must raise there).
        result_files: workers leave each committed chunk's result in a
            run-private folder of the parent's file system, so results survive
            a pool that breaks when one worker dies.
        needs_settings_module: workers load the project themselves, from a
            settings module and import path (so a transform must be importable
            by name, and ``settings.configure()`` cannot be repeated there).
        closes_connections_after_chunk: each chunk closes its database
            connections (Django's connections belong to a thread).
    """

    kind: ExecutorKind
    in_process: bool
    result_files: bool
    needs_settings_module: bool
    closes_connections_after_chunk: bool

    def slots(self, workers: int) -> int:
        """Chunks that run at the same time with ``workers`` asked for."""
        ...

    def create(self, options: RunOptions, target: Target) -> tuple[Executor, str | None]:
        """A new executor, and the start method it uses (process pools)."""
        ...

    def warm_up(self, executor: Executor, workers: int) -> None:
        """Start every worker; raise WorkerSetupError before any chunk if one cannot."""
        ...

    def stop_now(self, executor: Executor) -> None:
        """End the workers at once (their transactions roll back)."""
        ...


class ProcessBackend:
    """A process pool (``--executor process``, the default)."""

    kind = ExecutorKind.PROCESS
    in_process = False
    result_files = True
    needs_settings_module = True
    closes_connections_after_chunk = False

    def slots(self, workers: int) -> int:
        return workers

    def create(self, options: RunOptions, target: Target) -> tuple[Executor, str | None]:
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
            initargs=_initargs(target),
        )
        return process_pool, method

    def warm_up(self, executor: Executor, workers: int) -> None:
        warm_up(executor, workers)

    def stop_now(self, executor: Executor) -> None:
        # the pool keeps its processes private; reaching them is the only way to
        # end a chunk that is running now
        processes = getattr(executor, "_processes", None) or {}
        for process in list(processes.values()):
            if process.is_alive():
                process.kill()


class ThreadBackend:
    """Threads in this process (``--executor thread``): any callable works as a transform."""

    kind = ExecutorKind.THREAD
    in_process = False
    result_files = False
    needs_settings_module = False
    closes_connections_after_chunk = True

    def slots(self, workers: int) -> int:
        return workers

    def create(self, options: RunOptions, target: Target) -> tuple[Executor, str | None]:
        executor = ThreadPoolExecutor(
            max_workers=options.workers,
            thread_name_prefix="bulkpar",
            initializer=worker.init_worker,
            initargs=_initargs(target),
        )
        return executor, None

    def warm_up(self, executor: Executor, workers: int) -> None:
        warm_up(executor, workers)

    def stop_now(self, executor: Executor) -> None:
        """Threads cannot be killed: the running chunks finish (or roll back) on their own."""


class SerialBackend:
    """Each chunk at once in the calling thread (``--executor serial``, for debugging)."""

    kind = ExecutorKind.SERIAL
    in_process = True
    result_files = False
    needs_settings_module = False
    closes_connections_after_chunk = False

    def slots(self, workers: int) -> int:
        return 1

    def create(self, options: RunOptions, target: Target) -> tuple[Executor, str | None]:
        worker.tune_connections(target.database)
        try:
            worker.run_setup(target.setup)
        except Exception as exc:
            raise WorkerSetupError(
                f"--setup {target.setup} failed: {type(exc).__name__}: {exc}"
            ) from exc
        return SerialExecutor(), None

    def warm_up(self, executor: Executor, workers: int) -> None:
        """Nothing to start: the chunks run in this process, already set up."""

    def stop_now(self, executor: Executor) -> None:
        """The chunk runs in the caller's thread: the runner raises there instead."""


#: Every executor backend by its kind.
BACKENDS: dict[ExecutorKind, ExecutorBackend] = {
    backend.kind: backend for backend in (ProcessBackend(), ThreadBackend(), SerialBackend())
}


def backend(kind: ExecutorKind | str) -> ExecutorBackend:
    """The backend of an executor kind (a name already checked by the run options)."""
    return BACKENDS[ExecutorKind(kind)]


def _initargs(target: Target) -> tuple[Any, ...]:
    return (target.settings, target.pythonpath, target.database, target.setup, target.environ)


def make_executor(options: RunOptions, target: Target) -> tuple[Executor, str | None]:
    """The executor ``options`` ask for, and the start method used (process pools)."""
    return backend(options.executor).create(options, target)


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
