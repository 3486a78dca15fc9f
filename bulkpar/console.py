"""Terminal rendering for the CLI: the live progress bar and the final report (rich).

Only the command-line layer imports this module; the library reports progress
as data through :class:`bulkpar.runner.ProgressSink`.
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

from bulkpar.report import ChunkResult, Report


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
    """A :class:`~bulkpar.runner.ProgressSink` that draws a live bar on stderr."""

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

    def close(self) -> None:
        self._progress.stop()


def _count(value: int) -> str:
    return f"{value:,}"


def render_report(report: Report, console: Console) -> None:
    """Print the human form of a report: counts, timing, failures, notes."""
    title = f"bulkpar {report.operation} {report.model}"
    if report.dry_run:
        title += " — DRY RUN, nothing was written"
    if report.interrupted:
        title += " — INTERRUPTED"
    elif not report.ok:
        title += " — FAILED"
    table = Table(title=title, show_header=False, title_justify="left", box=None)
    table.add_column(style="bold")
    table.add_column(justify="right")
    if report.operation == "save":
        rows: list[tuple[str, str]] = [
            ("records read" if report.input_rows is not None else "objects selected",
             _count(report.input_rows if report.input_rows is not None else report.matched)),
            ("objects saved", _count(report.written)),
            ("  of which created / updated", f"{report.created:,} / {report.updated:,}"),
            ("objects rejected", _count(report.rejected)),
        ]  # fmt: skip
        if report.skipped:
            rows.append(("objects skipped by the function", _count(report.skipped)))
    elif report.input_rows is not None:
        rows = [("records read", _count(report.input_rows))]
        rows += [
            (f"rows {name}", _count(getattr(report, name)))
            for name in ("created", "updated", "unchanged", "skipped")
            if getattr(report, name) or name in ("created", "updated")
        ]
        rows.append(("records rejected", _count(report.rejected)))
        if report.duplicates:
            rows.append(("duplicate keys in input (last one won)", _count(report.duplicates)))
    else:
        rows = [("rows matched", _count(report.matched))]
    if report.operation == "update":
        rows += [
            ("rows written", _count(report.written)),
            ("rows unchanged", _count(report.unchanged)),
        ]
        if report.skipped:
            rows.append(("rows skipped by the function", _count(report.skipped)))
    if report.failed_rows:
        rows.append(("rows in failed chunks (rolled back)", _count(report.failed_rows)))
    if report.not_attempted:
        rows.append(("rows not attempted", _count(report.not_attempted)))
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
    console.print(table)
    for error in report.errors:
        console.print(f"[red]chunk {error.chunk} ({error.label}) failed:[/red] {error.error}")
        if error.traceback:
            console.print(Text(error.traceback.rstrip(), style="dim"))
    if report.input_rows is not None and report.operation != "save":
        parts = [
            f"{name} {getattr(report, name):,}"
            for name in ("created", "updated", "unchanged", "skipped", "rejected", "duplicates")
        ] + [f"failed {report.failed_rows:,}"]
        mark = "[green]✓[/green]" if report.reconciles else "[red]✗ does not add up[/red]"
        console.print(f"records read {report.input_rows:,} = {' + '.join(parts)} {mark}")
    if report.rejects_file and report.rejected:
        console.print(f"rejected records written to {report.rejects_file}")
    if report.stopped:
        console.print(f"[red]stopped:[/red] {report.stopped}")
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
