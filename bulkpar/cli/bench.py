"""``bulkpar bench``: time an operation over a grid of settings, on the user's own model.

Every combination of workers × chunk size × method × executor runs
``repeat`` times, in an interleaved order (repeat *r* starts the grid at a
different combination), so drift of a noisy machine favours no setting. Each
run is the real ``bulkpar`` command in a fresh process — start-up included,
and its peak memory measured alone — with ``--dry-run`` unless the caller
lets writes stand. The serial Django-method run is always part of the grid
as the reference the speed-ups are measured against.
"""

from __future__ import annotations

# platform, statistics, subprocess and tempfile are imported where they are used:
# every bulkpar command imports this module (for OPERATIONS), only bench runs it
import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from bulkpar.errors import BulkparError, UsageError

OPERATIONS = ("update", "create", "upsert", "save", "delete")
#: Operations without a --method (the grid has one method: None).
NO_METHOD = ("save", "delete")


@dataclass(frozen=True)
class Combo:
    """One setting of the grid."""

    workers: int
    chunk: int
    method: str | None
    executor: str
    reference: bool = False

    def args(self) -> list[str]:
        """The command-line options that select this setting."""
        args = ["--workers", str(self.workers), "--chunk", str(self.chunk)]
        args += ["--executor", self.executor]
        if self.method is not None:
            args += ["--method", self.method]
        return args

    @property
    def label(self) -> str:
        method = f" --method {self.method}" if self.method else ""
        return f"--workers {self.workers} --chunk {self.chunk}{method} --executor {self.executor}"


@dataclass(frozen=True)
class BenchRun:
    """One timed run of one combination."""

    combo: Combo
    repeat: int
    seconds: float
    rows: int
    rows_per_second: float
    peak_rss_mb: float
    ok: bool
    error: str | None = None


@dataclass
class BenchResult:
    """All runs, their summary per combination, and the recommendation."""

    operation: str
    machine: dict[str, Any]
    runs: list[BenchRun] = field(default_factory=list)
    summary: list[dict[str, Any]] = field(default_factory=list)
    recommendation: str = ""
    committed: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "operation": self.operation,
            "machine": self.machine,
            "committed": self.committed,
            "runs": [{**asdict(r), "combo": asdict(r.combo)} for r in self.runs],
            "summary": self.summary,
            "recommendation": self.recommendation,
        }


def parse_list(value: str, option: str, cast: Callable[[str], Any] = str) -> list[Any]:
    """``"1,2,4"`` → ``[1, 2, 4]``, with a clear error naming the option."""
    items = [v.strip() for v in value.split(",") if v.strip()]
    if not items:
        raise UsageError(f"{option} is empty: give one or more values separated by commas")
    try:
        return [cast(v) for v in items]
    except ValueError:
        raise UsageError(f"invalid {option} {value!r}: expected numbers like 1,2,4") from None


def reference_method(operation: str, extra: Sequence[str]) -> str | None:
    """The Django-method writer for the reference run (None where there is no --method)."""
    if operation in NO_METHOD:
        return None
    if operation == "upsert" or "--ignore-conflicts" in extra:
        return "values"  # Django's bulk_create cannot report upsert or skip counts
    return "django"


def grid(
    operation: str,
    extra: Sequence[str],
    workers: Sequence[int],
    chunks: Sequence[int],
    methods: Sequence[str],
    executors: Sequence[str],
) -> list[Combo]:
    """Every combination, with the serial reference first."""
    reference = Combo(1, chunks[0], reference_method(operation, extra), "serial", reference=True)
    combos = [reference]
    for executor in executors:
        for method in methods if operation not in NO_METHOD else [None]:
            for chunk in chunks:
                for count in workers if executor != "serial" else [1]:
                    combo = Combo(count, chunk, method, executor)
                    same = (combo.workers, combo.chunk, combo.method, combo.executor)
                    if (
                        same != (1, reference.chunk, reference.method, "serial")
                        and combo not in combos
                    ):
                        combos.append(combo)
    return combos


def run_bench(
    operation: str,
    extra: Sequence[str],
    *,
    settings: str | None,
    pythonpath: Sequence[str],
    database: str,
    workers: str,
    chunks: str,
    methods: str,
    executors: str,
    repeat: int,
    commit: bool,
    confirm_database: str | None,
    plot_path: str | None = None,
    on_run: Callable[[BenchRun, int, int], None] | None = None,
) -> BenchResult:
    """``bulkpar bench``: check the options, run the grid, plot it if asked.

    Args:
        extra: the options passed on to every ``bulkpar OPERATION`` run.
        workers, chunks, methods, executors: comma-separated lists to try.
        on_run: called after every run with the run, the runs done and the total.

    Raises:
        UsageError: stdin as the input, an empty or invalid list, or ``commit``
            without the database's name in ``confirm_database``.
    """
    from bulkpar.bootstrap import check_database, setup_django

    if "-" in extra:
        raise UsageError("bench runs the input many times: give --input a file, not -")
    forwarded = [*extra, "--database", database]
    if settings:
        forwarded += ["--settings", settings]
    for path in pythonpath:
        forwarded += ["--pythonpath", path]
    setup_django(settings, tuple(pythonpath))
    check_database(database)
    if commit:
        confirm(database, confirm_database)
    combos = grid(
        operation,
        extra,
        parse_list(workers, "--workers", int),
        parse_list(chunks, "--chunk", int),
        parse_list(methods, "--method"),
        parse_list(executors, "--executor"),
    )
    total = len(combos) * repeat
    done = [0]

    def counted(run: BenchRun) -> None:
        done[0] += 1
        if on_run is not None:
            on_run(run, done[0], total)

    result = run_grid(
        operation,
        forwarded,
        combos,
        repeat=repeat,
        commit=commit,
        machine=machine_info(database),
        on_run=counted,
    )
    if plot_path:
        plot(result, plot_path)
    return result


def confirm(alias: str, confirmed: str | None) -> None:
    """Refuse ``--commit`` unless ``confirmed`` names the database the writes go to."""
    from django.db import connections

    name = str(connections[alias].settings_dict.get("NAME"))
    if confirmed is None:
        raise UsageError(
            f"--commit lets every run's writes stand in database {name!r}: "
            f"add --confirm-database {name} to go ahead"
        )
    if confirmed not in (name, os.path.basename(name)):
        raise UsageError(
            f"--confirm-database {confirmed!r} does not match the database of alias "
            f"{alias!r} ({name!r}); nothing was run"
        )


def run_grid(
    operation: str,
    extra: Sequence[str],
    combos: Sequence[Combo],
    *,
    repeat: int,
    commit: bool,
    machine: dict[str, Any],
    on_run: Callable[[BenchRun], None] | None = None,
) -> BenchResult:
    """Run every combination ``repeat`` times (interleaved) and summarise."""
    result = BenchResult(operation=operation, machine=machine, committed=commit)
    for r in range(repeat):
        order = list(combos[r % len(combos) :]) + list(combos[: r % len(combos)])
        for combo in order:
            run = _run_once(operation, extra, combo, r, commit)
            result.runs.append(run)
            if on_run is not None:
                on_run(run)
    result.summary = summarise(result.runs)
    result.recommendation = recommend(result.summary)
    return result


def _run_once(
    operation: str, extra: Sequence[str], combo: Combo, repeat: int, commit: bool
) -> BenchRun:
    import subprocess
    import tempfile

    command = [sys.executable, "-m", "bulkpar", operation, *extra, *combo.args(),
               "--json", "--quiet"]  # fmt: skip
    if not commit:
        command.append("--dry-run")
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        process = subprocess.Popen(command, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    peak_mb = usage.ru_maxrss / 1024  # kilobytes on Linux
    try:
        report = json.loads(stdout)
    except json.JSONDecodeError:
        message = stderr.strip().splitlines()[-1] if stderr.strip() else "no report"
        return BenchRun(combo, repeat, 0.0, 0, 0.0, peak_mb, False, message)
    rows = report.get("input_rows") or report.get("matched") or 0
    seconds = float(report["seconds"])
    ok = process.returncode == 0 and bool(report.get("ok"))
    error = None if ok else (stderr.strip().splitlines() or ["failed"])[-1]
    return BenchRun(combo, repeat, seconds, int(rows), rows / seconds if seconds else 0.0,
                    round(peak_mb, 1), ok, error)  # fmt: skip


def summarise(runs: Sequence[BenchRun]) -> list[dict[str, Any]]:
    """Median/min/max seconds, rows/s and speed-up per combination."""
    import statistics

    by_combo: dict[Combo, list[BenchRun]] = {}
    for run in runs:
        by_combo.setdefault(run.combo, []).append(run)
    reference_seconds: float | None = None
    rows_out: list[dict[str, Any]] = []
    for combo, combo_runs in by_combo.items():
        good = [r for r in combo_runs if r.ok]
        seconds = [r.seconds for r in good]
        median = statistics.median(seconds) if seconds else None
        if combo.reference:
            reference_seconds = median
        rows_out.append({
            "combo": asdict(combo),
            "label": combo.label,
            "reference": combo.reference,
            "runs": len(combo_runs),
            "failed": len(combo_runs) - len(good),
            "median_seconds": round(median, 4) if median is not None else None,
            "min_seconds": round(min(seconds), 4) if seconds else None,
            "max_seconds": round(max(seconds), 4) if seconds else None,
            "rows": good[0].rows if good else 0,
            "rows_per_second": round(good[0].rows / median, 1) if good and median else 0.0,
            "peak_rss_mb": max((r.peak_rss_mb for r in combo_runs), default=0.0),
            "error": next((r.error for r in combo_runs if r.error), None),
        })  # fmt: skip
    for row in rows_out:
        row_median = row["median_seconds"]
        row["speedup"] = (
            round(reference_seconds / row_median, 2) if reference_seconds and row_median else None
        )
    return rows_out


def recommend(summary: Sequence[dict[str, Any]]) -> str:
    """One line naming the fastest setting and its speed-up."""
    timed = [row for row in summary if row["median_seconds"] is not None and not row["failed"]]
    if not timed:
        return "no setting completed; see the errors above"
    best = min(timed, key=lambda row: row["median_seconds"])
    speedup = f": {best['speedup']}× the serial baseline" if best["speedup"] else ""
    return f"use {best['label']}{speedup}"


def machine_info(database: str) -> dict[str, Any]:
    """CPU count and model, Python, Django, database server: to compare results."""
    import platform

    import django
    from django.db import connections

    from bulkpar import __version__
    from bulkpar.engine.executors import cpu_count

    connection = connections[database]
    try:
        server = ".".join(str(v) for v in connection.get_database_version())
    except Exception as exc:  # an old backend without get_database_version
        server = f"unknown ({type(exc).__name__})"
    return {
        "cpus": cpu_count(),
        "cpu_model": _cpu_model(),
        "python": platform.python_version(),
        "django": django.get_version(),
        "bulkpar": __version__,
        "database": f"{connection.vendor} {server}",
        "platform": platform.platform(),
    }


def _cpu_model() -> str:
    import platform

    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def plot(result: BenchResult, path: str) -> None:
    """Rows/s against workers, one line per chunk size, method and executor.

    Raises:
        BulkparError: matplotlib is not installed (with the install command).
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise BulkparError(
            "--plot needs matplotlib: pip install 'bulkpar[plot]' (or pip install matplotlib)"
        ) from None
    lines: dict[str, list[tuple[int, float]]] = {}
    for row in result.summary:
        combo = row["combo"]
        if row["median_seconds"] is None:
            continue
        name = f"chunk {combo['chunk']}"
        if combo["method"]:
            name += f", {combo['method']}"
        name += f", {combo['executor']}"
        lines.setdefault(name, []).append((combo["workers"], row["rows_per_second"]))
    figure, axes = plt.subplots(figsize=(8, 5))
    for name, points in sorted(lines.items()):
        points.sort()
        axes.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=name)
    axes.set_xticks(sorted({p[0] for points in lines.values() for p in points}))
    axes.set_xlabel("workers")
    axes.set_ylabel("rows per second")
    axes.set_title(f"bulkpar {result.operation} — {result.machine.get('database', '')}")
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
