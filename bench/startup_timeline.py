"""Where a short ``bulkpar update`` spends its fixed start-up, and how revisions compare.

    python bench/startup_timeline.py timeline --rows 100000 --repeat 3 -- --set active=false
    python bench/startup_timeline.py compare --rows 100000 --repeat 7 982078c HEAD tree \\
        --sql "UPDATE benchapp_row SET active = false" -- --set active=false

Both seed ``benchapp.Row`` as bench/run.py does (``$BENCH_DATABASE_URL``, untimed)
before every run, and run ``python -m bulkpar update --settings benchproject.settings
--model benchapp.Row ARGS --chunk 1000 --workers 2 --quiet --json`` from a scratch
directory, timed from just before the process starts until it exits.

``timeline`` puts a ``sitecustomize`` on the run's ``PYTHONPATH`` that logs, in every
process of the run (the CLI, the forkserver, the workers), when the interpreter
started and when the start-up steps began and ended: ``django.setup()``, the
forkserver's early start, the database check, the small-job decision, the pool's
start and warm-up, each worker's ``init_worker``, the chunk loop, the pool's
shutdown, and the interpreter's exit (seconds since the launch). It prints each
run's events and, for the parent's main steps, the median over the runs.

``compare`` runs revisions of bulkpar (git revisions, exported with ``git
archive``, or ``tree`` for the working tree) interleaved, in rotating order,
waiting for a quiet machine before each run, and with ``--sql`` a ``psql``
statement as the reference; it prints the median, min and max seconds of each.
Each run imports the revision's own package: the scratch directory is the
current directory, and the revision is first on ``PYTHONPATH`` (bench/run.py runs
from the repository root, where the working tree's package comes first).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import database

ROOT = database.REPO_ROOT
FIXED = ("--chunk", "1000", "--workers", "2")
#: Functions the probes log the start and end of, by module (``Class.method`` too).
PROBES = {
    "bulkpar.bootstrap": ["setup_django", "check_database"],
    "bulkpar.engine.worker": ["init_worker"],
    "bulkpar.engine.executors": [
        "ProcessBackend.start_early", "ProcessBackend.create", "ProcessBackend.warm_up",
        "PoolStart.wait",
    ],
    "bulkpar.engine.runner": [
        "run", "_Scheduler.start", "_Scheduler._plan_ends_within", "_Scheduler.loop",
        "_Scheduler.close",
    ],
}  # fmt: skip
SITECUSTOMIZE = """
import atexit, functools, importlib.abc, importlib.util, json, os, sys, time
LOG, T0 = os.environ["STARTUP_TIMELINE_LOG"], float(os.environ["STARTUP_TIMELINE_T0"])
PROBES = {probes}

def log(event):
    with open(LOG, "a") as file:
        file.write(json.dumps([round(time.time() - T0, 4), os.getpid(), event]) + "\\n")

def wrap(owner, name, label):
    function = getattr(owner, name)
    @functools.wraps(function)
    def probe(*args, **kwargs):
        log(label + " start")
        try:
            return function(*args, **kwargs)
        finally:
            log(label + " end")
    setattr(owner, name, probe)

class Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname not in PROBES:
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            sys.meta_path.insert(0, self)
        execute = spec.loader.exec_module
        def exec_module(module):
            execute(module)
            for dotted in PROBES[fullname]:
                *path, name = dotted.split(".")
                owner = module
                for part in path:
                    owner = getattr(owner, part)
                if hasattr(owner, name):
                    wrap(owner, name, dotted)
        spec.loader.exec_module = exec_module
        return spec

sys.meta_path.insert(0, Finder())
log("interpreter")
atexit.register(lambda: log("exit handlers"))
"""


def command(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "bulkpar", "update", "--settings", database.SETTINGS_MODULE,
            "--pythonpath", str(database.PROJECT_DIR), "--model", "benchapp.Row", *FIXED,
            *args, "--quiet", "--json"]  # fmt: skip


def seed(rows: int) -> None:
    with database.connect(autocommit=True) as conn:
        database.seed(conn, rows)


def wait_for_quiet(limit: float = 120.0) -> None:
    """Until the whole machine used less than 5 % of its CPUs for a second."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        before = _ticks()
        time.sleep(1.0)
        after = _ticks()
        if (after[0] - before[0]) / max(1, after[1] - before[1]) < 0.05:
            return


def _ticks() -> tuple[int, int]:
    with open("/proc/stat") as stat:
        values = [int(v) for v in stat.readline().split()[1:]]
    return sum(values) - values[3] - values[4], sum(values)


def launch(cmd: list[str], env: dict[str, str], cwd: str) -> tuple[float, str]:
    """Run ``cmd``; seconds until *it* exits (the forkserver, which holds its
    stdout, may outlive it by a moment), and what it printed."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        process = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=out, stderr=err)
        returncode = process.wait()
        seconds = time.perf_counter() - start
        if returncode != 0:
            err.seek(0)
            raise SystemExit(f"{' '.join(cmd)} failed:\n{err.read().decode()}")
        time.sleep(0.2)  # let the forkserver finish writing, if it wrote anything
        out.seek(0)
        return seconds, out.read().decode()


def timeline(args: argparse.Namespace) -> None:
    marks: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="bulkpar-timeline-") as scratch:
        Path(scratch, "sitecustomize.py").write_text(SITECUSTOMIZE.format(probes=PROBES))
        for _ in range(args.repeat):
            seed(args.rows)
            wait_for_quiet()
            log = Path(scratch, "events.jsonl")
            log.unlink(missing_ok=True)
            t0 = time.time()
            env = {**os.environ, "STARTUP_TIMELINE_LOG": str(log), "STARTUP_TIMELINE_T0": repr(t0),
                   "PYTHONPATH": os.pathsep.join([scratch, str(ROOT)])}  # fmt: skip
            seconds, out = launch(command(args.bulkpar), env, scratch)
            report = json.loads(out)
            events = [json.loads(line) for line in log.read_text().splitlines()]
            parent = events[0][1]
            for at, pid, event in events:
                who = "cli" if pid == parent else str(pid)
                print(f"{at:7.3f} {who:>7} {event}")
                if pid == parent:
                    marks.setdefault(event, []).append(at)
            marks.setdefault("process exited", []).append(seconds)
            print(f"{seconds:7.3f}     cli process exited; report: executor "
                  f"{report['executor']}, seconds {report['seconds']}, "
                  f"startup_seconds {report['startup_seconds']}\n")  # fmt: skip
    print("median over the runs (the CLI's own events):")
    for event, times in sorted(marks.items(), key=lambda item: statistics.median(item[1])):
        print(f"{statistics.median(times):7.3f} {event}")


def export(revision: str, into: Path) -> Path:
    if revision == "tree":
        return ROOT
    archive = subprocess.run(["git", "archive", revision, "bulkpar"], cwd=ROOT,
                             capture_output=True, check=True).stdout  # fmt: skip
    into.mkdir()
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def compare(args: argparse.Namespace) -> None:
    seconds: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="bulkpar-compare-") as scratch:
        variants: list[tuple[str, Any]] = [
            (rev, export(rev, Path(scratch, f"rev{i}"))) for i, rev in enumerate(args.revisions)
        ]
        if args.sql:
            variants.append(("psql", None))
        for repeat in range(args.repeat):
            shift = repeat % len(variants)
            for name, where in variants[shift:] + variants[:shift]:
                seed(args.rows)
                wait_for_quiet()
                if where is None:
                    cmd = ["psql", database.describe_url(), "-q", "-c", args.sql]
                    took, _ = launch(cmd, dict(os.environ), scratch)
                else:
                    env = {**os.environ, "PYTHONPATH": str(where)}
                    took, out = launch(command(args.bulkpar), env, scratch)
                    json.loads(out)
                seconds.setdefault(name, []).append(took)
                print(f"repeat {repeat + 1} {name:12} {took:.3f} s", flush=True)
    for name, values in seconds.items():
        print(f"{name:12} median {statistics.median(values):.3f} s  "
              f"min {min(values):.3f}  max {max(values):.3f}  (n={len(values)})")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    for name in ("timeline", "compare"):
        mode = sub.add_parser(name)
        mode.add_argument("--rows", type=int, default=100_000)
        mode.add_argument("--repeat", type=int, default=3)
        if name == "compare":
            mode.add_argument("revisions", nargs="+", help="git revisions, or 'tree'")
            mode.add_argument("--sql", help="a psql statement to time as the reference")
    argv = sys.argv[1:]
    cut = argv.index("--") if "--" in argv else len(argv)
    args = parser.parse_args(argv[:cut])
    args.bulkpar = argv[cut + 1 :]
    database.prepare()
    if args.mode == "timeline":
        timeline(args)
    else:
        compare(args)


if __name__ == "__main__":
    main()
