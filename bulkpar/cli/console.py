"""Terminal rendering for the CLI: the live progress bar and the final report (rich).

Only the command-line layer imports this module; the library reports progress
as data through :class:`bulkpar.engine.runner.ProgressSink`.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from bulkpar.report import ChunkResult, Report, group_errors


class CountColumn(ProgressColumn):
    """``12,000/50,000 rows``, or ``3.1/12.0 MB`` of an input file."""

    def render(self, task: Task) -> Text:
        total = "?" if task.total is None else None
        if task.fields.get("unit") == "bytes":
            done = f"{task.completed / 1e6:,.1f}"
            size = total or f"{(task.total or 0) / 1e6:,.1f}"
            return Text(f"{done}/{size} MB", style="progress.download")
        size = total or f"{int(task.total or 0):,}"
        return Text(f"{int(task.completed):,}/{size} rows", style="progress.download")


class RowsPerSecondColumn(ProgressColumn):
    """Rows per second (for file inputs: rows written so far over elapsed time)."""

    def render(self, task: Task) -> Text:
        if task.fields.get("unit") == "bytes":
            elapsed = task.elapsed or 0.0
            speed = task.fields.get("rows", 0) / elapsed if elapsed else None
        else:
            speed = task.finished_speed or task.speed
        if not speed:
            return Text("- rows/s", style="progress.data.speed")
        return Text(f"{speed:,.0f} rows/s", style="progress.data.speed")


class RichProgress:
    """A :class:`~bulkpar.engine.runner.ProgressSink` that draws a live bar on stderr."""

    def __init__(self, console: Console) -> None:
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(bar_width=24),
            CountColumn(),
            RowsPerSecondColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[status]}"),
            console=console,
            transient=False,
        )
        self._task: Any = None
        self._failed = 0
        self._rows = 0
        self._unit = "rows"

    def start(self, total: int | None, description: str, unit: str) -> None:
        self._unit = unit
        self._progress.start()
        self._task = self._progress.add_task(description, total=total, status="", unit=unit, rows=0)

    def advance(self, result: ChunkResult, position: int | None) -> None:
        self._rows += result.rows
        if result.failed:
            self._failed += 1
        status = f"{self._rows:,} rows" if self._unit == "bytes" else ""
        if self._failed:
            status += f" [red]{self._failed} chunk(s) failed"
        if self._unit == "bytes":
            if position is not None:
                self._progress.update(self._task, completed=position)
            self._progress.update(self._task, status=status, rows=self._rows)
        else:
            self._progress.update(self._task, advance=result.rows, status=status)

    def notice(self, message: str) -> None:
        self._progress.console.print(f"\n{message}", markup=False, highlight=False)

    def close(self) -> None:
        self._progress.stop()


class ConsoleNotices:
    """A :class:`~bulkpar.engine.runner.ProgressSink` that draws no bar, only notices.

    For runs without a live bar (``--quiet``, stderr not a terminal): an
    interrupt is still acknowledged on stderr.
    """

    def __init__(self, console: Console) -> None:
        self._console = console

    def start(self, total: int | None, description: str, unit: str) -> None:
        pass

    def advance(self, result: ChunkResult, position: int | None) -> None:
        pass

    def notice(self, message: str) -> None:
        self._console.print(f"\n{message}", markup=False, highlight=False, soft_wrap=True)

    def close(self) -> None:
        pass


def _count(value: int) -> str:
    return f"{value:,}"


#: Past participle and dry-run verb of each count: a dry run says what it would have done.
_DONE = {
    "written": ("written", "would write"),
    "created": ("created", "would create"),
    "updated": ("updated", "would update"),
    "saved": ("saved", "would save"),
    "deleted": ("deleted", "would delete"),
}
#: How many failed chunks' labels are listed under one error.
_LABELS_SHOWN = 5


def _done(report: Report, name: str) -> str:
    """The count's name in the equation: ``written``, or ``would write`` in a dry run."""
    if report.operation == "save" and name == "written":
        name = "saved"
    if report.operation == "delete" and name == "written":
        name = "deleted"
    plain, dry = _DONE.get(name, (name, name))
    return dry if report.dry_run else plain


def _label(report: Report, unit: str, name: str) -> str:
    """The count's table label: ``rows written``, or ``rows that would be written``."""
    plain = _DONE[name][0]
    return f"{unit} that would be {plain}" if report.dry_run else f"{unit} {plain}"


def noun(report: Report, count: int = 2) -> str:
    """What the operation's units are called: rows (updates), objects (saves), records."""
    plural = {"update": "rows", "delete": "rows", "save": "objects"}.get(
        report.operation, "records"
    )
    return plural[:-1] if count == 1 else plural


def _total_label(report: Report) -> str:
    if report.input_rows is not None:
        return "records read"
    return "objects selected" if report.operation == "save" else "rows matched"


def _count_rows(report: Report) -> list[tuple[str, str]]:
    """The table's count rows, by operation."""
    rows: list[tuple[str, str]] = [(_total_label(report), _count(report.total))]
    if report.operation == "save":
        rows += [
            (_label(report, "objects", "saved"), _count(report.written)),
            (
                "  of which "
                + ("would create / update" if report.dry_run else "created / updated"),
                f"{report.created:,} / {report.updated:,}",
            ),
        ]
        if report.skipped:
            rows.append(("objects skipped by the function", _count(report.skipped)))
    elif report.operation == "delete":
        rows.append((_label(report, "rows", "deleted"), _count(report.written)))
        for label, count in sorted(report.deleted.items()):
            rows.append((f"  {label}", _count(count)))
        if report.skipped:
            rows.append(("rows already gone", _count(report.skipped)))
    elif report.operation == "update":
        rows.append((_label(report, "rows", "written"), _count(report.written)))
        rows.append(("rows unchanged", _count(report.unchanged)))
        if report.skipped:
            rows.append(("rows skipped by the function", _count(report.skipped)))
    else:
        for name in ("created", "updated"):
            rows.append((_label(report, "rows", name), _count(getattr(report, name))))
        for name in ("unchanged", "skipped"):
            if getattr(report, name):
                rows.append((f"rows {name}", _count(getattr(report, name))))
        if report.duplicates:
            rows.append(("duplicate keys in input (last one won)", _count(report.duplicates)))
    if report.rejected or report.input_rows is not None:
        rows.append((f"{noun(report)} rejected", _count(report.rejected)))
    if report.failed_rows:
        rows.append((f"{noun(report)} in failed chunks (rolled back)", _count(report.failed_rows)))
    if report.not_attempted:
        rows.append((f"{noun(report)} not attempted", _count(report.not_attempted)))
    return rows


def _reconciliation_line(report: Report) -> Text:
    """``rows matched 30 = written 30 + … ✓``: the equation the counts satisfy."""
    always = {"written", "created"} | ({"updated"} if report.operation == "upsert" else set())
    names = {"failed_rows": "failed", "not_attempted": "not attempted"}
    parts = [
        f"{names.get(name) or _done(report, name)} {value:,}"
        for name, value in report.reconciliation()
        if value or name in always
    ]
    line = Text(f"{_total_label(report)} {report.total:,} = {' + '.join(parts)} ")
    if report.reconciles and report.inexact:
        line.append("≈ (the split is estimated: see the notes)", style="yellow")
    elif report.reconciles:
        line.append("✓", style="green")
    else:
        line.append("✗ does not add up", style="red")
    return line


def _render_rejects(report: Report, console: Console) -> None:
    """The total, the first few rejects with their reason, and where the rest are."""
    if not report.rejected:
        return
    shown = report.reject_samples
    head = f"{report.rejected:,} {noun(report, report.rejected)} rejected"
    if shown:
        head += ":" if len(shown) == report.rejected else f"; the first {len(shown)}:"
    console.print(
        Text(head, style="red" if not report.rejects_allowed else "yellow"), soft_wrap=True
    )
    for sample in shown:
        where = f"line {sample.line}" if sample.line is not None else f"pk {sample.pk!r}"
        if sample.field:
            where += f", field {sample.field}"
        reason = sample.error.splitlines()[0] if sample.error else ""
        console.print(Text(f"  {where}: {reason}"), soft_wrap=True)
    rest = report.rejected - len(shown)
    if report.rejects_file:
        more = f"and {rest:,} more " if rest > 0 else "all "
        console.print(Text(f"{more}in {report.rejects_file}"), soft_wrap=True)
    elif rest > 0:
        console.print(
            Text(f"and {rest:,} more (write them all to a file with --rejects FILE)"),
            soft_wrap=True,
        )


def _render_errors(report: Report, console: Console) -> None:
    """Each distinct error once, with one traceback; the other chunks as a count."""
    for group in group_errors(report.errors):
        first, others = group.chunks[0], group.chunks[1:]
        line = Text(f"chunk {first.chunk} ({first.label}) failed: ", style="red")
        line.append(first.error, style="")
        console.print(line, soft_wrap=True)
        if first.traceback:
            console.print(Text(first.traceback.rstrip(), style="dim"), soft_wrap=True)
        if others:
            labels = ", ".join(f"{e.chunk} ({e.label})" for e in others[:_LABELS_SHOWN])
            if len(others) > _LABELS_SHOWN:
                labels += ", …"
            plural = "chunk" if len(others) == 1 else "chunks"
            console.print(
                Text(
                    f"and {len(others):,} more {plural} failed with the same error: {labels}",
                    style="red",
                ),
                soft_wrap=True,
            )


def render_report(report: Report, console: Console) -> None:
    """Print the human form of a report: counts, timing, rejects, failures, notes."""
    title = f"bulkpar {report.operation} {report.model}"
    if report.dry_run:
        title += " — DRY RUN, nothing was written"
    if report.interrupted:
        title += " — INTERRUPTED"
    elif report.failed_chunks or report.stopped or not report.reconciles:
        title += " — FAILED"
    elif not report.rejects_allowed:
        title += f" — {report.rejected:,} {noun(report, report.rejected).upper()} REJECTED"
    table = Table(show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column(justify="right")
    rows = _count_rows(report)
    rows += [
        ("chunks done / failed", f"{report.chunks:,} / {report.failed_chunks:,}"),
        ("wall seconds", f"{report.seconds:.2f} (pool start-up {report.startup_seconds:.2f})"),
        ("rows per second", f"{report.rows_per_second:,.0f}"),
        (
            "chunk seconds p50 / p95 / max",
            " / ".join(f"{report.chunk_seconds.get(k, 0):.3f}" for k in ("p50", "p95", "max")),
        ),
        (
            "workers / executor",
            f"{report.workers} / {report.executor}"
            + (f" ({report.start_method})" if report.start_method else ""),
        ),
        ("database / method", f"{report.vendor} ({report.database}) / {report.method}"),
    ]
    if report.retries:
        rows.append(("transient errors retried", _count(report.retries)))
    if report.workers_lost:
        rows.append(("worker processes lost and replaced", _count(report.workers_lost)))
    if report.resumed_chunks:
        rows.append(
            ("resumed: chunks done by an earlier run",
             f"{report.resumed_chunks:,} ({report.resumed_rows:,} rows)")
        )  # fmt: skip
    for label, value in rows:
        table.add_row(label, value)
    console.print(Text(title, style="bold"), soft_wrap=True)  # whole, however wide the table
    console.print(table)
    console.print(_reconciliation_line(report), soft_wrap=True)
    _render_rejects(report, console)
    _render_errors(report, console)
    if report.stopped:
        console.print(Text.assemble(("stopped: ", "red"), report.stopped))
    if report.interrupted and report.checkpoint:
        console.print(
            f"run the same command again to resume from the checkpoint {report.checkpoint}"
        )
    for note in report.notes:
        console.print(f"[yellow]note:[/yellow] {note}")


def render_bench(result: Any, console: Console) -> None:
    """The bench table: one row per setting, the fastest highlighted, and the advice."""
    machine = result.machine
    console.print(
        f"[bold]bulkpar bench {result.operation}[/bold] — {machine['cpus']} CPUs "
        f"({machine['cpu_model']}), Python {machine['python']}, Django {machine['django']}, "
        f"{machine['database']}" + ("" if result.committed else " — dry runs, nothing kept"),
        highlight=False,
    )
    timed = [r for r in result.summary if r["median_seconds"] is not None and not r["failed"]]
    fastest = min(timed, key=lambda r: r["median_seconds"]) if timed else None
    table = Table(show_lines=False)
    columns = ("workers", "chunk", "method", "executor", "median s", "min–max s", "rows/s",
               "speed-up", "peak MB")  # fmt: skip
    for column in columns:
        table.add_column(column, justify="left" if column in ("method", "executor") else "right")
    for row in result.summary:
        combo = row["combo"]
        setting = [
            str(combo["workers"]),
            str(combo["chunk"]),
            combo["method"] or "-",
            combo["executor"] + (" (reference)" if row["reference"] else ""),
        ]
        if row["median_seconds"] is None:
            table.add_row(*setting, "failed", "", "", "", "", style="red")
            continue
        table.add_row(
            *setting,
            f"{row['median_seconds']:.3f}",
            f"{row['min_seconds']:.3f}–{row['max_seconds']:.3f}",
            f"{row['rows_per_second']:,.0f}",
            f"{row['speedup']:.2f}×" if row["speedup"] else "",
            f"{row['peak_rss_mb']:.0f}",
            style="bold green" if row is fastest else None,
        )
    console.print(table)
    console.print(result.recommendation, highlight=False)
