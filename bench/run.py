"""Benchmark bulkpar against its peers, end to end, on PostgreSQL.

    python bench/run.py --rows 200000 --repeat 3               # the update group
    python bench/run.py --group load --rows 100000 --repeat 3  # create and upsert from a file
    python bench/run.py --group save --rows 20000 --repeat 3   # save() with a post_save receiver
    python bench/run.py --memory --rows 100000,1000000         # peak RSS against the input size
    python bench/run.py --rows 50000 --repeat 1 --only bulkpar-func-w2,blogpost-pool-2
    python bench/run.py --workers 1,2,4          # every pooled approach with 1, 2 and 4 workers

The harness creates the database (``$BENCH_DATABASE_URL``, default
``postgres://postgres@127.0.0.1:5432/bulkpar_bench``) and its tables if
missing. Then, for each repeat, it runs every selected approach in turn (the
order rotates from one repeat to the next, so machine drift favours none):
it re-seeds the table to the same state (untimed), runs the approach as a
fresh process and times it from process start to exit, and checks every row
of the table afterwards. A run whose table or output is wrong is reported as
WRONG and not timed. Before each run it waits for other programs to go
idle, and it redoes a run during which they used too much CPU
(``--max-other-cpu``, ``--redo``); ``--bulkpar-rev REV`` benchmarks a
snapshot of a commit instead of a working tree that may change meanwhile.
The results (median, min and max seconds, rows per second, peak RSS of the
process tree) are printed as a Markdown table and written to
``bench/results/<timestamp>-<name>.json`` and ``.md``. The load and save
groups read input files that are written once, before the first run
(untimed); ``--memory`` runs the approaches at several sizes and tabulates
the peak RSS of every process instead of the timings.

``python bench/run.py --child NAME`` is how the harness runs a script
approach; it is not meant to be called by hand.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import importlib.metadata
import importlib.util
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
#: Seconds between two samples of /proc while a run is going.
SAMPLE_INTERVAL = 0.1
#: Other programs may use at most this much of one CPU before a run starts.
QUIET_CPU = 0.15
#: ... measured over windows of this many seconds.
QUIET_WINDOW = 2.0


class RunMonitor(threading.Thread):
    """Samples ``/proc`` during a run: peak RSS of the run, CPU of everything else.

    The harness starts each run in a new session, so the session holds the
    run's whole process tree: pool workers, a forkserver and its children
    included (``getrusage`` misses those, as the forkserver reaps them). RSS is
    summed, so pages shared between processes are counted once per process.

    *Other CPU* is the CPU time used during the run by processes that are not
    the run's and not this harness: a concurrent test suite or build shows up
    here, and so do PostgreSQL backends serving other databases. PostgreSQL's
    own background processes and its backends for ``database`` count as the
    run's. It misses processes that start and end between two samples, so it
    is a lower bound.
    """

    def __init__(self, session: int, database: str) -> None:
        super().__init__(daemon=True)
        self.session = session
        self._our_backend = f" {database} ".encode()
        self._postgres_is_other: dict[int, bool] = {}
        self.peak_bytes = 0
        self._stop_event = threading.Event()
        self._page_size = os.sysconf("SC_PAGE_SIZE")
        self._first_cpu: dict[int, int] = {}
        self._last_cpu: dict[int, int] = {}
        #: Per process of the run: pid -> (parent pid, command line, peak RSS in bytes).
        self.processes: dict[int, tuple[int, str, int]] = {}

    @property
    def other_cpu_seconds(self) -> float:
        """CPU seconds used by other programs while the run went on."""
        ticks = sum(self._last_cpu[pid] - self._first_cpu[pid] for pid in self._last_cpu)
        return ticks / os.sysconf("SC_CLK_TCK")

    def run(self) -> None:
        while True:
            self.peak_bytes = max(self.peak_bytes, self._sample())
            if self._stop_event.wait(SAMPLE_INTERVAL):
                self._sample()
                return

    def stop(self) -> None:
        """Stop sampling and wait for the thread."""
        self._stop_event.set()
        self.join()

    def _sample(self) -> int:
        rss = 0
        harness = os.getpid()
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit() or int(entry.name) == harness:
                continue
            try:
                with open(f"/proc/{entry.name}/stat", "rb") as stat:
                    comm, _, rest = stat.read().partition(b" (")[2].rpartition(b")")
            except OSError:  # the process ended meanwhile
                continue
            fields = rest.split()  # fields[0] is field 3 of proc(5)'s stat
            pid = int(entry.name)
            if int(fields[3]) == self.session:  # field 6: session id
                rss += int(fields[21]) * self._page_size  # field 24: rss in pages
                self._note_process(pid, int(fields[1]))  # field 4: parent pid
            elif not comm.startswith(b"postgres") or self._is_other_backend(pid):
                cpu = int(fields[11]) + int(fields[12])  # fields 14, 15: utime, stime
                self._first_cpu.setdefault(pid, cpu)
                self._last_cpu[pid] = cpu
        return rss

    def _note_process(self, pid: int, ppid: int) -> None:
        """Record the peak RSS of one of the run's processes (``VmHWM``: exact, not sampled)."""
        try:
            with open(f"/proc/{pid}/status", "rb") as status:
                hwm = next((line for line in status if line.startswith(b"VmHWM:")), b"")
        except OSError:
            return
        if not hwm:  # a zombie has no memory left to report
            return
        peak = int(hwm.split()[1]) * 1024
        known = self.processes.get(pid, (ppid, "", 0))
        # read every time: a process seen right after fork() still shows its parent's command
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                command = cmdline.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            command = ""
        self.processes[pid] = (known[0], command or known[1], max(known[2], peak))

    def process_peaks(self) -> list[dict[str, Any]]:
        """Peak RSS of each process of the run, with its role, in start order.

        Roles: ``parent`` (the process the harness started), ``forkserver``
        and ``resource tracker`` (multiprocessing's helpers), ``worker`` (any
        other process, e.g. a pool worker).
        """
        peaks = []
        for pid, (ppid, command, peak) in sorted(self.processes.items()):
            if pid == self.session:
                role = "parent"
            elif "forkserver" in command and ppid == self.session:
                role = "forkserver"
            elif "resource_tracker" in command:
                role = "resource tracker"
            else:
                role = "worker"
            peaks.append({"pid": pid, "role": role, "peak_rss_mib": round(peak / 2**20, 1)})
        return peaks

    def _is_other_backend(self, pid: int) -> bool:
        """A PostgreSQL backend serving a client of another database."""
        if pid not in self._postgres_is_other:
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                    title = cmdline.read()  # "postgres: 15/main: user dbname host(port) state"
            except OSError:
                return False
            is_client = b"(" in title or b"[local]" in title
            self._postgres_is_other[pid] = is_client and self._our_backend not in title
        return self._postgres_is_other[pid]


def wait_for_quiet_machine(limit: float) -> float:
    """Wait until other programs use less than :data:`QUIET_CPU` of a CPU; returns seconds waited.

    Measured over :data:`QUIET_WINDOW` from ``/proc/stat`` while nothing of the
    benchmark runs. Gives up after ``limit`` seconds (the run is then flagged
    by its *other CPU* figure).
    """
    start = time.perf_counter()
    while True:
        before = _busy_and_total_ticks()
        time.sleep(QUIET_WINDOW)
        after = _busy_and_total_ticks()
        cpus = os.cpu_count() or 1
        busy_cpus = (after[0] - before[0]) / max(after[1] - before[1], 1) * cpus
        waited = time.perf_counter() - start
        if busy_cpus < QUIET_CPU or waited >= limit:
            return waited


def _busy_and_total_ticks() -> tuple[int, int]:
    with open("/proc/stat") as stat:
        ticks = [int(v) for v in stat.readline().split()[1:]]
    idle = ticks[3] + ticks[4]  # idle, iowait
    return sum(ticks) - idle, sum(ticks)


@dataclass(frozen=True)
class Execution:
    """A finished process: how long it ran and what it printed."""

    seconds: float
    peak_rss_mib: float
    other_cpu_seconds: float
    returncode: int
    stdout: str
    stderr: str
    timed_out: bool
    processes: tuple[dict[str, Any], ...] = ()


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
        monitor = RunMonitor(process.pid, database.database_settings()["NAME"])
        monitor.start()
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
        monitor.stop()
        stderr.seek(0)
        return Execution(
            seconds=seconds,
            peak_rss_mib=monitor.peak_bytes / 2**20,
            other_cpu_seconds=monitor.other_cpu_seconds,
            returncode=returncode,
            stdout=b"".join(output).decode(errors="replace"),
            stderr=stderr.read().decode(errors="replace"),
            timed_out=timed_out.is_set(),
            processes=tuple(monitor.process_peaks()),
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
        other_cpu_seconds: CPU used meanwhile by other programs (see :class:`RunMonitor`).
        waited_for_quiet_s: how long the harness waited for other programs to calm down.
        bulkpar_source: a hash of bulkpar's source files when the run started.
        discarded: earlier attempts of this run, done again because other
            programs were busy meanwhile (their ``seconds`` and ``other_cpu_seconds``).
        processes: every process of the run with its role and peak RSS
            (``VmHWM`` from ``/proc``; see :meth:`RunMonitor.process_peaks`).
        in_run_seconds: what the program measured for the job itself.
        phases: seconds per phase, as the program measured them.
        details: extra data from the program's output.
        error: what went wrong (status not ``ok``).
    """

    repeat: int
    status: str
    seconds: float
    peak_rss_mib: float
    other_cpu_seconds: float
    waited_for_quiet_s: float
    in_run_seconds: float | None = None
    phases: dict[str, float] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    bulkpar_source: str = ""
    discarded: tuple[dict[str, float], ...] = ()
    processes: tuple[dict[str, Any], ...] = ()

    @property
    def other_cpu_pct(self) -> float:
        """CPU used by other programs during the run, in % of one CPU."""
        return 100 * self.other_cpu_seconds / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True)
class Harness:
    """What every run shares: the table size, the limits, and which bulkpar it imports.

    Attributes:
        rows: rows seeded before every run.
        timeout: seconds before a run is killed.
        quiet_wait: at most this long to wait for other programs before a run.
        max_other_cpu: % of one CPU other programs may use before a run is redone.
        redo: at most this many extra attempts per run.
        bulkpar_dir: the bulkpar package the runs import (hashed before every run).
        env: variables added to every run's environment.
        data_dir: where the input files of the load and save groups are written.
    """

    rows: int
    timeout: float
    quiet_wait: float
    max_other_cpu: float
    redo: int
    bulkpar_dir: Path
    env: dict[str, str]
    data_dir: Path

    def workload(self, group: str) -> approaches.Workload:
        """The rows and the input files (written on first use, untimed) of ``group``."""
        return approaches.Workload(
            self.rows, database.write_inputs(group, self.rows, self.data_dir)
        )


def measure(approach: Approach, repeat: int, conn: Any, harness: Harness) -> tuple[Run, list[str]]:
    """Seed the table, run ``approach`` once, check the table; returns the run and its command."""
    rows, timeout = harness.rows, harness.timeout
    work = harness.workload(approach.group)
    expected = database.seed_for(conn, rows, approach.effect)
    command = approach.command(work)
    waited = wait_for_quiet_machine(harness.quiet_wait)
    source = source_hash(harness.bulkpar_dir)
    done = execute(command, timeout, {**harness.env, **approach.environment()})

    def result(status: str, error: str | None, outcome: Outcome | None = None) -> Run:
        return Run(
            repeat=repeat,
            status=status,
            seconds=done.seconds,
            peak_rss_mib=done.peak_rss_mib,
            other_cpu_seconds=done.other_cpu_seconds,
            waited_for_quiet_s=waited,
            in_run_seconds=outcome.in_run_seconds if outcome else None,
            phases=outcome.phases if outcome else {},
            details=outcome.details if outcome else {},
            error=error,
            bulkpar_source=source,
            processes=done.processes,
        )

    if done.timed_out or done.returncode != 0:
        why = f"timed out after {timeout:.0f} s" if done.timed_out else f"exit {done.returncode}"
        tail = "\n".join(done.stderr.strip().splitlines()[-15:])
        return result("FAILED", f"{why}: {tail}"), command
    try:
        outcome = approach.outcome(done.stdout, work)
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        unreadable = f"unreadable output ({type(exc).__name__}: {exc}): {done.stdout[-500:]!r}"
        return result("FAILED", unreadable), command
    state = database.read_state_for(conn, rows, approach.effect)
    wrong = database.differences(state, expected)
    error = f"table is wrong: {wrong}" if wrong else outcome.error
    return result("WRONG" if error else "ok", error, outcome), command


def source_hash(package: Path) -> str:
    """A short hash of every ``.py`` file under ``package``.

    Recorded for every run, so that results that mix bulkpar versions (the
    source changed while the benchmark ran) are visible.
    """
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(str(path.relative_to(package)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def installed_bulkpar() -> Path:
    """The directory of the bulkpar package this interpreter imports (the working tree)."""
    spec = importlib.util.find_spec("bulkpar")
    assert spec is not None and spec.submodule_search_locations is not None
    return Path(next(iter(spec.submodule_search_locations)))


def export_bulkpar(revision: str, into: Path) -> tuple[Path, str]:
    """Write bulkpar's package as of git ``revision`` into ``into``; returns it and the commit.

    Every run then gets ``into`` first on ``PYTHONPATH``, so the ``bulkpar``
    command, its workers and the scripts import that snapshot instead of the
    working tree, which may change while the benchmark runs.
    """
    commit = subprocess.run(
        ["git", "rev-parse", "--verify", f"{revision}^{{commit}}"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    archive = subprocess.run(
        ["git", "archive", commit, "bulkpar"], cwd=REPO_ROOT, capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into / "bulkpar", commit


def measure_undisturbed(
    approach: Approach, repeat: int, conn: Any, harness: Harness
) -> tuple[Run, list[str]]:
    """:func:`measure`, done again while other programs used too much CPU during the run.

    After ``harness.redo`` extra attempts the last one is kept as it is; its
    *other CPU* figure shows the disturbance.
    """
    discarded: list[dict[str, float]] = []
    while True:
        run, command = measure(approach, repeat, conn, harness)
        disturbed = run.status == "ok" and run.other_cpu_pct > harness.max_other_cpu
        print(
            f"  repeat {repeat + 1} {approach.name}: {run.seconds:.2f} s {run.status} "
            f"(waited {run.waited_for_quiet_s:.0f} s for quiet; other programs used "
            f"{run.other_cpu_pct:.0f}% of a CPU"
            + ("; doing it again" if disturbed and len(discarded) < harness.redo else "")
            + ")"
            + (f" — {run.error.splitlines()[0]}" if run.error else ""),
            file=sys.stderr,
            flush=True,
        )
        if not disturbed or len(discarded) >= harness.redo:
            return dataclasses.replace(run, discarded=tuple(discarded)), command
        discarded.append({"seconds": run.seconds, "other_cpu_seconds": run.other_cpu_seconds})


def summarize(runs: list[Run], rows: int) -> dict[str, Any]:
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
        "other_cpu_pct_max": max(r.other_cpu_pct for r in runs),
        "redone": sum(len(r.discarded) for r in runs),
        "methods": sorted({str(r.details["method"]) for r in runs if "method" in r.details}),
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


def prime(env: dict[str, str]) -> None:
    """Compile and cache what every run imports, so that the first run pays no extra (untimed)."""
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", str(database.PROJECT_DIR)], check=True
    )
    subprocess.run(
        [
            sys.executable,
            "-c",
            "import bulkpar.cli.app, bulkpar.api, bulkpar.cli.console, bulkpar.engine.worker, "
            "rich.console, django.db.models, psycopg",
        ],
        env={**os.environ, **env},
        check=True,
    )


def _render_header(results: dict[str, Any], size: str) -> list[str]:
    """The Markdown heading and machine table every results file starts with."""
    machine = results["machine"]
    pg = machine["postgresql_settings"]
    pg_notes = ", ".join(f"{k} {v}" for k, v in sorted(pg.items()))
    redone = sum(len(r.get("discarded", ())) for entry in _entries(results) for r in entry["runs"])
    return [
        f"### bulkpar benchmark: {results['name']} — {size}, {results['repeat']} repeat(s)",
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
        f"| bulkpar source | {_describe_sources(results)} |",
        f"| Table | {_describe_table(results.get('table', 'analyzed'))} |",
        "| Method | every run is a fresh process, timed from start to exit; the table is "
        "re-seeded (untimed) before every run and every row is checked after it; approaches "
        "are interleaved and their order rotates each repeat; RSS is summed over the process "
        f"tree, sampled every {SAMPLE_INTERVAL} s; each run waits until other programs use less "
        f"than {QUIET_CPU:.0%} of a CPU for {QUIET_WINDOW:g} s |",
        "",
        f"Runs during which other programs used more than {results['max_other_cpu']:g}% of a "
        f"CPU were done again (at most {results['redo']} times): {redone} attempt(s) discarded.",
        "",
    ]


def _describe_table(state: str) -> str:
    if state == "fresh":
        return "fresh: loaded before each run and never analyzed (no planner statistics)"
    return "analyzed: VACUUM (ANALYZE) after seeding each run"


def _entries(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The per-approach entries of a results dict (timed benchmark or ``--memory``)."""
    if "entries" in results:
        return list(results["entries"])
    return list(results["approaches"].values())


def render_markdown(results: dict[str, Any]) -> str:
    """The results as Markdown: a header naming the machine, the table, where time goes."""
    lines = [
        *_render_header(results, f"{results['rows']:,} rows"),
        "| approach | effect | workers | median s | min s | max s | rows/s | × best | "
        "in-run s | peak RSS MiB | other CPU % |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
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
            cells = [f"**{s['status']}**", "", "", "", "", "", "", ""]
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
                f"{s['other_cpu_pct_max']:.0f}",
            ]
        lines.append(f"| `{name}` | {entry['effect']} | {workers} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "× best: median over the fastest median with the same effect. in-run s: the time the "
        "program itself measured, after its interpreter started and Django was set up (for "
        "bulkpar, the report's `seconds`, pool start-up included). other CPU %: in the worst "
        "run, CPU used by other programs (PostgreSQL backends of other databases included), "
        "in % of one CPU; a lower bound, and above a few % the machine was not quiet.",
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
        if s["methods"]:
            phases = f"writer `{'/'.join(s['methods'])}` · {phases}"
        lines.append(f"| `{name}` | {outside} | {phases} |")
    failures = [(n, e) for n, e in entries.items() if e["summary"]["status"] != "ok"]
    if failures:
        lines += ["", "Not timed:", ""]
        for name, entry in failures:
            for error in entry["summary"]["errors"]:
                first = error.splitlines()[0] if error else ""
                lines.append(f"- `{name}` {entry['summary']['status']}: {first}")
    return "\n".join(lines) + "\n"


def _describe_sources(results: dict[str, Any]) -> str:
    sources = results["bulkpar_sources"]
    origin = (
        f"git archive of {results['bulkpar_commit'][:10]} (not the working tree)"
        if results["bulkpar_commit"]
        else "the working tree"
    )
    if len(sources) == 1:
        return f"{origin}; sha256 {sources[0]}, the same for every run"
    return (
        f"{origin}, **changed while the benchmark ran**: {len(sources)} versions "
        f"({', '.join(sources)}); the results mix them"
    )


def _exit_on_signal(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


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


#: Rows when ``--rows`` is not given, per group (the save group's jobs cost ~3 statements a row).
DEFAULT_ROWS = {"update": 200_000, "load": 100_000, "save": 20_000}
#: What ``--memory`` measures unless ``--only`` says otherwise.
MEMORY_DEFAULT = ("bulkpar-create-w2", "bulkpar-upsert-w2", "blogpost-pool-2")
#: Row counts of ``--memory`` unless ``--rows`` says otherwise.
MEMORY_ROWS = [100_000, 1_000_000]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The harness's options (and the internal ``--child``)."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--rows",
        type=_int_list,
        help="rows in the table (update) or input records (load, save); default per group: "
        + ", ".join(f"{g} {n:,}" for g, n in DEFAULT_ROWS.items())
        + "; with --memory, a list (default 100000,1000000)",
    )
    parser.add_argument(
        "--repeat", type=int, help="timed runs per approach (default 3; 1 with --memory)"
    )
    parser.add_argument(
        "--group",
        choices=[*approaches.GROUPS, "all"],
        help="run this group's approaches (default: update, unless --only names approaches)",
    )
    parser.add_argument("--only", help="comma-separated approach names (any group); see --list")
    parser.add_argument(
        "--memory",
        action="store_true",
        help="measure peak memory against the input size instead: run each approach "
        f"(default {', '.join(MEMORY_DEFAULT)}) at every --rows count and report the peak "
        "RSS of the parent, of each process and of the whole tree",
    )
    parser.add_argument(
        "--workers",
        type=_int_list,
        help="worker counts for every pooled approach, e.g. 1,2,4 "
        "(default: bulkpar update --func, create, upsert and save 1,2; the others 2)",
    )
    parser.add_argument(
        "--bulkpar-rev",
        metavar="REV",
        help="benchmark bulkpar as committed at this git revision (exported to a temporary "
        "directory) instead of the working tree, which may change during the run",
    )
    parser.add_argument(
        "--table",
        choices=database.TABLE_STATES,
        default="analyzed",
        help="the table every run starts from: analyzed (VACUUM ANALYZE after seeding, the "
        "default) or fresh (loaded and never analyzed: no planner statistics, as in the middle "
        "of a data migration)",
    )
    parser.add_argument("--name", help="results file name suffix (default: the approaches' group)")
    parser.add_argument(
        "--timeout", type=float, default=1800, help="seconds before a run is killed (FAILED)"
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=600,
        help="at most this many seconds to wait before each run for other programs to go "
        "idle (default 600)",
    )
    parser.add_argument(
        "--max-other-cpu",
        type=float,
        default=10,
        help="do a run again when other programs used more than this %% of one CPU during it "
        "(default 10)",
    )
    parser.add_argument(
        "--redo", type=int, default=3, help="at most this many extra attempts per run (default 3)"
    )
    parser.add_argument("--list", action="store_true", help="list the approaches and exit")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--input", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.repeat is None:
        args.repeat = 1 if args.memory else 3
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if args.child is not None:
        if args.child not in approaches.SCRIPTS:
            parser.error(f"unknown script {args.child!r}")
        if args.workers is not None and len(args.workers) != 1:
            parser.error("--child takes one worker count")
        return args
    registry = approaches.build_registry(args.workers)
    if args.only:
        names = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in names if n not in registry]
        if unknown:
            parser.error(
                f"unknown approach(es) {', '.join(unknown)}; available: {', '.join(registry)} "
                "(worker counts in names come from --workers)"
            )
        if args.group not in (None, "all"):
            names = [n for n in names if registry[n].group == args.group]
    elif args.memory:
        names = [n for n in MEMORY_DEFAULT if n in registry]
    else:
        group = args.group or "update"
        names = [n for n, a in registry.items() if group in ("all", a.group)]
    if not names:
        parser.error("no approach selected")
    args.selected = [registry[n] for n in names]
    groups = list(dict.fromkeys(a.group for a in args.selected))
    if args.list:
        return args
    if args.memory:
        args.rows = args.rows or MEMORY_ROWS
    elif args.rows is None:
        defaults = {DEFAULT_ROWS[g] for g in groups}
        if len(defaults) > 1:
            parser.error(
                f"the groups {', '.join(groups)} have different default sizes: give --rows"
            )
        args.rows = defaults.pop()
    elif len(args.rows) != 1:
        parser.error("--rows takes one number (a list only with --memory)")
    else:
        args.rows = args.rows[0]
    return args


def main(argv: Sequence[str] | None = None) -> None:
    """Run the benchmark (or, with ``--child``, one script approach)."""
    args = parse_args(argv)
    if args.child is not None:
        approaches.run_script(args.child, args.workers[0] if args.workers else None, args.input)
        return
    selected: list[Approach] = args.selected
    database.table_state = args.table
    if args.list:
        for approach in selected:
            print(f"{approach.name:45} {approach.group:7} {approach.description}")
        return

    # Stop cleanly (killing the run in progress) on Ctrl-C or kill, even when started in
    # the background, where the shell leaves SIGINT ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _exit_on_signal)
    started = datetime.now(timezone.utc)
    command = shlex.join([Path(sys.executable).name, *sys.argv])
    with tempfile.TemporaryDirectory(prefix="bulkpar-bench-") as scratch:
        snapshot, data_dir = Path(scratch, "snapshot"), Path(scratch, "inputs")
        snapshot.mkdir()
        data_dir.mkdir()
        bulkpar_dir, env, commit = installed_bulkpar(), {}, None
        if args.bulkpar_rev:
            bulkpar_dir, commit = export_bulkpar(args.bulkpar_rev, snapshot)
            pythonpath = [str(snapshot), *filter(None, [os.environ.get("PYTHONPATH")])]
            env = {"PYTHONPATH": os.pathsep.join(pythonpath)}
        harness = Harness(
            rows=args.rows[0] if args.memory else args.rows,
            timeout=args.timeout,
            quiet_wait=args.quiet_wait,
            max_other_cpu=args.max_other_cpu,
            redo=args.redo,
            bulkpar_dir=bulkpar_dir,
            env=env,
            data_dir=data_dir,
        )
        if args.memory:
            results = memory_benchmark(args, selected, harness, started, command, commit)
            markdown = render_memory_markdown(results)
        else:
            results = benchmark(args, selected, harness, started, command, commit)
            markdown = render_markdown(results)
    RESULTS_DIR.mkdir(exist_ok=True)
    stem = RESULTS_DIR / f"{started.strftime('%Y%m%dT%H%M%SZ')}-{results['name']}"
    stem.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    stem.with_suffix(".md").write_text(markdown)
    print(markdown)
    print(f"written: {stem.relative_to(REPO_ROOT)}.json and .md", file=sys.stderr)


def _header(
    args: argparse.Namespace,
    runs: dict[str, list[Run]],
    command: str,
    started: datetime,
    machine: dict[str, Any],
    bulkpar_commit: str | None,
) -> dict[str, Any]:
    """The fields every results file starts with."""
    return {
        "command": command,
        "started": started.strftime("%Y-%m-%d %H:%M UTC"),
        "repeat": args.repeat,
        "chunk": approaches.CHUNK,
        "table": args.table,
        "max_other_cpu": args.max_other_cpu,
        "redo": args.redo,
        "machine": machine,
        "bulkpar_commit": bulkpar_commit,
        "bulkpar_sources": list(
            dict.fromkeys(r.bulkpar_source for rs in runs.values() for r in rs)
        ),
    }


def _prepare(harness: Harness, selected: list[Approach], rows: Sequence[int]) -> None:
    """Create the database, warm the imports, and write every input file (all untimed)."""
    database.prepare()
    prime(harness.env)
    for group in dict.fromkeys(a.group for a in selected):
        for n in rows:
            started = time.perf_counter()
            files = database.write_inputs(group, n, harness.data_dir)
            if files:
                print(
                    f"inputs of {group} for {n:,} rows written in "
                    f"{time.perf_counter() - started:.1f} s (untimed)",
                    file=sys.stderr,
                )


def benchmark(
    args: argparse.Namespace,
    selected: list[Approach],
    harness: Harness,
    started: datetime,
    command: str,
    bulkpar_commit: str | None,
) -> dict[str, Any]:
    """Prepare the database, run every repeat of every approach, and gather the results."""
    _prepare(harness, selected, [args.rows])
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
                done = sum(len(r) for r in runs.values())
                print(f"[{done + 1}/{total}]", file=sys.stderr, flush=True)
                run, commands[approach.name] = measure_undisturbed(approach, repeat, conn, harness)
                runs[approach.name].append(run)

    name = args.name or "-".join(dict.fromkeys(a.group for a in selected))
    return {
        "name": name,
        **_header(args, runs, command, started, machine, bulkpar_commit),
        "rows": args.rows,
        "order": order,
        "approaches": {
            a.name: {
                "group": a.group,
                "effect": a.effect.value,
                "workers": a.workers,
                "description": a.description,
                "command": shlex.join(commands[a.name]),
                "summary": summarize(runs[a.name], args.rows),
                "runs": [asdict(r) for r in runs[a.name]],
            }
            for a in selected
        },
    }


def memory_benchmark(
    args: argparse.Namespace,
    selected: list[Approach],
    harness: Harness,
    started: datetime,
    command: str,
    bulkpar_commit: str | None,
) -> dict[str, Any]:
    """``--memory``: every approach at every row count; peak RSS per process and of the tree.

    Row counts run in increasing order; within one, the approaches are
    interleaved over the repeats as in :func:`benchmark`. Every run is seeded,
    checked and redone when disturbed, exactly as in a timed benchmark.
    """
    _prepare(harness, selected, args.rows)
    runs: dict[str, list[Run]] = {}
    entries: list[dict[str, Any]] = []
    with database.connect(autocommit=True) as conn:
        machine = describe_machine(conn)
        total = args.repeat * len(selected) * len(args.rows)
        for rows in args.rows:
            sized = dataclasses.replace(harness, rows=rows)
            by_approach: dict[str, list[Run]] = {a.name: [] for a in selected}
            commands: dict[str, list[str]] = {}
            for repeat in range(args.repeat):
                shift = repeat % len(selected)
                for approach in selected[shift:] + selected[:shift]:
                    done = sum(len(r) for r in runs.values()) + sum(
                        len(r) for r in by_approach.values()
                    )
                    print(f"[{done + 1}/{total}] {rows:,} rows", file=sys.stderr, flush=True)
                    run, commands[approach.name] = measure_undisturbed(
                        approach, repeat, conn, sized
                    )
                    by_approach[approach.name].append(run)
            for approach in selected:
                done_runs = by_approach[approach.name]
                runs[f"{approach.name}@{rows}"] = done_runs
                entries.append(
                    {
                        "approach": approach.name,
                        "rows": rows,
                        "effect": approach.effect.value,
                        "workers": approach.workers,
                        "command": shlex.join(commands[approach.name]),
                        "summary": summarize(done_runs, rows),
                        "memory": summarize_memory(done_runs),
                        "runs": [asdict(r) for r in done_runs],
                    }
                )
    return {
        "name": args.name or "memory",
        **_header(args, runs, command, started, machine, bulkpar_commit),
        "rows": args.rows,
        "entries": entries,
    }


def summarize_memory(runs: list[Run]) -> dict[str, Any]:
    """The largest peaks over the runs: the tree (sampled sum) and each role (``VmHWM``)."""
    roles: dict[str, list[float]] = {}
    for run in runs:
        per_run: dict[str, list[float]] = {}
        for process in run.processes:
            per_run.setdefault(process["role"], []).append(process["peak_rss_mib"])
        for role, peaks in per_run.items():
            # the n-th largest process of a role: its largest peak over the runs
            ranked = sorted(peaks, reverse=True)
            known = roles.setdefault(role, [])
            for n, peak in enumerate(ranked):
                if n < len(known):
                    known[n] = max(known[n], peak)
                else:
                    known.append(peak)
    return {
        "tree_peak_rss_mib": max((r.peak_rss_mib for r in runs), default=0.0),
        "parent_peak_rss_mib": max(roles.get("parent", [0.0])),
        "worker_peak_rss_mib": max(roles.get("worker", [0.0])),
        "processes": {role: peaks for role, peaks in roles.items()},
    }


def render_memory_markdown(results: dict[str, Any]) -> str:
    """The ``--memory`` results as Markdown: one line per approach and row count."""
    lines = _render_header(results, f"{', '.join(f'{n:,}' for n in results['rows'])} rows")
    lines += [
        "| approach | rows | status | median s | rows/s | peak RSS, tree MiB | "
        "parent MiB | largest worker MiB | every process (role: peak MiB) | other CPU % |",
        "|---|--:|---|--:|--:|--:|--:|--:|---|--:|",
    ]
    for entry in results["entries"]:
        s, m = entry["summary"], entry["memory"]
        processes = ", ".join(
            f"{role} {' / '.join(f'{p:.0f}' for p in peaks)}"
            for role, peaks in m["processes"].items()
        )
        if s["status"] == "ok":
            timing = [f"{s['median_s']:.2f}", f"{s['rows_per_s']:,.0f}"]
            other = f"{s['other_cpu_pct_max']:.0f}"
        else:
            timing, other = ["", ""], ""
        lines.append(
            f"| `{entry['approach']}` | {entry['rows']:,} | {s['status']} | "
            + " | ".join(timing)
            + f" | {m['tree_peak_rss_mib']:.0f} | {m['parent_peak_rss_mib']:.0f} | "
            f"{m['worker_peak_rss_mib']:.0f} | {processes} | {other} |"
        )
    lines += [
        "",
        "Peak RSS, tree: the largest sum of the RSS of every process of the run, sampled "
        f"every {SAMPLE_INTERVAL} s (pages shared between processes count once per process). "
        "parent, worker and every process: each process's own peak (`VmHWM` in `/proc`, "
        "read every sample: exact up to the last sample before the process ended), the "
        "largest over the repeats. Roles: parent is the command the harness started "
        "(bulkpar's CLI, or the script), forkserver and resource tracker are multiprocessing's "
        "helper processes, worker is every other process (pool workers).",
    ]
    failures = [e for e in results["entries"] if e["summary"]["status"] != "ok"]
    if failures:
        lines += ["", "Not timed:", ""]
        for entry in failures:
            for error in entry["summary"]["errors"]:
                first = error.splitlines()[0] if error else ""
                lines.append(f"- `{entry['approach']}` at {entry['rows']:,} rows: {first}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
