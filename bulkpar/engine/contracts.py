"""The frozen descriptions that cross process boundaries.

A :class:`Target` tells a worker how to load the user's Django project; an
operation's job (for example :class:`bulkpar.operations.update.UpdateJob`)
tells it what to do with one chunk; :class:`RunOptions` tells the runner how to
schedule the chunks. All hold plain values only, so they pickle in bytes under
every multiprocessing start method.
"""

from __future__ import annotations

import enum
import os
import sys
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar

from bulkpar.report import ChunkCounts

if TYPE_CHECKING:
    from bulkpar.inputs.conversion import Reject


class ExecutorKind(str, enum.Enum):
    """The executor backends (see :mod:`bulkpar.engine.executors`), checked once into this."""

    AUTO = "auto"
    PROCESS = "process"
    THREAD = "thread"
    SERIAL = "serial"


EXECUTORS: tuple[str, ...] = tuple(kind.value for kind in ExecutorKind)
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
        executor: ``auto`` (default: a process pool, but a job of at most two
            chunks runs in this process), ``process`` (always a pool),
            ``thread`` or ``serial``.
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
    executor: ExecutorKind = ExecutorKind.AUTO
    start_method: str | None = None
    retries: int = 5
    on_error: OnError = "abort"
    in_flight_per_worker: int = 2
    rejects: str | None = None
    max_rejects: int | None = None
    dry_run: bool = False


@dataclass(frozen=True)
class ChunkMark:
    """How a checkpoint journal recognises a committed chunk when a run resumes.

    Attributes:
        lo, hi: a primary-key range chunk's ``(lo, hi]``: a resume plans only
            the gaps between committed ranges.
        digest: an input batch's records digest
            (:func:`bulkpar.engine.checkpoint.records_digest`): a resume checks
            that the input still holds the same records.
    """

    lo: Any = None
    hi: Any = None
    digest: str | None = None


class Chunk(Protocol):
    """One unit of work and of commit, as the runner and the checkpoint see it.

    A chunk is a frozen descriptor of plain values (a primary-key range, a
    batch of input records): it travels to a worker with the job, which alone
    knows what the chunk covers. :class:`bulkpar.operations.update.PkRange` and
    :class:`bulkpar.operations.load.RowBatch` are the two kinds.

    Attributes:
        index: position in the plan (0-based); the same chunk has the same
            index on every run of the same job (the checkpoint keys on it).
        label: what the chunk covers, for humans (``pk in (1000, 2000]``).
        size: input records the chunk holds, counted as records read when it
            is planned; 0 for a key range, whose rows are counted when it runs.
        position: bytes of the input read when the chunk was cut (drives a
            progress bar in bytes); None when not known.
        partition: the key partition its records belong to: the runner runs a
            partition's chunks one at a time, in index order. None: the chunk
            may run alongside any other.
    """

    @property
    def index(self) -> int: ...

    @property
    def label(self) -> str: ...

    @property
    def size(self) -> int: ...

    @property
    def position(self) -> int | None: ...

    @property
    def partition(self) -> int | None: ...

    def mark(self) -> ChunkMark:
        """What the checkpoint journals about this chunk once it committed."""
        ...


ChunkT = TypeVar("ChunkT", bound=Chunk)


class Job(Protocol[ChunkT]):
    """An operation's description, executed chunk by chunk in workers.

    A job is frozen and picklable; its chunks (``ChunkT``) come from the
    operation's plan. Every method but the properties runs in a worker, except
    ``chunk_rows``, which the runner may also call for a chunk whose workers died.
    """

    @property
    def operation(self) -> str: ...

    @property
    def model(self) -> str: ...

    @property
    def database(self) -> str: ...

    @property
    def method(self) -> str: ...

    def chunk_rows(self, chunk: ChunkT) -> int:
        """Rows ``chunk`` holds, for reporting a failed chunk (may query the database)."""
        ...

    def execute(
        self,
        chunk: ChunkT,
        phases: dict[str, float],
        atomic: Callable[[], AbstractContextManager[None]],
    ) -> ChunkCounts:
        """Run ``chunk``, its writes inside ``atomic()``; fill ``phases`` with seconds per phase.

        Raises whatever the database or the user's code raised; the worker
        retries transient errors and turns the others into a failed chunk.
        """
        ...

    def split(self, chunk: ChunkT) -> list[ChunkT] | None:
        """Parts of a failing ``chunk`` for ``--on-error bisect``; None when it cannot split."""
        ...

    def reject(self, chunk: ChunkT, error: BaseException) -> list[Reject] | None:
        """The rejects of a chunk that cannot split and failed with ``error``; None: fail it."""
        ...
