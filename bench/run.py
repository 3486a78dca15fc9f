"""Benchmark bulkpar against its peers, end to end, on PostgreSQL.

    python bench/run.py --rows 200000 --repeat 3
    python bench/run.py --rows 50000 --repeat 1 --only bulkpar-func-w2,blogpost-pool-2
    python bench/run.py --workers 1,2,4          # every pooled approach with 1, 2 and 4 workers

The harness creates the database (``$BENCH_DATABASE_URL``, default
``postgres://postgres@127.0.0.1:5432/bulkpar_bench``) and its tables if
missing. Then, for each repeat, it runs every selected approach in turn (the
order rotates from one repeat to the next, so machine drift favours none):
it re-seeds the table to the same state (untimed), runs the approach as a
fresh process and times it from process start to exit, and checks every row
of the table afterwards. A run whose table or output is wrong is reported as
WRONG and not timed. The results (median, min and max seconds, rows per
second, peak RSS of the process tree) are printed as a Markdown table and
written to ``bench/results/<timestamp>-<name>.json`` and ``.md``.

``python bench/run.py --child NAME`` is how the harness runs a script
approach; it is not meant to be called by hand.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import os
import platform
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

import approaches
import database
from approaches import Approach, Outcome
from database import REPO_ROOT

RESULTS_DIR = database.BENCH_DIR / "results"
#: Seconds between two samples of the process tree's memory.
RSS_SAMPLE_INTERVAL = 0.1


class TreeRssSampler(threading.Thread):
    """Samples the summed RSS of every process in one session, keeping the peak.

    The harness starts each run in a new session, so the session holds the
    run's whole process tree: pool workers, a forkserver and its children
    included (``getrusage`` misses those, as the forkserver reaps them). RSS is
    summed, so pages shared between processes are counted once per process.
    """

    def __init__(self, session: int) -> None:
        super().__init__(daemon=True)
        self.session = session
        self.peak_bytes = 0
        self._stop_event = threading.Event()
        self._page_size = os.sysconf("SC_PAGE_SIZE")

    def run(self) -> None:
        while True:
            self.peak_bytes = max(self.peak_bytes, self._sample())
            if self._stop_event.wait(RSS_SAMPLE_INTERVAL):
                return

    def stop(self) -> None:
        """Stop sampling and wait for the thread."""
        self._stop_event.set()
        self.join()

    def _sample(self) -> int:
        total = 0
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                with open(f"/proc/{entry.name}/stat", "rb") as stat:
                    fields = stat.read().rsplit(b")", 1)[1].split()
            except OSError:  # the process ended meanwhile
                continue
            if int(fields[3]) == self.session:  # field 6 of stat: session id
                total += int(fields[21]) * self._page_size  # field 24: rss in pages
        return total


@dataclass(frozen=True)
class Execution:
    """A finished process: how long it ran and what it printed."""

    seconds: float
    peak_rss_mib: float
    returncode: int
    stdout: str
    stderr: str
    timed_out: bool


def execute(command: Sequence[str], timeout: float, env: dict[str, str]) -> Execution:
    """Run ``command`` from the repository root in a new session and time it until it exits.

    The clock runs from just before the process is started until the process
    exits (its children may outlive it by a moment; they are waited for, but
    not timed). After ``timeout`` seconds the whole session is killed. ``env``
    is added to this process's environment.
    """
    timed_out = threading.Event()
    with tempfile.TemporaryFile() as stderr:
        start = time.perf_counter()
        process = subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            env={**os.environ, **env},
            stdout=subprocess.PIPE,
            stderr=stderr,
            start_new_session=True,
        )
        sampler = TreeRssSampler(process.pid)
        sampler.start()
        output: list[bytes] = []
        reader = threading.Thread(target=_read_all, args=(process.stdout, output), daemon=True)
        reader.start()

        def kill() -> None:
            timed_out.set()
            _kill_session(process.pid)

        killer = threading.Timer(timeout, kill)
        killer.start()
        try:
            returncode = process.wait()
        except BaseException:
            _kill_session(process.pid)
            raise
        finally:
            killer.cancel()
        seconds = time.perf_counter() - start
        reader.join()
        sampler.stop()
        stderr.seek(0)
        return Execution(
            seconds=seconds,
            peak_rss_mib=sampler.peak_bytes / 2**20,
            returncode=returncode,
            stdout=b"".join(output).decode(errors="replace"),
            stderr=stderr.read().decode(errors="replace"),
            timed_out=timed_out.is_set(),
        )


def _read_all(stream: IO[bytes] | None, into: list[bytes]) -> None:
    if stream is not None:
        into.append(stream.read())
        stream.close()


def _kill_session(pid: int) -> None:
    """Kill the process group this harness started as ``pid`` (the run's whole tree)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


@dataclass(frozen=True)
class Run:
    """One timed run of one approach.

    Attributes:
        repeat: which repeat (0-based).
        status: ``ok``, ``WRONG`` (finished, but the table or its report is
            wrong) or ``FAILED`` (non-zero exit, unreadable output, timeout).
        seconds: wall seconds from process start to exit.
        peak_rss_mib: peak summed RSS of the process tree.
        in_run_seconds: what the program measured for the job itself.
        phases: seconds per phase, as the program measured them.
        details: extra data from the program's output.
        error: what went wrong (status not ``ok``).
    """

    repeat: int
    status: str
    seconds: float
    peak_rss_mib: float
    in_run_seconds: float | None = None
    phases: dict[str, float] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


def measure(
    approach: Approach, repeat: int, rows: int, conn: Any, timeout: float
) -> tuple[Run, list[str]]:
    """Seed the table, run ``approach`` once, check the table; returns the run and its command."""
    seeded = database.seed(conn, rows)
    command = approach.command()
    done = execute(command, timeout, approach.environment())

    def result(status: str, error: str | None, outcome: Outcome | None = None) -> Run:
        return Run(
            repeat=repeat,
            status=status,
            seconds=done.seconds,
            peak_rss_mib=done.peak_rss_mib,
            in_run_seconds=outcome.in_run_seconds if outcome else None,
            phases=outcome.phases if outcome else {},
            details=outcome.details if outcome else {},
            error=error,
        )

    if done.timed_out or done.returncode != 0:
        why = f"timed out after {timeout:.0f} s" if done.timed_out else f"exit {done.returncode}"
        tail = "\n".join(done.stderr.strip().splitlines()[-15:])
        return result("FAILED", f"{why}: {tail}"), command
    try:
        outcome = approach.outcome(done.stdout, rows)
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        unreadable = f"unreadable output ({type(exc).__name__}: {exc}): {done.stdout[-500:]!r}"
        return result("FAILED", unreadable), command
    state = database.read_state(conn)
    wrong = state.differences(approach.effect.expected(seeded))
    error = f"table is wrong: {wrong}" if wrong else outcome.error
    return result("WRONG" if error else "ok", error, outcome), command


def summarize(approach: Approach, runs: list[Run], rows: int) -> dict[str, Any]:
    """Median, min, max and the rest for one approach; no timings unless every run was ok."""
    bad = [r for r in runs if r.status != "ok"]
    if bad:
        status = "FAILED" if any(r.status == "FAILED" for r in bad) else "WRONG"
        return {"status": status, "errors": [f"repeat {r.repeat + 1}: {r.error}" for r in bad]}
    seconds = [r.seconds for r in runs]
    median = statistics.median(seconds)
    in_run = [r.in_run_seconds for r in runs if r.in_run_seconds is not None]
    phase_names = dict.fromkeys(name for r in runs for name in r.phases)
    return {
        "status": "ok",
        "median_s": median,
        "min_s": min(seconds),
        "max_s": max(seconds),
        "rows_per_s": rows / median,
        "in_run_median_s": statistics.median(in_run) if in_run else None,
        "peak_rss_mib": max(r.peak_rss_mib for r in runs),
        "phases_median_s": {
            name: statistics.median(r.phases.get(name, 0.0) for r in runs) for name in phase_names
        },
    }


def describe_machine(conn: Any) -> dict[str, Any]:
    """CPU, memory, software versions and PostgreSQL settings, for the results header."""
    cpu = platform.processor() or platform.machine()
    memory_kib = 0
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal:"):
                memory_kib = int(line.split()[1])
    pg_settings = dict(
        conn.execute(
            "SELECT name, current_setting(name) FROM pg_settings WHERE name = ANY(%s)",
            [["shared_buffers", "synchronous_commit", "fsync", "max_wal_size", "work_mem"]],
        ).fetchall()
    )
    return {
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "memory_gib": round(memory_kib / 2**20, 1),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "django": importlib.metadata.version("django"),
        "psycopg": importlib.metadata.version("psycopg"),
        "bulkpar": importlib.metadata.version("bulkpar"),
        "git": _git_revision(),
        "postgresql": conn.execute("SHOW server_version").fetchone()[0],
        "postgresql_settings": pg_settings,
        "database": database.describe_url(),
    }


def _git_revision() -> dict[str, Any]:
    """The checked-out commit and the paths that differ from it."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, check=False
        ).stdout

    status = git("status", "--porcelain").splitlines()
    return {
        "revision": git("rev-parse", "--short", "HEAD").strip() or "unknown",
        "uncommitted": sorted(line[3:] for line in status),
    }


def prime() -> None:
    """Compile and cache what every run imports, so that the first run pays no extra (untimed)."""
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", str(database.PROJECT_DIR)], check=True
    )
    subprocess.run(
        [
            sys.executable,
            "-c",
            "import bulkpar.cli, bulkpar.api, bulkpar.console, bulkpar.worker, rich.console, "
            "django.db.models, psycopg",
        ],
        check=True,
    )


def render_markdown(results: dict[str, Any]) -> str:
    """The results as Markdown: a header naming the machine, the table, where time goes."""
    machine = results["machine"]
    pg = machine["postgresql_settings"]
    pg_notes = ", ".join(f"{k} {v}" for k, v in sorted(pg.items()))
    lines = [
        f"### bulkpar benchmark: {results['name']} — {results['rows']:,} rows, "
        f"{results['repeat']} repeat(s)",
        "",
        "| | |",
        "|---|---|",
        f"| Command | `{results['command']}` |",
        f"| Date | {results['started']} |",
        f"| Machine | {machine['cpu']}, {machine['cpus']} CPUs ({machine['cpus_usable']} usable), "
        f"{machine['memory_gib']} GiB RAM, {machine['os']} |",
        f"| Software | Python {machine['python']}, Django {machine['django']}, "
        f"psycopg {machine['psycopg']}, bulkpar {machine['bulkpar']} ({_describe_git(machine)}) |",
        f"| PostgreSQL | {machine['postgresql']} ({pg_notes}) |",
        "| Method | every run is a fresh process, timed from start to exit; the table is "
        "re-seeded (untimed) before every run and every row is checked after it; approaches "
        "are interleaved and their order rotates each repeat; RSS is summed over the process "
        f"tree, sampled every {RSS_SAMPLE_INTERVAL} s |",
        "",
        "| approach | effect | workers | median s | min s | max s | rows/s | × best | "
        "in-run s | peak RSS MiB |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    entries = results["approaches"]
    best: dict[str, float] = {}
    for entry in entries.values():
        if entry["summary"]["status"] == "ok":
            effect = entry["effect"]
            best[effect] = min(best.get(effect, float("inf")), entry["summary"]["median_s"])
    for name, entry in entries.items():
        s = entry["summary"]
        workers = entry["workers"] if entry["workers"] is not None else "—"
        if s["status"] != "ok":
            cells = [f"**{s['status']}**", "", "", "", "", "", ""]
        else:
            in_run = s["in_run_median_s"]
            cells = [
                f"{s['median_s']:.2f}",
                f"{s['min_s']:.2f}",
                f"{s['max_s']:.2f}",
                f"{s['rows_per_s']:,.0f}",
                f"{s['median_s'] / best[entry['effect']]:.2f}×",
                f"{in_run:.2f}" if in_run is not None else "—",
                f"{s['peak_rss_mib']:.0f}",
            ]
        lines.append(f"| `{name}` | {entry['effect']} | {workers} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "× best: median over the fastest median with the same effect. in-run s: the time the "
        "program itself measured, after its interpreter started and Django was set up (for "
        "bulkpar, the report's `seconds`, pool start-up included).",
        "",
        "Where the time goes (medians). *Outside the job* is wall minus in-run: interpreter "
        "start, imports, Django set-up, exit (and, for bulkpar, counting the rows before the "
        "run). Phases are as each program measured them; `worker … (sum)` adds up the seconds "
        "of all workers, so with 2 workers it can exceed the wall time.",
        "",
        "| approach | outside the job s | phases s |",
        "|---|--:|---|",
    ]
    for name, entry in entries.items():
        s = entry["summary"]
        if s["status"] != "ok":
            continue
        outside = (
            f"{s['median_s'] - s['in_run_median_s']:.2f}"
            if s["in_run_median_s"] is not None
            else "—"
        )
        phases = " · ".join(f"{k} {v:.2f}" for k, v in s["phases_median_s"].items())
        lines.append(f"| `{name}` | {outside} | {phases} |")
    failures = [(n, e) for n, e in entries.items() if e["summary"]["status"] != "ok"]
    if failures:
        lines += ["", "Not timed:", ""]
        for name, entry in failures:
            for error in entry["summary"]["errors"]:
                first = error.splitlines()[0] if error else ""
                lines.append(f"- `{name}` {entry['summary']['status']}: {first}")
    return "\n".join(lines) + "\n"


def _describe_git(machine: dict[str, Any]) -> str:
    git = machine["git"]
    changed = git["uncommitted"]
    if not changed:
        return f"git {git['revision']}"
    return (
        f"git {git['revision']} + uncommitted changes in {len(changed)} paths, listed in the JSON"
    )


def _int_list(value: str) -> list[int]:
    try:
        numbers = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected numbers separated by commas: {value!r}"
        ) from None
    if not numbers or min(numbers) < 1:
        raise argparse.ArgumentTypeError(f"expected positive numbers: {value!r}")
    return numbers


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The harness's options (and the internal ``--child``)."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=200_000, help="rows in the table")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per approach")
    parser.add_argument("--only", help="comma-separated approach names (default: all); see --list")
    parser.add_argument(
        "--workers",
        type=_int_list,
        help="worker counts for every pooled approach, e.g. 1,2,4 "
        "(default: bulkpar --func 1,2; the others 2)",
    )
    parser.add_argument("--name", help="results file name suffix (default: the approaches' group)")
    parser.add_argument(
        "--timeout", type=float, default=1800, help="seconds before a run is killed (FAILED)"
    )
    parser.add_argument("--list", action="store_true", help="list the approaches and exit")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rows < 1 or args.repeat < 1:
        parser.error("--rows and --repeat must be at least 1")
    if args.child is not None:
        if args.child not in approaches.SCRIPTS:
            parser.error(f"unknown script {args.child!r}")
        if args.workers is not None and len(args.workers) != 1:
            parser.error("--child takes one worker count")
        return args
    registry = approaches.build_registry(args.workers)
    names = list(registry)
    if args.only:
        names = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in names if n not in registry]
        if unknown:
            parser.error(
                f"unknown approach(es) {', '.join(unknown)}; available: {', '.join(registry)} "
                "(worker counts in names come from --workers)"
            )
    args.selected = [registry[n] for n in names]
    return args


def main(argv: Sequence[str] | None = None) -> None:
    """Run the benchmark (or, with ``--child``, one script approach)."""
    args = parse_args(argv)
    if args.child is not None:
        approaches.run_script(args.child, args.workers[0] if args.workers else None)
        return
    selected: list[Approach] = args.selected
    if args.list:
        for approach in selected:
            print(f"{approach.name:30} {approach.description}")
        return

    started = datetime.now(timezone.utc)
    command = shlex.join([Path(sys.executable).name, *sys.argv])
    database.prepare()
    prime()
    runs: dict[str, list[Run]] = {a.name: [] for a in selected}
    commands: dict[str, list[str]] = {}
    order: list[list[str]] = []
    with database.connect(autocommit=True) as conn:
        machine = describe_machine(conn)
        total = args.repeat * len(selected)
        for repeat in range(args.repeat):
            shift = repeat % len(selected)
            this_round = selected[shift:] + selected[:shift]
            order.append([a.name for a in this_round])
            for approach in this_round:
                run, commands[approach.name] = measure(
                    approach, repeat, args.rows, conn, args.timeout
                )
                runs[approach.name].append(run)
                done = sum(len(r) for r in runs.values())
                print(
                    f"[{done}/{total}] repeat {repeat + 1} {approach.name}: "
                    f"{run.seconds:.2f} s {run.status}"
                    + (f" — {run.error.splitlines()[0]}" if run.error else ""),
                    file=sys.stderr,
                    flush=True,
                )

    name = args.name or "-".join(dict.fromkeys(a.group for a in selected))
    results = {
        "name": name,
        "command": command,
        "started": started.strftime("%Y-%m-%d %H:%M UTC"),
        "rows": args.rows,
        "repeat": args.repeat,
        "chunk": approaches.CHUNK,
        "machine": machine,
        "order": order,
        "approaches": {
            a.name: {
                "group": a.group,
                "effect": a.effect.value,
                "workers": a.workers,
                "description": a.description,
                "command": shlex.join(commands[a.name]),
                "summary": summarize(a, runs[a.name], args.rows),
                "runs": [asdict(r) for r in runs[a.name]],
            }
            for a in selected
        },
    }
    markdown = render_markdown(results)
    RESULTS_DIR.mkdir(exist_ok=True)
    stem = RESULTS_DIR / f"{started.strftime('%Y%m%dT%H%M%SZ')}-{name}"
    stem.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    stem.with_suffix(".md").write_text(markdown)
    print(markdown)
    print(f"written: {stem.relative_to(REPO_ROOT)}.json and .md", file=sys.stderr)


if __name__ == "__main__":
    main()
