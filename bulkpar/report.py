"""What a chunk did (:class:`ChunkResult`) and what a run did (:class:`Report`).

Both are plain data: workers return ChunkResults across the process
boundary, the runner folds them into a Report, and the CLI renders it. The
counts always reconcile: every selected or input row is written, unchanged,
skipped, rejected, or lies in a failed or not-attempted chunk (see
:meth:`Report.reconciliation` for the equation of each operation).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bulkpar.inputs.conversion import Reject

#: How many rejected records a report keeps as examples (the reject file has them all).
REJECT_SAMPLES = 5


@dataclass(frozen=True, kw_only=True)
class RowCounts:
    """The row counters a chunk and a run both carry: the one place they are named.

    Attributes:
        matched: rows selected (updates, saves of a queryset).
        written: rows changed in the database.
        unchanged: rows selected (or records read) but not written because nothing changed.
        skipped: rows the transform declined (returned False) or conflicts skipped.
        created, updated: rows inserted, and existing rows changed (loads, saves).
        rejected: rows or records that could not be converted or written.
        duplicates: records superseded by a later record with the same key.
    """

    matched: int = 0
    written: int = 0
    unchanged: int = 0
    skipped: int = 0
    created: int = 0
    updated: int = 0
    rejected: int = 0
    duplicates: int = 0


#: Row counters a chunk and a report both carry (the fields of :class:`RowCounts`).
COUNTERS: tuple[str, ...] = tuple(f.name for f in fields(RowCounts))

#: Operations over selected rows whose ``written`` is their own count (not created + updated).
SELECTS = ("update", "delete")


@dataclass(frozen=True, kw_only=True)
class ChunkCounts(RowCounts):
    """What one execution of a chunk did: the return value of ``Job.execute``.

    The counters of :class:`RowCounts`, plus:

    Attributes:
        rows: rows the chunk held (selected or read), committed or not.
        rejects: the rejected records (:class:`bulkpar.inputs.conversion.Reject`),
            ``rejected`` of them.
        inexact: the created/updated/unchanged split is an estimate: another
            writer changed the chunk's keys while it ran (MariaDB/MySQL and
            SQLite count existing keys before writing).
        deleted: rows deleted per model label, cascades included (deletes).
    """

    rows: int = 0
    rejects: tuple[Reject, ...] = ()
    inexact: bool = False
    deleted: dict[str, int] = field(default_factory=dict)

    def __add__(self, other: ChunkCounts) -> ChunkCounts:
        """The counts of two parts of a chunk together (a bisected chunk's halves)."""
        summed = {name: getattr(self, name) + getattr(other, name) for name in _SUMMED}
        return ChunkCounts(
            **summed,
            rejects=self.rejects + other.rejects,
            inexact=self.inexact or other.inexact,
            deleted=_add_per_model(self.deleted, other.deleted),
        )


def _add_per_model(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    return {label: a.get(label, 0) + b.get(label, 0) for label in {**a, **b}}


_SUMMED = (*COUNTERS, "rows")


@dataclass(frozen=True, kw_only=True)
class ChunkResult(ChunkCounts):
    """The outcome of one chunk, as returned by a worker: its counts and how it ran.

    A chunk is the unit of commit: when ``error`` is set its transaction was
    rolled back and none of its counters describe committed rows (``rows``
    still says how many it held).

    Attributes:
        index: position of the chunk in the plan (0-based).
        label: what the chunk covered, for humans (``"pk (1000, 2000]"``).
        seconds: wall time of the chunk inside the worker.
        phases: seconds per phase (``load``, ``transform``, ``write``).
        retries: transient failures retried before the final outcome.
        error: ``"ExceptionClass: message"`` when the chunk failed.
        traceback: the worker-side traceback when the chunk failed.
        row: the key of the row that raised, when one row can be blamed.
        worker: process id of the worker that ran the chunk.

    The counters are those of :class:`ChunkCounts` (``rows``, ``written``, …).
    """

    index: int
    label: str
    seconds: float = 0.0
    phases: dict[str, float] = field(default_factory=dict)
    retries: int = 0
    error: str | None = None
    traceback: str | None = None
    row: Any = None
    worker: int | None = None

    @classmethod
    def of(cls, counts: ChunkCounts, *, index: int, label: str, **how: Any) -> ChunkResult:
        """A committed chunk's result: ``counts`` and how it ran (``seconds``, ``phases`` …)."""
        carried = {f.name: getattr(counts, f.name) for f in fields(ChunkCounts)}
        return cls(index=index, label=label, **carried, **how)

    @property
    def counts(self) -> ChunkCounts:
        """The chunk's counts alone."""
        return ChunkCounts(**{f.name: getattr(self, f.name) for f in fields(ChunkCounts)})

    @property
    def failed(self) -> bool:
        """True when the chunk's transaction was rolled back."""
        return self.error is not None


@dataclass(frozen=True)
class ChunkError:
    """A failed chunk as the report lists it."""

    chunk: int
    label: str
    error: str
    traceback: str | None
    row: Any = None


@dataclass(frozen=True)
class RejectSample:
    """One rejected row or record, as the report shows it (the first few of a run).

    Attributes:
        chunk: the chunk it belonged to.
        line: its line (or item) number in the input; None for rows selected
            from the database.
        pk: its primary key, for rows selected from the database (updates,
            saves of a queryset); None for input records.
        field: the field whose value was refused, when one field is to blame.
        error: ``"ExceptionClass: message"`` or the conversion's message.
    """

    chunk: int
    line: int | None
    pk: Any
    field: str | None
    error: str


@dataclass(frozen=True)
class ErrorGroup:
    """Failed chunks that failed with the same error, for a short human report.

    Attributes:
        error: the first line of the error, without the blamed row.
        chunks: the failed chunks, in plan order; the first one's traceback is
            the one shown.
    """

    error: str
    chunks: tuple[ChunkError, ...]


def group_errors(errors: Iterable[ChunkError]) -> list[ErrorGroup]:
    """Group failed chunks by their error message (first line, blamed row left out).

    Four chunks that hit the same constraint are one error said once, not four
    tracebacks.
    """
    groups: dict[str, list[ChunkError]] = {}
    for error in errors:
        groups.setdefault(_error_key(error.error), []).append(error)
    return [ErrorGroup(key, tuple(chunks)) for key, chunks in groups.items()]


def _error_key(error: str) -> str:
    first = error.splitlines()[0] if error else ""
    return re.sub(r" \(row pk=.*\)$", "", first)


@dataclass(frozen=True)
class Report(RowCounts):
    """What a bulkpar run did, returned by every API call and rendered by the CLI.

    Attributes:
        operation: ``"update"``, ``"create"``, ``"upsert"``, ``"save"`` or ``"delete"``.
        model: ``app_label.ModelName``.
        database: the database alias written to.
        vendor: the database vendor (``postgresql``, ``mysql``, ``sqlite``).
        method: the writer used (``"sql"``, ``"bulk_update"``, …).
        matched: rows selected (updates) when the run was planned.
        written: rows written: changed by an update, created + updated by a
            load, saved by a save, rows of the model deleted by a delete.
        unchanged, skipped, created, updated, rejected: committed row counts.
        duplicates: input records superseded by a later one with the same key.
        input_rows: records read from the input (loads; None for updates).
        failed_rows: rows inside chunks that failed and were rolled back.
        not_attempted: selected rows or records read that no chunk ran
            (after an abort, an interrupt or a stop).
        chunks: chunks completed successfully.
        failed_chunks: chunks rolled back.
        planned_chunks: chunks started (completed + failed).
        workers, executor, start_method: how the work was run; ``executor``
            says what ran (``process``, ``thread``, ``serial``, or ``serial
            (small job)`` when ``auto`` ran a job of at most two chunks in
            this process).
        seconds: wall seconds of the whole run, pool start-up included.
        startup_seconds: seconds from the run's start until its first chunk
            could be sent: starting the workers, while the rows are counted
            and the first chunks planned (in this process, only those).
        rows_per_second: rows processed per wall second.
        chunk_seconds: per-chunk latency ``{"p50", "p95", "max"}``.
        phase_seconds: total worker seconds per phase.
        retries: transient errors retried.
        interrupted: the run was stopped by the user before finishing.
        dry_run: every transaction was rolled back; the counts say what would
            have been written.
        signal: the signal that interrupted the run (2 SIGINT, 15 SIGTERM).
        stopped: why the run stopped early on its own (e.g. too many rejects).
        workers_lost: worker processes that died and were replaced.
        resumed_chunks, resumed_rows: chunks (and their rows) a previous run
            had committed, skipped thanks to the checkpoint.
        checkpoint: the checkpoint journal in use.
        rejects_file: where rejected records were written.
        max_rejects: rejections the caller allowed (None: none allowed, but
            the run goes on and reports them).
        reject_samples: the first rejected rows or records (at most
            :data:`REJECT_SAMPLES`), in input order; ``rejects_file`` has all.
        errors: the failed chunks, with worker tracebacks.
        inexact: the created/updated/unchanged split of some chunk is an
            estimate (MariaDB, another writer on the same keys); the totals
            still add up, the split may not be exact.
        notes: things the user should know about this run (e.g. SQLite serialises writers).
        deleted: committed deletes per model label, cascades included, as
            ``queryset.delete()`` returns them (deletes; empty otherwise).
    """

    operation: str
    model: str
    database: str = "default"
    vendor: str = ""
    method: str = ""
    input_rows: int | None = None
    failed_rows: int = 0
    not_attempted: int = 0
    chunks: int = 0
    failed_chunks: int = 0
    planned_chunks: int = 0
    workers: int = 1
    executor: str = "process"
    start_method: str | None = None
    seconds: float = 0.0
    startup_seconds: float = 0.0
    rows_per_second: float = 0.0
    chunk_seconds: dict[str, float] = field(default_factory=dict)
    phase_seconds: dict[str, float] = field(default_factory=dict)
    retries: int = 0
    interrupted: bool = False
    signal: int | None = None
    dry_run: bool = False
    stopped: str | None = None
    workers_lost: int = 0
    resumed_chunks: int = 0
    resumed_rows: int = 0
    checkpoint: str | None = None
    rejects_file: str | None = None
    max_rejects: int | None = None
    reject_samples: tuple[RejectSample, ...] = ()
    errors: tuple[ChunkError, ...] = ()
    notes: tuple[str, ...] = ()
    inexact: bool = False
    deleted: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when every record is accounted for and nothing was rejected beyond what was allowed.

        That is: every chunk committed, the run was neither interrupted nor
        stopped, the counts reconcile, and the records rejected (if any) are
        within ``max_rejects``. The CLI exits 0 exactly when this holds.
        """
        return (
            self.failed_chunks == 0
            and not self.interrupted
            and self.stopped is None
            and self.rejects_allowed
            and self.reconciles
        )

    @property
    def rejects_allowed(self) -> bool:
        """True when nothing was rejected, or no more than ``max_rejects``."""
        return self.rejected == 0 or (
            self.max_rejects is not None and self.rejected <= self.max_rejects
        )

    @property
    def total(self) -> int:
        """What the reconciliation accounts for: records read (inputs) or rows selected."""
        return self.input_rows if self.input_rows is not None else self.matched

    def reconciliation(self) -> list[tuple[str, int]]:
        """The terms that add up to :attr:`total`, by operation.

        * update: ``matched = written + unchanged + skipped + rejected +
          failed_rows + not_attempted``
        * create, upsert: ``input_rows = created + updated + unchanged +
          skipped + rejected + duplicates + failed_rows + not_attempted``
        * save: ``input_rows`` (or ``matched``) ``= saved + skipped + rejected
          + failed_rows + not_attempted``
        * delete: ``matched = written + skipped + failed_rows + not_attempted``
          (skipped: rows gone before their chunk ran)
        """
        if self.operation == "update":
            names = ["written", "unchanged", "skipped", "rejected"]
        elif self.operation == "save":
            names = ["written", "skipped", "rejected"]
        elif self.operation == "delete":
            names = ["written", "skipped"]
        else:
            names = ["created", "updated", "unchanged", "skipped", "rejected", "duplicates"]
        terms = [(name, int(getattr(self, name))) for name in names]
        return [*terms, ("failed_rows", self.failed_rows), ("not_attempted", self.not_attempted)]

    @property
    def reconciles(self) -> bool:
        """True when every row is accounted for exactly once and no count is negative.

        The terms of :meth:`reconciliation` add up to :attr:`total`; loads and
        saves also have ``written == created + updated``.
        """
        terms = self.reconciliation()
        counts = [value for _, value in terms]
        counts += [self.total, self.created, self.updated, self.duplicates]
        if any(value < 0 for value in counts):
            return False
        if self.operation not in SELECTS and self.written != self.created + self.updated:
            return False
        return sum(value for _, value in terms) == self.total

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data (the CLI's ``--json`` output)."""
        data = asdict(self)
        # the run's identity first, then its counters (the fields of RowCounts)
        data = {**{k: data[k] for k in ("operation", "model", "database", "vendor", "method")},
                **data}  # fmt: skip
        data["errors"] = [asdict(e) for e in self.errors]
        data["reject_samples"] = [asdict(r) for r in self.reject_samples]
        data["notes"] = list(self.notes)
        data["ok"] = self.ok
        data["rejects_allowed"] = self.rejects_allowed
        data["reconciles"] = self.reconciles
        if self.operation == "save":
            data["saved"] = self.written
        return data


def latency_summary(seconds: Sequence[float]) -> dict[str, float]:
    """p50, p95 and max of chunk latencies (zeros when there are none)."""
    import statistics  # here: every worker imports this module, none needs it

    if not seconds:
        return {"p50": 0.0, "p95": 0.0, "max": 0.0}
    ordered = sorted(seconds)
    if len(ordered) == 1:
        only = round(ordered[0], 6)
        return {"p50": only, "p95": only, "max": only}
    cuts = statistics.quantiles(ordered, n=100, method="inclusive")
    return {
        "p50": round(cuts[49], 6),
        "p95": round(cuts[94], 6),
        "max": round(ordered[-1], 6),
    }


def build_report(
    results: Iterable[ChunkResult],
    *,
    operation: str,
    model: str,
    seconds: float,
    matched: int | None = None,
    **context: Any,
) -> Report:
    """Fold chunk results into a :class:`Report`.

    Args:
        results: every chunk result the run received.
        operation, model: what ran on what.
        seconds: wall time of the run.
        matched: rows selected at planning time; defaults to the rows the
            chunks saw.
        **context: the remaining Report fields (workers, executor, notes …);
            with ``input_rows`` (records read, loads and saves of an input),
            records in no result are ``not_attempted``.
    """
    done = [r for r in results]
    ok = [r for r in done if not r.failed]
    bad = [r for r in done if r.failed]
    totals = {name: sum(getattr(r, name) for r in ok) for name in COUNTERS}
    failed_rows = sum(r.rows for r in bad)
    if matched is None:
        matched = totals["matched"] + failed_rows
    processed = sum(r.rows for r in ok)
    phases: dict[str, float] = {}
    for result in done:
        for phase, value in result.phases.items():
            phases[phase] = round(phases.get(phase, 0.0) + value, 6)
    totals.pop("matched")
    if operation not in SELECTS:
        # loads count created and updated rows; saves already report written
        totals["written"] = totals["created"] + totals["updated"]
    input_rows = context.get("input_rows")
    total = input_rows if input_rows is not None else matched
    samples = sorted(
        ((r.index, position, reject)
         for r in ok
         for position, reject in enumerate(r.rejects[:REJECT_SAMPLES])),
        # input order: records by their line (a partition's chunks interleave with
        # others'), rows of an update by chunk
        key=lambda s: (s[2].line is None, s[2].line or 0, s[0], s[1]),
    )[:REJECT_SAMPLES]  # fmt: skip
    deleted: dict[str, int] = {}
    for result in ok:
        deleted = _add_per_model(deleted, result.deleted)
    return Report(
        operation=operation,
        model=model,
        matched=matched,
        deleted=deleted,
        failed_rows=failed_rows,
        not_attempted=max(total - sum(r.rows for r in done), 0),
        chunks=len(ok),
        failed_chunks=len(bad),
        planned_chunks=len(done),
        seconds=round(seconds, 6),
        rows_per_second=round(processed / seconds, 1) if seconds > 0 else 0.0,
        chunk_seconds=latency_summary([r.seconds for r in done]),
        phase_seconds=phases,
        retries=sum(r.retries for r in done),
        errors=tuple(
            ChunkError(
                chunk=r.index, label=r.label, error=r.error or "", traceback=r.traceback, row=r.row
            )
            for r in sorted(bad, key=lambda r: r.index)
        ),
        reject_samples=tuple(_sample(index, reject) for index, _, reject in samples),
        **totals,
        **context,
    )


def _sample(chunk: int, reject: Reject) -> RejectSample:
    pk = reject.row.get("pk") if reject.line is None and isinstance(reject.row, dict) else None
    return RejectSample(
        chunk=chunk, line=reject.line, pk=pk, field=reject.field, error=str(reject.error)
    )
