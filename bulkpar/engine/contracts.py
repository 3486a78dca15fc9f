"""The frozen descriptions that cross process boundaries.

A :class:`Target` tells a worker how to load the user's Django project; an
operation's job (for example :class:`bulkpar.operations.update.UpdateJob`)
tells it what to do with one chunk; :class:`RunOptions` tells the runner how to
schedule the chunks. All hold plain values only, so they pickle in bytes under
every multiprocessing start method.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from bulkpar.report import ChunkCounts

Executor = Literal["process", "thread", "serial"]
EXECUTORS: tuple[str, ...] = ("process", "thread", "serial")
OnError = Literal["abort", "skip", "bisect"]


@dataclass(frozen=True)
class Target:
    """Where a worker finds the project: settings module, import path, database alias.

    ``setup`` is an optional ``module:callable`` run once in every worker after
    ``django.setup()`` (warming caches, connecting clients). ``environ`` is the
    parent's environment when the run started: a forkserver started by an
    earlier run would otherwise hand workers the environment of *that* time.
    """

    settings: str
    pythonpath: tuple[str, ...]
    database: str
    setup: str | None = None
    environ: tuple[tuple[str, str], ...] = ()

    @classmethod
    def current(cls, database: str, setup: str | None = None) -> Target:
        """The project this process has loaded, for workers to load too.

        Raises:
            bulkpar.errors.SettingsError: Django was configured without a
                settings module (``settings.configure()``), which a fresh
                worker process cannot repeat.
        """
        from bulkpar.errors import SettingsError

        module = os.environ.get("DJANGO_SETTINGS_MODULE")
        if not module:
            raise SettingsError(
                "worker processes need a settings module: set DJANGO_SETTINGS_MODULE "
                "(settings.configure() cannot be repeated in a worker), or use "
                "executor='thread' or 'serial'"
            )
        return cls(
            settings=module,
            pythonpath=tuple(p for p in sys.path if p),
            database=database,
            setup=setup,
            environ=tuple(os.environ.items()),
        )


@dataclass(frozen=True)
class RunOptions:
    """How the runner schedules chunks.

    Attributes:
        workers: worker processes (or threads); ``serial`` always uses one.
        executor: ``process`` (default), ``thread`` or ``serial``.
        start_method: multiprocessing start method for ``process``; None picks
            bulkpar's default (see :func:`bulkpar.engine.executors.default_start_method`).
        retries: how often a chunk that hit a transient error (deadlock, lock
            timeout, dropped connection, SQLite busy) is retried.
        on_error: ``abort`` stops scheduling after a failed chunk;
            ``skip`` records it and goes on; ``bisect`` splits a failing
            chunk until its bad rows are isolated, commits the rest, and
            rejects the bad rows.
        in_flight_per_worker: chunks queued per worker; bounds memory.
        rejects: JSON Lines file that receives rejected records.
        max_rejects: stop scheduling once more records than this are rejected.
        dry_run: roll back every transaction; report what would have been written.
    """

    workers: int = 1
    executor: Executor = "process"
    start_method: str | None = None
    retries: int = 5
    on_error: OnError = "abort"
    in_flight_per_worker: int = 2
    rejects: str | None = None
    max_rejects: int | None = None
    dry_run: bool = False


class Job(Protocol):
    """An operation's description, executed chunk by chunk in workers."""

    @property
    def operation(self) -> str: ...

    @property
    def model(self) -> str: ...

    @property
    def database(self) -> str: ...

    @property
    def method(self) -> str: ...

    def chunk_rows(self, chunk: Any) -> int: ...

    def execute(
        self, chunk: Any, phases: dict[str, float], atomic: Callable[[], Any]
    ) -> ChunkCounts: ...
