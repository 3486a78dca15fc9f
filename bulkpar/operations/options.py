"""The options every operation shares, and what a checked operation hands the runner.

:class:`RunSpec` packs how a run is cut, scheduled and recorded (chunk size,
workers, executor, retries, error policy, rejects, dry run, checkpoint,
progress) into one frozen value; an operation's spec (``UpdateSpec``,
``LoadSpec``, ``SaveSpec``) holds one, and its ``validate()`` returns a
:class:`CheckedOperation`: the job, the runner's options, the workers'
target, the checkpoint fingerprint and the planner of the chunks.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bulkpar.engine.checkpoint import Checkpoint
from bulkpar.engine.contracts import EXECUTORS, ExecutorKind, Job, RunOptions, Target
from bulkpar.engine.runner import Plan, ProgressSink
from bulkpar.errors import UsageError

ON_ERROR = ("abort", "skip", "bisect")


@dataclass(frozen=True)
class RunSpec:
    """How a run is cut, scheduled and recorded; shared by every operation.

    Attributes:
        chunk: rows (or records) per chunk and per transaction.
        workers: parallel workers (None: the CPUs available).
        executor: ``auto`` (a process pool, except for a job of at most two
            chunks, which runs in this process), ``process`` (always a pool),
            ``thread`` or ``serial``.
        start_method: multiprocessing start method (process executor).
        database: the alias to write to (None: the queryset's or the router's).
        retries: retries of a chunk after a transient error.
        on_error: ``abort``, ``skip`` or ``bisect``.
        rejects: JSON Lines file for rejected rows.
        max_rejects: rejected rows allowed with ``report.ok`` still True.
        dry_run: roll every transaction back.
        checkpoint: journal file of committed chunks (resume).
        progress: True for a tqdm bar, False for none, or a ProgressSink.
    """

    chunk: int = 1000
    workers: int | None = None
    executor: str = "auto"
    start_method: str | None = None
    database: str | None = None
    retries: int = 5
    on_error: str = "abort"
    rejects: str | None = None
    max_rejects: int | None = None
    dry_run: bool = False
    checkpoint: str | None = None
    progress: bool | ProgressSink = False

    def validate(self) -> RunOptions:
        """Check every option once; return the runner's options (workers resolved).

        Raises:
            UsageError: naming the option and its allowed values.
        """
        import multiprocessing

        from bulkpar.engine.executors import cpu_count

        if self.chunk < 1:
            raise UsageError(f"chunk must be at least 1 (got {self.chunk})")
        if self.executor not in EXECUTORS:
            raise UsageError(
                f"unknown executor {self.executor!r}: use one of {', '.join(EXECUTORS)}"
            )
        workers = cpu_count() if self.workers is None else self.workers
        if workers < 1:
            raise UsageError(f"workers must be at least 1 (got {workers})")
        methods = multiprocessing.get_all_start_methods()
        if self.start_method is not None and self.start_method not in methods:
            raise UsageError(
                f"unknown start method {self.start_method!r}: this platform offers "
                f"{', '.join(methods)}"
            )
        if self.retries < 0:
            raise UsageError(f"retries must be 0 or more (got {self.retries})")
        if self.on_error not in ON_ERROR:
            raise UsageError(
                f"on_error must be 'abort', 'skip' or 'bisect' (got {self.on_error!r})"
            )
        if self.max_rejects is not None and self.max_rejects < 0:
            raise UsageError(f"max_rejects must be 0 or more (got {self.max_rejects})")
        if self.checkpoint is not None and self.dry_run:
            raise UsageError("--dry-run writes nothing, so it takes no --checkpoint")
        return RunOptions(
            workers=workers,
            executor=ExecutorKind(self.executor),
            start_method=self.start_method,
            retries=self.retries,
            on_error=self.on_error,  # type: ignore[arg-type]
            rejects=self.rejects,
            max_rejects=self.max_rejects,
            dry_run=self.dry_run,
        )

    def progress_sink(self) -> ProgressSink | None:
        """The sink of progress events (tqdm is imported only for ``progress=True``)."""
        if self.progress is True:
            from bulkpar.cli.progress import TqdmProgress

            return TqdmProgress()
        if self.progress is False:
            return None
        return self.progress


def target(options: RunOptions, database: str, setup: str | None = None) -> Target:
    """Where workers find the project (the process executor needs a settings module)."""
    from bulkpar.engine.executors import backend

    if backend(options.executor).needs_settings_module:
        return Target.current(database, setup)
    return Target(settings="", pythonpath=(), database=database, setup=setup)


def resume_point(checkpoint: Checkpoint | None) -> tuple[list[tuple[Any, Any]], int]:
    """Committed key ranges to skip, and the index of the first new chunk."""
    if checkpoint is None:
        return [], 0
    return checkpoint.done_ranges(), max(checkpoint.done_indexes(), default=-1) + 1


@dataclass(frozen=True)
class CheckedOperation:
    """An operation whose options passed every check: what the runner needs.

    Attributes:
        job: the frozen job the workers execute chunk by chunk.
        options: the runner's options.
        target: where workers find the project.
        fingerprint: what identifies the job for a checkpoint journal.
        planner: the chunks and totals, given the opened journal (or None);
            called once, after the journal is opened.
        checkpoint: the journal's path (None: no resuming).
        input_name: how the input is named in checkpoint messages.
        notes: lines the report shows (e.g. what a dry run cannot roll back).
        session: entered around the whole run, planning included (delete's
            archive: collect what a stopped run committed before, and what
            this run commits after).
    """

    job: Job
    options: RunOptions
    target: Target
    fingerprint: dict[str, Any]
    planner: Callable[[Checkpoint | None], Plan]
    checkpoint: str | None = None
    input_name: str = "the input"
    notes: tuple[str, ...] = ()
    session: Callable[[], contextlib.AbstractContextManager[None]] = contextlib.nullcontext

    def plan(self) -> Plan:
        """Open the checkpoint journal (if any) and plan the chunks it has not committed."""
        journal = None
        if self.checkpoint is not None:
            journal = Checkpoint(self.checkpoint, self.fingerprint, self.input_name)
        return self.planner(journal)
