"""What runs inside a worker: set-up once per process, then one call per chunk.

``init_worker`` is the pool initializer. It receives only the settings module
name and import path, so it works under the fork, forkserver and spawn start
methods alike. ``run_chunk`` runs one chunk of a job in one transaction,
retries it on transient errors, and always *returns* a ChunkResult — a
failure travels back as data (error text and the worker's traceback), never
as an exception that might not pickle.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
import traceback
from dataclasses import dataclass
from typing import Any

from bulkpar.errors import RowError
from bulkpar.report import ChunkResult
from bulkpar.transient import is_transient

_setup_error: str | None = None
_setup_seconds: float = 0.0


@dataclass(frozen=True)
class WorkerInfo:
    """A worker's answer to the warm-up ping."""

    pid: int
    setup_seconds: float
    error: str | None


def init_worker(
    settings: str, pythonpath: tuple[str, ...], database: str, setup: str | None = None
) -> None:
    """Pool initializer: load Django, tune the connection, run the user's set-up.

    SIGINT is ignored in worker processes: on Ctrl-C the parent decides what
    happens (let in-flight chunks finish, then stop), so a chunk is never cut
    in half by the terminal's signal reaching the whole process group.
    Errors are stored, not raised, and reported by :func:`ping`, so the
    parent can show the real message instead of a BrokenProcessPool.
    """
    global _setup_error, _setup_seconds
    start = time.perf_counter()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        from bulkpar.django_setup import add_pythonpath, setup_django

        add_pythonpath([p for p in pythonpath if os.path.isdir(p)])
        if settings:
            setup_django(settings)
        tune_connections(database)
        run_setup(setup)
    except BaseException as exc:
        _setup_error = f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"
    _setup_seconds = time.perf_counter() - start


def run_setup(setup: str | None) -> None:
    """Run the user's per-worker set-up callable (``--setup module:callable``)."""
    if setup:
        from bulkpar.django_setup import import_callable

        import_callable(setup, what="--setup")()


def ping() -> WorkerInfo:
    """Report this worker's pid and set-up outcome (the runner's warm-up task)."""
    return WorkerInfo(pid=os.getpid(), setup_seconds=_setup_seconds, error=_setup_error)


def tune_connections(database: str) -> None:
    """Per-backend connection settings for concurrent bulk writers.

    SQLite: writers take the write lock when their transaction begins
    (``BEGIN IMMEDIATE``) and wait for it (``busy_timeout``). With the default
    deferred transactions, two workers that both read first and then write
    deadlock, and SQLite answers "database is locked" at once instead of
    waiting.
    """
    from django.db import connections
    from django.db.backends.signals import connection_created

    connection = connections[database]
    if connection.vendor != "sqlite":
        return

    def on_connect(sender: Any, connection: Any, **kwargs: Any) -> None:
        if connection.alias == database and connection.vendor == "sqlite":
            connection.connection.execute("PRAGMA busy_timeout = 60000")
            use_immediate_transactions(connection)

    connection_created.connect(on_connect, weak=False, dispatch_uid=f"bulkpar-{database}")
    if connection.connection is not None:
        on_connect(None, connection)


def use_immediate_transactions(connection: Any) -> None:
    """Make Django's SQLite atomic blocks start with ``BEGIN IMMEDIATE``."""
    if hasattr(connection, "transaction_mode"):  # Django >= 5.1
        connection.transaction_mode = "IMMEDIATE"
        return

    def begin_immediate() -> None:  # Django 4.2
        connection.cursor().execute("BEGIN IMMEDIATE")

    connection._start_transaction_under_autocommit = begin_immediate


def run_chunk(job: Any, chunk: Any, retries: int, close_after: bool = False) -> ChunkResult:
    """Run one chunk of ``job`` and describe the outcome.

    The job opens its transaction with the ``atomic`` factory it is given:
    a chunk's writes always commit or roll back together.

    Transient errors roll the transaction back and retry the chunk (up to
    ``retries`` times, exponential backoff with jitter, a fresh connection
    when the old one broke). Any other error rolls the chunk back and is
    returned as a failed ChunkResult carrying the worker's traceback.
    """
    from django.db import connections, transaction

    connection = connections[job.database]

    def atomic() -> Any:
        return transaction.atomic(using=job.database)

    start = time.perf_counter()
    attempt = 0
    try:
        while True:
            phases: dict[str, float] = {}
            try:
                counts = job.execute(chunk, phases, atomic)
                return ChunkResult(
                    index=chunk.index,
                    label=chunk.label,
                    seconds=time.perf_counter() - start,
                    phases=phases,
                    retries=attempt,
                    worker=os.getpid(),
                    **counts,
                )
            except Exception as exc:
                if attempt < retries and is_transient(exc):
                    attempt += 1
                    connection.close_if_unusable_or_obsolete()  # reconnect if it broke
                    time.sleep(min(0.05 * 2**attempt, 2.0) * random.uniform(0.5, 1.5))
                    continue
                row = exc.row if isinstance(exc, RowError) else None
                cause = exc.error if isinstance(exc, RowError) else exc
                return ChunkResult(
                    index=chunk.index,
                    label=chunk.label,
                    rows=_failed_rows(job, chunk),
                    seconds=time.perf_counter() - start,
                    phases=phases,
                    retries=attempt,
                    error=f"{type(cause).__name__}: {cause}"
                    + (f" (row pk={row!r})" if row is not None else ""),
                    traceback="".join(traceback.format_exception(cause)),
                    row=row,
                    worker=os.getpid(),
                )
    finally:
        if close_after:
            connection.close()


def _failed_rows(job: Any, chunk: Any) -> int:
    """Rows a rolled-back chunk held, so the report still reconciles."""
    try:
        return int(job.chunk_rows(chunk))
    except Exception:  # the database may be what failed; the count is best effort
        return 0
