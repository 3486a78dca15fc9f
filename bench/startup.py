"""Time from "start a pool" to "every worker has run django.setup()", per start method.

    python bench/startup.py --workers 2 --repeat 5

Uses the demo project (examples/demo). Each measurement runs in a fresh
interpreter so that a forkserver started by an earlier measurement is not
reused. Prints the median seconds per start method.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHILD = """
import sys, time
start = time.perf_counter()
from bulkpar.bootstrap import setup_django
setup_django("demo.settings", [{demo!r}])
from bulkpar.engine.contracts import RunOptions, Target
from bulkpar.engine.executors import make_executor, warm_up
options = RunOptions(workers={workers}, executor="process", start_method={method!r})
executor, _ = make_executor(options, Target.current("default"))
warm_up(executor, {workers})
print(time.perf_counter() - start)
executor.shutdown()
"""


def measure(method: str, workers: int) -> float:
    code = CHILD.format(demo=str(ROOT / "examples" / "demo"), workers=workers, method=method)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    results: dict[str, list[float]] = {m: [] for m in ("fork", "forkserver", "spawn")}
    for _ in range(args.repeat):
        for method in results:  # interleaved, so drift favours no method
            results[method].append(measure(method, args.workers))
    summary = {m: round(statistics.median(v), 3) for m, v in results.items()}
    print(json.dumps({"workers": args.workers, "repeat": args.repeat, "median_s": summary}))


if __name__ == "__main__":
    main()
