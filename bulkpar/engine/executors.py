"""Executors: where chunks run (a process pool, threads, or inline).

All of them speak ``concurrent.futures.Executor``; what differs between them is
said once, by their :class:`ExecutorBackend` (how to create, warm up and stop
one, and what it offers), so the runner never compares executor names and a
new executor is one class here. A process pool's workers are started by
:func:`bulkpar.engine.worker.init_worker` with only picklable strings, so every
start method works; :func:`warm_up` makes them all load the project before
the first chunk is sent. :class:`PoolStart` does both in a thread where that
is safe, so the pool starts while the runner counts and plans.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Protocol

from bulkpar.bootstrap import close_connections
from bulkpar.engine import worker
from bulkpar.engine.contracts import ExecutorKind, RunOptions, Target
from bulkpar.errors import WorkerSetupError


class SerialExecutor(Executor):
    """Runs each task at once in the calling thread (``--executor serial``, small jobs).

    ``restore`` undoes what the run changed in this process (the SQLite
    connection settings of :func:`bulkpar.engine.worker.tune_connections`) when
    the executor shuts down: the caller's own transactions are left as they were.
    """

    def __init__(self, restore: Callable[[], None] = lambda: None) -> None:
        self._restore = restore

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        restore, self._restore = self._restore, lambda: None
        restore()

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
    available; jobs of at most two chunks start no pool at all (``auto``), and
    the command line starts the forkserver while it loads the project
    (:meth:`ProcessBackend.start_early`).
    """
    methods = multiprocessing.get_all_start_methods()
    return "forkserver" if "forkserver" in methods else "spawn"


class ExecutorBackend(Protocol):
    """What the runner needs of an executor backend; a new backend is one class.

    Attributes:
        kind: the name users give (``--executor``).
        label: what the report names as the executor that ran.
        small_job_chunks: a job whose plan ends within this many chunks runs
            in this process instead (the serial backend): starting workers
            would cost more than they save. 0: never.
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
    label: str
    small_job_chunks: int
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

    def starts_in_background(self, options: RunOptions) -> bool:
        """Whether :class:`PoolStart` may create and warm up the executor in a thread,
        while the caller goes on counting and planning in its own."""
        ...

    def start_early(self, options: RunOptions) -> None:
        """Start what does not depend on the job yet (a process that forks workers later).

        For a caller that has not loaded the project yet (the command line):
        both then happen at once, on two cores.
        """
        ...

    def stop_now(self, executor: Executor) -> None:
        """End the workers at once (their transactions roll back)."""
        ...


class ProcessBackend:
    """A process pool, whatever the job's size (``--executor process``)."""

    kind = ExecutorKind.PROCESS
    label = "process"
    small_job_chunks = 0
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
            context.set_forkserver_preload(forkserver_preload())
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

    def starts_in_background(self, options: RunOptions) -> bool:
        # fork copies the parent as it is at that instant: its open database
        # socket, and the locks another thread (the one counting) may hold
        return (options.start_method or default_start_method()) != "fork"

    def start_early(self, options: RunOptions) -> None:
        """Start the forkserver, if the pool will fork its workers from one.

        The forkserver is a new interpreter that imports bulkpar, Django and
        the database backends (:func:`forkserver_preload`; about 0.25 s on the
        development machine); it lives as long as this process and serves
        every later pool (the runner starts it anyway when it starts a pool).
        """
        if (options.start_method or default_start_method()) != "forkserver":
            return
        from multiprocessing import forkserver

        multiprocessing.get_context("forkserver").set_forkserver_preload(forkserver_preload())
        forkserver.ensure_running()

    def stop_now(self, executor: Executor) -> None:
        # the pool keeps its processes private; reaching them is the only way to
        # end a chunk that is running now
        processes = getattr(executor, "_processes", None) or {}
        for process in list(processes.values()):
            if process.is_alive():
                process.kill()


class AutoBackend(ProcessBackend):
    """A process pool, except for a job of at most two chunks (``--executor auto``, the default).

    Such a job runs in this process, as ``serial`` would: one chunk cannot
    use a second worker, and two small ones finish before two workers have
    loaded Django (a forkserver pool takes about 0.3 s to start on the
    development machine, bench/RESULTS.md). Functions must still be
    importable by name, so that the same call works on a table of any size.
    """

    kind = ExecutorKind.AUTO
    small_job_chunks = 2


class ThreadBackend:
    """Threads in this process (``--executor thread``): any callable works as a transform."""

    kind = ExecutorKind.THREAD
    label = "thread"
    small_job_chunks = 0
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

    def starts_in_background(self, options: RunOptions) -> bool:
        return False  # threads start in microseconds

    def start_early(self, options: RunOptions) -> None:
        """Nothing to start early."""

    def stop_now(self, executor: Executor) -> None:
        """Threads cannot be killed: the running chunks finish (or roll back) on their own."""


class SerialBackend:
    """Each chunk at once in the calling thread (``--executor serial``; ``auto``'s small jobs)."""

    kind = ExecutorKind.SERIAL
    label = "serial"
    small_job_chunks = 0
    in_process = True
    result_files = False
    needs_settings_module = False
    closes_connections_after_chunk = False

    def slots(self, workers: int) -> int:
        return 1

    def create(self, options: RunOptions, target: Target) -> tuple[Executor, str | None]:
        restore = worker.tune_connections(target.database)
        try:
            worker.run_setup(target.setup)
        except Exception as exc:
            restore()
            raise WorkerSetupError(
                f"--setup {target.setup} failed: {type(exc).__name__}: {exc}"
            ) from exc
        return SerialExecutor(restore), None

    def warm_up(self, executor: Executor, workers: int) -> None:
        """Nothing to start: the chunks run in this process, already set up."""

    def starts_in_background(self, options: RunOptions) -> bool:
        return False  # the set-up runs here, in the caller's thread

    def start_early(self, options: RunOptions) -> None:
        """Nothing to start early."""

    def stop_now(self, executor: Executor) -> None:
        """The chunk runs in the caller's thread: the runner raises there instead."""


#: Every executor backend by its kind.
BACKENDS: dict[ExecutorKind, ExecutorBackend] = {
    backend.kind: backend
    for backend in (AutoBackend(), ProcessBackend(), ThreadBackend(), SerialBackend())
}


def backend(kind: ExecutorKind | str) -> ExecutorBackend:
    """The backend of an executor kind (a name already checked by the run options)."""
    return BACKENDS[ExecutorKind(kind)]


def _initargs(target: Target) -> tuple[Any, ...]:
    return (target.settings, target.pythonpath, target.database, target.setup, target.environ)


class PoolStart:
    """An executor being created and warmed up: in a thread when its backend allows.

    The runner counts the rows and plans the first chunks meanwhile. A
    worker that cannot load the project still fails the run before any
    write: :meth:`wait` raises its WorkerSetupError, and the runner calls it
    before the first chunk is sent.
    """

    def __init__(
        self, backend: ExecutorBackend, options: RunOptions, target: Target, workers: int
    ) -> None:
        self.backend = backend
        self.executor: Executor | None = None
        self.start_method: str | None = None
        self._error: BaseException | None = None
        self._args = (options, target, workers)
        self._thread: threading.Thread | None = None
        if backend.starts_in_background(options):
            self._thread = threading.Thread(target=self._start, name="bulkpar-pool-start")
            self._thread.start()
        else:
            self._start()

    def _start(self) -> None:
        options, target, workers = self._args
        try:
            self.executor, self.start_method = self.backend.create(options, target)
            self.backend.warm_up(self.executor, workers)
        except BaseException as exc:  # raised in the caller's thread by wait()
            self._error = exc

    def join(self) -> None:
        """Wait until the start has finished, however it ended."""
        if self._thread is not None:
            self._thread.join()

    def wait(self) -> Executor:
        """The warmed-up executor, once every worker is ready.

        Raises:
            WorkerSetupError: a worker could not load the project (or the
                user's set-up failed); nothing was written.
        """
        self.join()
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        assert self.executor is not None
        return self.executor


def forkserver_preload() -> list[str]:
    """What the forkserver imports once, so that every worker it forks has it already.

    bulkpar's worker side and Django's ORM, and, once the settings are
    loaded, the database backends they name: every worker imports its
    default database's backend in ``django.setup()`` (model classes ask it
    for the longest table name), and a driver such as psycopg takes 0.07 s to
    import. Only Django's own backends: the forkserver cannot report a failed
    import of a project's module, and these fail only as they fail here.
    """
    from django.conf import settings

    modules = ["bulkpar.engine.worker", "django.db.models"]
    try:
        databases = settings.DATABASES
    except Exception:  # no settings yet: the workers import their backends themselves
        return modules
    engines = {str(database.get("ENGINE", "")) for database in databases.values()}
    return modules + sorted(f"{e}.base" for e in engines if e.startswith("django.db.backends."))


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
