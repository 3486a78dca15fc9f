"""What runs inside a worker: set-up once per process, then one call per chunk.

``init_worker`` is the pool initializer. It receives only the settings module
name and import path, so it works under the fork, forkserver and spawn start
methods alike. ``run_chunk`` runs one chunk of a job in one transaction,
retries it on transient errors, and always *returns* a ChunkResult — a
failure travels back as data (error text and the worker's traceback), never
as an exception that might not pickle.
"""

from __future__ import annotations

import contextlib
import gc
import os
import pickle
import random
import signal
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from bulkpar.engine.contracts import ChunkT, Job
from bulkpar.engine.transient import is_transient
from bulkpar.errors import RowError
from bulkpar.report import ChunkCounts, ChunkResult

_setup_error: str | None = None
_setup_seconds: float = 0.0


@dataclass(frozen=True)
class WorkerInfo:
    """A worker's answer to the warm-up ping."""

    pid: int
    setup_seconds: float
    error: str | None


def init_worker(
    settings: str,
    pythonpath: tuple[str, ...],
    database: str,
    setup: str | None = None,
    environ: tuple[tuple[str, str], ...] = (),
) -> None:
    """Pool initializer: load Django, tune the connection, run the user's set-up.

    SIGINT and SIGTERM are ignored in worker processes: the parent decides
    what happens (let in-flight chunks finish, then stop; or end the workers
    at once on a second signal), so a chunk is never cut in half by a
    terminal's Ctrl-C or a supervisor's SIGTERM reaching the process group.
    Errors are stored, not raised, and reported by :func:`ping`, so the
    parent can show the real message instead of a BrokenProcessPool.
    """
    global _setup_error, _setup_seconds
    start = time.perf_counter()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if environ:  # the parent's environment now, not the forkserver's from earlier
        os.environ.clear()
        os.environ.update(environ)
    try:
        from bulkpar.bootstrap import add_pythonpath

        add_pythonpath([p for p in pythonpath if os.path.isdir(p)])
        if settings:  # a worker process of its own: it loads the project
            _load_project(settings)
        tune_connections(database)
        run_setup(setup)
    except BaseException as exc:
        _setup_error = f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"
    _setup_seconds = time.perf_counter() - start


def _load_project(settings: str) -> None:
    """``django.setup()`` without garbage collection, then freeze what it loaded.

    Loading a project allocates much and frees little, so collecting meanwhile
    is wasted work; frozen, the loaded objects are skipped by the collections of
    every chunk to come (and their pages stay shared with the forkserver).
    """
    from bulkpar.bootstrap import setup_django

    gc.disable()
    try:
        setup_django(settings)
    finally:
        gc.freeze()
        gc.enable()


def run_setup(setup: str | None) -> None:
    """Run the user's per-worker set-up callable (``--setup module:callable``)."""
    if setup:
        from bulkpar.bootstrap import import_callable

        import_callable(setup, what="--setup")()


def ping() -> WorkerInfo:
    """Report this worker's pid and set-up outcome (the runner's warm-up task)."""
    return WorkerInfo(pid=os.getpid(), setup_seconds=_setup_seconds, error=_setup_error)


def tune_connections(database: str) -> Callable[[], None]:
    """Per-backend connection settings for concurrent bulk writers; returns their undoing.

    SQLite: writers take the write lock when their transaction begins
    (``BEGIN IMMEDIATE``) and wait for it (``busy_timeout``). With the default
    deferred transactions, two workers that both read first and then write
    deadlock, and SQLite answers "database is locked" at once instead of
    waiting. A worker process keeps these settings; a run in the caller's
    own process (``serial``, small jobs) undoes them when it ends.
    """
    from django.db import connections
    from django.db.backends.signals import connection_created

    connection = connections[database]
    if connection.vendor != "sqlite":
        return lambda: None
    uid = f"bulkpar-{database}"
    before = {
        name: connection.__dict__[name]
        for name in ("transaction_mode", "_start_transaction_under_autocommit")
        if name in connection.__dict__
    }
    timeout: list[Any] = []

    def on_connect(sender: Any, connection: Any, **kwargs: Any) -> None:
        if connection.alias == database and connection.vendor == "sqlite":
            if not timeout:
                timeout.append(connection.connection.execute("PRAGMA busy_timeout").fetchone()[0])
            connection.connection.execute("PRAGMA busy_timeout = 60000")
            use_immediate_transactions(connection)

    def restore() -> None:
        connection_created.disconnect(dispatch_uid=uid)
        for name in ("transaction_mode", "_start_transaction_under_autocommit"):
            if name in before:
                connection.__dict__[name] = before[name]
            else:
                connection.__dict__.pop(name, None)
        if connection.connection is not None and timeout:
            connection.connection.execute(f"PRAGMA busy_timeout = {int(timeout[0])}")

    connection_created.connect(on_connect, weak=False, dispatch_uid=uid)
    if connection.connection is not None:
        on_connect(None, connection)
    return restore


def use_immediate_transactions(connection: Any) -> None:
    """Make Django's SQLite atomic blocks start with ``BEGIN IMMEDIATE``."""
    if hasattr(connection, "transaction_mode"):  # Django >= 5.1
        connection.transaction_mode = "IMMEDIATE"
        return

    def begin_immediate() -> None:  # Django 4.2
        connection.cursor().execute("BEGIN IMMEDIATE")

    connection._start_transaction_under_autocommit = begin_immediate


@dataclass(frozen=True)
class ChunkOptions:
    """How a worker runs each chunk.

    Attributes:
        retries: retries after transient errors.
        bisect: on a data error, split the chunk until the bad rows are
            isolated; the good rows commit and each bad row is rejected.
        dry_run: roll every transaction back (report what would be written).
        close_after: close the connection after the chunk (thread executor).
        result_dir: process pools: where each chunk's result is also written,
            right after its commit, so that a result the pool loses when a
            worker dies is still known (and the committed chunk is not rerun).
    """

    retries: int = 5
    bisect: bool = False
    dry_run: bool = False
    close_after: bool = False
    result_dir: str | None = None


def run_chunk(job: Job[ChunkT], chunk: ChunkT, options: ChunkOptions) -> ChunkResult:
    """Run one chunk of ``job`` and describe the outcome.

    The job opens its transaction with the ``atomic`` factory it is given:
    a chunk's writes always commit or roll back together (with ``dry_run``
    they always roll back).

    Transient errors roll the transaction back and retry the chunk (up to
    ``retries`` times, exponential backoff with jitter, a fresh connection
    when the old one broke). Any other error rolls the chunk back; with
    ``bisect`` the chunk is split until the failing rows are isolated,
    otherwise it is returned as a failed ChunkResult carrying the worker's
    traceback.
    """
    from django.db import connections

    connection = connections[job.database]
    start = time.perf_counter()
    try:
        outcome = _attempt(job, chunk, options)
        if isinstance(outcome, BaseException) and options.bisect:
            outcome = _bisect(job, chunk, options, outcome)
        if isinstance(outcome, BaseException):
            result = _failure(job, chunk, outcome, start)
        else:
            counts, phases, retries = outcome
            result = ChunkResult.of(
                counts,
                index=chunk.index,
                label=chunk.label,
                seconds=time.perf_counter() - start,
                phases=phases,
                retries=retries,
                worker=os.getpid(),
            )
        if options.result_dir is not None:
            save_result(options.result_dir, result)
        return result
    finally:
        if options.close_after:
            connection.close()


#: A chunk that ran: its counts, seconds per phase, and transient errors retried.
Outcome = tuple[ChunkCounts, dict[str, float], int]


def _attempt(job: Job[ChunkT], chunk: ChunkT, options: ChunkOptions) -> Outcome | BaseException:
    """Run ``chunk`` with transient-error retries; the final error is returned, not raised."""
    from django.db import connections, transaction

    connection = connections[job.database]

    @contextlib.contextmanager
    def atomic() -> Iterator[None]:
        with transaction.atomic(using=job.database):
            yield
            if options.dry_run:
                transaction.set_rollback(True, using=job.database)

    attempt = 0
    while True:
        phases: dict[str, float] = {}
        try:
            return job.execute(chunk, phases, atomic), phases, attempt
        except Exception as exc:
            if attempt < options.retries and is_transient(exc):
                attempt += 1
                connection.close_if_unusable_or_obsolete()  # reconnect if it broke
                time.sleep(min(0.05 * 2**attempt, 2.0) * random.uniform(0.5, 1.5))
                continue
            exc.bulkpar_retries = attempt  # type: ignore[attr-defined]
            return exc


def _bisect(
    job: Job[ChunkT], chunk: ChunkT, options: ChunkOptions, error: BaseException
) -> Outcome | BaseException:
    """Split a failing chunk until its bad rows are isolated; commit the rest.

    Returns the summed counts of the parts that committed, with one reject
    per row that failed on its own, or the error if the chunk cannot be split
    (``split`` returned None) or a part failed for a reason that is not the
    row's (a transient error past its retries).
    """
    parts = job.split(chunk)
    if parts is None:
        cause = error.error if isinstance(error, RowError) else error
        rejects = job.reject(chunk, cause)
        if rejects is not None:
            counts = ChunkCounts(rows=len(rejects), rejected=len(rejects), rejects=tuple(rejects))
            return counts, {}, 0
        return error
    totals = ChunkCounts()
    phases: dict[str, float] = {}
    retries = 0
    for part in parts:
        outcome = _attempt(job, part, options)
        if isinstance(outcome, BaseException):
            if is_transient(outcome):
                return outcome
            outcome = _bisect(job, part, options, outcome)
            if isinstance(outcome, BaseException):
                return outcome
        counts, part_phases, part_retries = outcome
        retries += part_retries
        totals += counts
        for key, value in part_phases.items():
            phases[key] = phases.get(key, 0.0) + value
    return totals, phases, retries


def _failure(job: Job[ChunkT], chunk: ChunkT, exc: BaseException, start: float) -> ChunkResult:
    row = exc.row if isinstance(exc, RowError) else None
    cause = exc.error if isinstance(exc, RowError) else exc
    return ChunkResult(
        index=chunk.index,
        label=chunk.label,
        rows=chunk_rows(job, chunk),
        seconds=time.perf_counter() - start,
        retries=getattr(exc, "bulkpar_retries", 0),
        error=f"{type(cause).__name__}: {cause}"
        + (f" (row pk={row!r})" if row is not None else ""),
        traceback="".join(traceback.format_exception(cause)),
        row=row,
        worker=os.getpid(),
    )


def result_path(folder: str, index: int) -> str:
    """Where chunk ``index``'s result is kept while the run lasts."""
    return os.path.join(folder, f"{index}.result")


def save_result(folder: str, result: ChunkResult) -> None:
    """Write ``result`` atomically (a reader never sees half a file)."""
    path = result_path(folder, result.index)
    with open(f"{path}.{os.getpid()}", "wb") as file:
        pickle.dump(result, file)
    os.replace(f"{path}.{os.getpid()}", path)


def load_result(folder: str, index: int) -> ChunkResult | None:
    """The saved result of chunk ``index``, if its worker got that far."""
    try:
        with open(result_path(folder, index), "rb") as file:
            return pickle.load(file)  # type: ignore[no-any-return]
    except FileNotFoundError:
        return None


def chunk_rows(job: Job[ChunkT], chunk: ChunkT) -> int:
    """Rows a rolled-back chunk held, so the report still reconciles (best effort)."""
    try:
        return int(job.chunk_rows(chunk))
    except Exception:  # the database may be what failed; the count is best effort
        return 0
