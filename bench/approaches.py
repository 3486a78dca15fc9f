"""The approaches the benchmark compares: a registry of name -> :class:`Approach`.

An approach is one complete program that does one job to the seeded table.
The harness (``bench/run.py``) runs each in a fresh process, times it from
process start to exit and checks the table afterwards, so an approach only
says *which command to run* (:meth:`Approach.command`) and *what its output
must say* (:meth:`Approach.outcome`). Three kinds exist:

* :class:`CliApproach` runs the real ``bulkpar`` executable and reads its
  ``--json`` report.
* :class:`ScriptApproach` runs one of the functions in :data:`SCRIPTS` through
  ``python bench/run.py --child NAME``; the function does the whole job in
  that process and reports the rows it wrote and its phases as JSON.
* :class:`PsqlApproach` runs one SQL statement through ``psql``: the
  plain-SQL references.

To add an approach (create/upsert, django-pgbulk, raw COPY …), write its
script function or CLI arguments and add it in :func:`build_registry`.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import shutil
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from database import (
    PROJECT_DIR,
    PROJECT_PATH_ARG,
    SETTINGS_MODULE,
    TABLE,
    Effect,
    database_settings,
)

#: Rows per batch / chunk / transaction, for every approach that batches.
CHUNK = 1000
#: The fields ``bump`` changes, for the approaches that must name them.
BUMP_FIELDS = ["score", "email"]
MODEL_LABEL = "benchapp.Row"
BUMP_REF = "benchapp.transforms:bump"


@dataclass(frozen=True)
class Outcome:
    """What a finished run said about itself (the table is checked separately).

    Attributes:
        in_run_seconds: the seconds the program measured for the job itself,
            after its interpreter started and Django was set up.
        phases: seconds per phase, as the program measured them.
        details: anything else worth keeping in the JSON results.
        error: why the output shows the job was not done right (None if it was).
    """

    in_run_seconds: float | None
    phases: dict[str, float] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


@dataclass(frozen=True)
class Approach(ABC):
    """One way of doing a job, measured end to end in its own process.

    Attributes:
        name: unique name, used by ``--only`` and in the results.
        group: the kind of job (``update``; later ``create``, ``upsert`` …).
        effect: what the job does to the seeded table (checked afterwards).
        description: one line for the README and the results.
        workers: parallel processes, when the approach has a pool.
    """

    name: str
    group: str
    effect: Effect
    description: str
    workers: int | None

    @abstractmethod
    def command(self) -> list[str]:
        """The command line to run, from the repository root."""

    @abstractmethod
    def outcome(self, stdout: str, rows: int) -> Outcome:
        """Read the program's output; ``rows`` is how many rows the table holds."""

    def environment(self) -> dict[str, str]:
        """Variables to add to the command's environment."""
        return {}


@dataclass(frozen=True)
class CliApproach(Approach):
    """``bulkpar update`` through the installed console script, with ``--json``.

    Attributes:
        job_args: the options that say what to do (``--func …`` or ``--set …``).
    """

    job_args: tuple[str, ...] = ()

    def command(self) -> list[str]:
        return [
            bulkpar_executable(),
            "update",
            "--settings",
            SETTINGS_MODULE,
            "--pythonpath",
            PROJECT_PATH_ARG,
            "--model",
            MODEL_LABEL,
            *self.job_args,
            "--chunk",
            str(CHUNK),
            "--workers",
            str(self.workers),
            "--quiet",
            "--json",
        ]

    def outcome(self, stdout: str, rows: int) -> Outcome:
        report = json.loads(stdout)
        seconds = float(report["seconds"])
        startup = float(report["startup_seconds"])
        phases = {
            "pool start-up": startup,
            "plan and chunks": seconds - startup,
            **{f"worker {k} (sum)": float(v) for k, v in report["phase_seconds"].items()},
        }
        details = {
            k: report[k]
            for k in ("start_method", "chunks", "chunk_seconds", "method", "retries", "notes")
        }
        error = None
        if not report["ok"]:
            error = f"report not ok: {report['failed_chunks']} failed chunks {report['errors']}"
        elif report["written"] != rows or report["matched"] != rows:
            error = f"report says matched={report['matched']} written={report['written']}"
        return Outcome(seconds, phases, details, error)


@dataclass(frozen=True)
class ScriptApproach(Approach):
    """A function of :data:`SCRIPTS`, run as ``python bench/run.py --child SCRIPT``.

    Attributes:
        script: the key of the function in :data:`SCRIPTS`.
    """

    script: str = ""

    def command(self) -> list[str]:
        argv = [sys.executable, "bench/run.py", "--child", self.script]
        return argv if self.workers is None else [*argv, "--workers", str(self.workers)]

    def outcome(self, stdout: str, rows: int) -> Outcome:
        result = json.loads(stdout.strip().splitlines()[-1])
        error = None
        if result["written"] != rows:
            error = f"the script says it wrote {result['written']} rows"
        return Outcome(float(result["seconds"]), result["phases"], {}, error)


@dataclass(frozen=True)
class PsqlApproach(Approach):
    """One SQL statement through ``psql`` (autocommit: the statement is one transaction).

    The plain-SQL references: ``psql`` starts in milliseconds, so the wall
    time is close to what the server needs for the statement itself.

    Attributes:
        statement: an ``UPDATE``/``INSERT``/``DELETE`` whose row count must equal the rows.
    """

    statement: str = ""

    def command(self) -> list[str]:
        database = database_settings()
        conninfo = " ".join(
            f"{key}={database[setting]}"
            for key, setting in (("host", "HOST"), ("port", "PORT"), ("user", "USER"))
            if database.get(setting)
        )
        return [
            psql_executable(),
            "--no-psqlrc",
            "--set",
            "ON_ERROR_STOP=1",
            "--dbname",
            f"{conninfo} dbname={database['NAME']}",
            "--command",
            "\\timing on",
            "--command",
            self.statement,
        ]

    def environment(self) -> dict[str, str]:
        password = database_settings().get("PASSWORD")
        return {"PGPASSWORD": password} if password else {}

    def outcome(self, stdout: str, rows: int) -> Outcome:
        counted = re.search(r"^(?:UPDATE|INSERT 0|DELETE) (\d+)$", stdout, re.MULTILINE)
        timing = re.search(r"^Time: ([\d.]+) ms", stdout, re.MULTILINE)
        if counted is None or timing is None:
            raise ValueError("no row count or timing in psql's output")
        seconds = float(timing.group(1)) / 1000
        error = None
        if int(counted.group(1)) != rows:
            error = f"psql says {counted.group(1)} rows"
        return Outcome(seconds, {"statement (psql \\timing)": seconds}, {}, error)


def psql_executable() -> str:
    """The ``psql`` client on ``PATH``."""
    found = shutil.which("psql")
    if found is None:
        raise SystemExit("psql is not on PATH (the plain-SQL references run through it)")
    return found


def bulkpar_executable() -> str:
    """The ``bulkpar`` console script installed beside this interpreter."""
    script = Path(sys.executable).with_name("bulkpar")
    if not script.exists():
        raise SystemExit(f"bulkpar is not installed beside {sys.executable}: pip install -e .")
    return str(script)


def build_registry(workers: Sequence[int] | None = None) -> dict[str, Approach]:
    """Every approach, by name, in the order the results list them.

    Args:
        workers: worker counts for every approach that has a pool; None keeps
            the defaults (bulkpar --func with 1 and 2, the others with 2).

    ``bulkpar-func-django-wN`` is ``bulkpar-func-wN`` with ``--method django``:
    the same ``bulk_update`` writer as the peers, so that comparing the two
    separates what bulkpar's scheduling gains from what its writer gains.
    """
    func_workers = list(workers or (1, 2))
    pool_workers = list(workers or (2,))
    bump = Effect.BUMP
    approaches: list[Approach] = [
        ScriptApproach(
            name="django-bulk_update-serial",
            group="update",
            effect=bump,
            description="one process: .iterator(chunk_size=1000) by pk, bump, "
            "bulk_update(batch, ['score', 'email'], batch_size=1000) in a transaction per batch",
            workers=None,
            script="django-bulk_update-serial",
        ),
        *(
            ScriptApproach(
                name=f"blogpost-pool-{n}",
                group="update",
                effect=bump,
                description=f"load every row and bump it in the parent, then "
                f"multiprocessing.Pool({n}).map(bulk_update) over pickled chunks of 1000",
                workers=n,
                script="blogpost-pool",
            )
            for n in pool_workers
        ),
        *(
            CliApproach(
                name=f"bulkpar-func-w{n}",
                group="update",
                effect=bump,
                description=f"bulkpar update --func {BUMP_REF} --chunk 1000 --workers {n}",
                workers=n,
                job_args=("--func", BUMP_REF),
            )
            for n in func_workers
        ),
        *(
            CliApproach(
                name=f"bulkpar-func-django-w{n}",
                group="update",
                effect=bump,
                description=f"bulkpar update --func {BUMP_REF} --method django --chunk 1000 "
                f"--workers {n}: bulk_update, the peers' writer",
                workers=n,
                job_args=("--func", BUMP_REF, "--method", "django"),
            )
            for n in pool_workers
        ),
        PsqlApproach(
            name="sql-update-func-equivalent",
            group="update",
            effect=bump,
            description="psql: one UPDATE … SET score = score + 1, email = upper(email)",
            workers=None,
            statement=f"UPDATE {TABLE} SET score = score + 1, email = upper(email)",
        ),
        *(
            CliApproach(
                name=f"bulkpar-set-w{n}",
                group="update",
                effect=Effect.DEACTIVATE,
                description=f"bulkpar update --set active=false --chunk 1000 --workers {n}",
                workers=n,
                job_args=("--set", "active=false"),
            )
            for n in pool_workers
        ),
        PsqlApproach(
            name="sql-update-set",
            group="update",
            effect=Effect.DEACTIVATE,
            description="psql: one UPDATE … SET active = false",
            workers=None,
            statement=f"UPDATE {TABLE} SET active = false",
        ),
    ]
    return {a.name: a for a in approaches}


# --- the script approaches, run inside `python bench/run.py --child NAME` ---------------------


def _setup_django() -> None:
    import django

    sys.path.insert(0, str(PROJECT_DIR))
    os.environ["DJANGO_SETTINGS_MODULE"] = SETTINGS_MODULE
    django.setup()


def _write_batch(batch: list[Any]) -> int:
    from benchapp.models import Row
    from django.db import transaction

    with transaction.atomic():
        return int(Row.objects.bulk_update(batch, BUMP_FIELDS, batch_size=CHUNK))


def django_bulk_update_serial(workers: int | None, phases: dict[str, float]) -> int:
    """Stream the rows by pk, bump them, bulk_update each batch of 1000 in its own transaction."""
    from benchapp.models import Row
    from benchapp.transforms import bump

    phases["read and transform"] = phases["write"] = 0.0
    written = 0
    batch: list[Row] = []
    mark = time.perf_counter()
    for obj in Row.objects.order_by("pk").iterator(chunk_size=CHUNK):
        bump(obj)
        batch.append(obj)
        if len(batch) == CHUNK:
            now = time.perf_counter()
            phases["read and transform"] += now - mark
            written += _write_batch(batch)
            batch = []
            mark = time.perf_counter()
            phases["write"] += mark - now
    if batch:
        now = time.perf_counter()
        phases["read and transform"] += now - mark
        written += _write_batch(batch)
        phases["write"] += time.perf_counter() - now
    return written


def _blogpost_init() -> None:
    """Pool initializer of the blog-post approach: every worker sets Django up."""
    import django

    django.setup()


def _blogpost_update_chunk(chunk: list[Any]) -> int:
    from benchapp.models import Row

    return int(Row.objects.bulk_update(chunk, BUMP_FIELDS))


def blogpost_pool(workers: int | None, phases: dict[str, float]) -> int:
    """The blog-post recipe: load and bump everything in the parent, Pool.map the writes."""
    from benchapp.models import Row
    from benchapp.transforms import bump
    from django.db import connections

    start = time.perf_counter()
    objs = list(Row.objects.all())
    loaded = time.perf_counter()
    for obj in objs:
        bump(obj)
    transformed = time.perf_counter()
    chunks = [objs[i : i + CHUNK] for i in range(0, len(objs), CHUNK)]
    connections.close_all()  # forked workers must not share the parent's socket
    with multiprocessing.Pool(workers, initializer=_blogpost_init) as pool:
        written = sum(pool.map(_blogpost_update_chunk, chunks))
        pool.close()
        pool.join()
    phases["load"] = loaded - start
    phases["transform"] = transformed - loaded
    phases["pool start-up and write"] = time.perf_counter() - transformed
    return written


@dataclass(frozen=True)
class Script:
    """A script approach's function and whether it needs Django set up first."""

    run: Callable[[int | None, dict[str, float]], int]
    django: bool


#: The functions ``python bench/run.py --child NAME`` can run.
SCRIPTS: dict[str, Script] = {
    "django-bulk_update-serial": Script(django_bulk_update_serial, django=True),
    "blogpost-pool": Script(blogpost_pool, django=True),
}


def run_script(name: str, workers: int | None) -> None:
    """Run one script approach in this process and print its result as one JSON line.

    ``seconds`` starts after Django is set up, so that it compares with the
    ``seconds`` of a bulkpar report (which starts after the CLI loaded Django).
    """
    script = SCRIPTS[name]
    if script.django:
        _setup_django()
    phases: dict[str, float] = {}
    start = time.perf_counter()
    written = script.run(workers, phases)
    seconds = time.perf_counter() - start
    print(json.dumps({"written": written, "seconds": seconds, "phases": phases}))
