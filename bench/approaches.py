"""The approaches the benchmark compares: a registry of name -> :class:`Approach`.

An approach is one complete program that does one job to the seeded table.
The harness (``bench/run.py``) runs each in a fresh process, times it from
process start to exit and checks the table afterwards, so an approach only
says *which command to run* (:meth:`Approach.command`) and *what its output
must say* (:meth:`Approach.outcome`). Four kinds exist:

* :class:`CliApproach` runs ``bulkpar update`` and reads its ``--json`` report.
* :class:`CliInputApproach` runs ``bulkpar create``, ``upsert`` or ``save`` on
  the group's input file and checks every count of its ``--json`` report.
* :class:`ScriptApproach` runs one of the functions in :data:`SCRIPTS` through
  ``python bench/run.py --child NAME``; the function does the whole job in
  that process and reports the rows it wrote and its phases as JSON.
* :class:`PsqlApproach` runs SQL (and ``\\copy``) through ``psql``: the
  plain-SQL references.

Approaches come in groups: ``update`` (the table is seeded, every row is
changed), ``load`` (create and upsert from a JSON Lines file of generated
rows) and ``save`` (``save()`` with a ``post_save`` receiver, from a JSON
Lines file). To add one, write its script function or CLI arguments and add
it in :func:`build_registry`.
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
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from database import (
    LOAD_EXPRESSIONS,
    LOAD_UPDATE_FIELDS,
    PROJECT_DIR,
    PROJECT_PATH_ARG,
    SETTINGS_MODULE,
    TABLE,
    Effect,
    database_settings,
    load_counts,
)

#: Rows per batch / chunk / transaction, for every approach that batches.
CHUNK = 1000
#: Objects per chunk of ``bulkpar save`` (its default, and the issue's figure).
SAVE_CHUNK = 500
#: The fields ``bump`` changes, for the approaches that must name them.
BUMP_FIELDS = ["score", "email"]
MODEL_LABEL = "benchapp.Row"
SAVE_MODEL_LABEL = "benchapp.Signalled"
BUMP_REF = "benchapp.transforms:bump"
BUMP_SCORE_REF = "benchapp.transforms:bump_score"
#: The conflict target of every upsert.
UNIQUE_FIELDS = ["external_id"]
#: The groups, in the order ``--list`` and ``--group all`` show them.
GROUPS = ("update", "load", "save")


@dataclass(frozen=True)
class Workload:
    """What a run works on.

    Attributes:
        rows: rows in the table (update) or input records (load, save).
        inputs: the group's input files by format (``jsonl``, ``csv``);
            empty for the update group.
    """

    rows: int
    inputs: dict[str, Path] = field(default_factory=dict)

    def input(self, fmt: str = "jsonl") -> str:
        """The path of the input file in ``fmt``."""
        return str(self.inputs[fmt])


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
        group: the kind of job (``update``, ``load``, ``save``).
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
    def command(self, work: Workload) -> list[str]:
        """The command line to run, from the repository root."""

    @abstractmethod
    def outcome(self, stdout: str, work: Workload) -> Outcome:
        """Read the program's output."""

    def environment(self) -> dict[str, str]:
        """Variables to add to the command's environment."""
        return {}


def _bulkpar_outcome(report: dict[str, Any]) -> tuple[float, dict[str, float], dict[str, Any]]:
    """In-run seconds, phases and details of a bulkpar ``--json`` report."""
    seconds = float(report["seconds"])
    startup = float(report["startup_seconds"])
    phases = {
        "pool start-up": startup,
        "plan and chunks": seconds - startup,
        **{f"worker {k} (sum)": float(v) for k, v in report["phase_seconds"].items()},
    }
    details = {
        k: report.get(k)
        for k in ("start_method", "chunks", "chunk_seconds", "method", "retries", "notes")
    }
    return seconds, phases, details


@dataclass(frozen=True)
class CliApproach(Approach):
    """``bulkpar update`` through the installed console script, with ``--json``.

    Attributes:
        job_args: the options that say what to do (``--func …`` or ``--set …``).
    """

    job_args: tuple[str, ...] = ()

    def command(self, work: Workload) -> list[str]:
        return [
            *bulkpar_command(),
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

    def outcome(self, stdout: str, work: Workload) -> Outcome:
        report = json.loads(stdout)
        seconds, phases, details = _bulkpar_outcome(report)
        rows = work.rows
        error = None
        if not report["ok"]:
            error = f"report not ok: {report['failed_chunks']} failed chunks {report['errors']}"
        elif report["written"] != rows or report["matched"] != rows:
            error = f"report says matched={report['matched']} written={report['written']}"
        return Outcome(seconds, phases, details, error)


@dataclass(frozen=True)
class CliInputApproach(Approach):
    """``bulkpar create|upsert|save --input FILE`` with ``--json``; every count is checked.

    Attributes:
        operation: ``create``, ``upsert`` or ``save``.
        job_args: further options (``--unique …``, ``--ignore-conflicts``, ``--method …``).
    """

    operation: str = "create"
    job_args: tuple[str, ...] = ()

    def command(self, work: Workload) -> list[str]:
        save = self.operation == "save"
        return [
            *bulkpar_command(),
            self.operation,
            "--settings",
            SETTINGS_MODULE,
            "--pythonpath",
            PROJECT_PATH_ARG,
            "--model",
            SAVE_MODEL_LABEL if save else MODEL_LABEL,
            "--input",
            work.input("jsonl"),
            *self.job_args,
            "--chunk",
            str(SAVE_CHUNK if save else CHUNK),
            "--workers",
            str(self.workers),
            "--quiet",
            "--json",
        ]

    def expected_counts(self, rows: int) -> dict[str, int]:
        """The report's counts that a correct run of this approach must show."""
        zero = {"rejected": 0, "duplicates": 0, "failed_rows": 0}
        if self.effect is Effect.SAVE:
            return {"input_rows": rows, "saved": rows, "created": rows, "updated": 0, **zero}
        split = load_counts(rows)
        existing = rows - split.created
        if self.effect is Effect.CREATE:
            created, updated, unchanged, skipped = rows, 0, 0, 0
        elif self.effect is Effect.CREATE_SKIP:
            created, updated, unchanged, skipped = split.created, 0, 0, existing
        else:
            created, updated, unchanged, skipped = split.created, split.changed, split.equal, 0
        return {
            "input_rows": rows,
            "created": created,
            "updated": updated,
            "unchanged": unchanged,
            "skipped": skipped,
            **zero,
        }

    def outcome(self, stdout: str, work: Workload) -> Outcome:
        report = json.loads(stdout)
        seconds, phases, details = _bulkpar_outcome(report)
        counts = {k: report.get(k) for k in self.expected_counts(work.rows)}
        details["counts"] = counts
        error = None
        if not report["ok"] or not report.get("reconciles", True):
            error = f"report not ok: {report['failed_chunks']} failed chunks {report['errors']}"
        elif counts != self.expected_counts(work.rows):
            error = f"report counts {counts}, expected {self.expected_counts(work.rows)}"
        return Outcome(seconds, phases, details, error)


@dataclass(frozen=True)
class ScriptApproach(Approach):
    """A function of :data:`SCRIPTS`, run as ``python bench/run.py --child SCRIPT``.

    Attributes:
        script: the key of the function in :data:`SCRIPTS`.
    """

    script: str = ""

    def command(self, work: Workload) -> list[str]:
        argv = [sys.executable, "bench/run.py", "--child", self.script]
        if self.workers is not None:
            argv += ["--workers", str(self.workers)]
        if work.inputs:
            argv += ["--input", work.input("jsonl")]
        return argv

    def outcome(self, stdout: str, work: Workload) -> Outcome:
        result = json.loads(stdout.strip().splitlines()[-1])
        error = None
        if result["written"] != work.rows:
            error = f"the script says it wrote {result['written']} rows"
        return Outcome(float(result["seconds"]), result["phases"], {}, error)


@dataclass(frozen=True)
class PsqlApproach(Approach):
    """SQL statements (and ``\\copy``) through one ``psql`` session, each in autocommit.

    The plain-SQL references: ``psql`` starts in milliseconds, so the wall
    time is close to what the server needs for the statements themselves.

    Attributes:
        statements: the commands, in order; ``{csv}`` stands for the group's
            CSV input file. The row count of the last ``UPDATE``/``INSERT``/
            ``DELETE``/``COPY`` must equal :meth:`Effect.changed_rows`.
    """

    statements: tuple[str, ...] = ()

    def command(self, work: Workload) -> list[str]:
        database = database_settings()
        conninfo = " ".join(
            f"{key}={database[setting]}"
            for key, setting in (("host", "HOST"), ("port", "PORT"), ("user", "USER"))
            if database.get(setting)
        )
        csv = work.input("csv").replace("'", "''") if "csv" in work.inputs else ""
        commands = [arg for s in self.statements for arg in ("--command", s.format(csv=csv))]
        return [
            psql_executable(),
            "--no-psqlrc",
            "--set",
            "ON_ERROR_STOP=1",
            "--dbname",
            f"{conninfo} dbname={database['NAME']}",
            "--command",
            "\\timing on",
            *commands,
        ]

    def environment(self) -> dict[str, str]:
        password = database_settings().get("PASSWORD")
        return {"PGPASSWORD": password} if password else {}

    def outcome(self, stdout: str, work: Workload) -> Outcome:
        counted = re.findall(r"^(?:UPDATE|INSERT 0|DELETE|COPY) (\d+)$", stdout, re.MULTILINE)
        timings = [float(t) / 1000 for t in re.findall(r"^Time: ([\d.]+) ms", stdout, re.M)]
        if not counted or len(timings) != len(self.statements):
            raise ValueError("no row count, or not one timing per statement, in psql's output")
        seconds = sum(timings)
        phases = {
            f"{_statement_label(s)} (psql \\timing)": t
            for s, t in zip(self.statements, timings, strict=True)
        }
        error = None
        expected = self.effect.changed_rows(work.rows)
        if int(counted[-1]) != expected:
            error = f"psql says {counted[-1]} rows, expected {expected}"
        return Outcome(seconds, phases, {}, error)


def _statement_label(statement: str) -> str:
    """``\\copy``, ``INSERT``, ``CREATE`` …: the first word of a statement, for phases."""
    first = statement.split(None, 1)[0]
    return first if first.startswith("\\") else first.upper()


def psql_executable() -> str:
    """The ``psql`` client on ``PATH``."""
    found = shutil.which("psql")
    if found is None:
        raise SystemExit("psql is not on PATH (the plain-SQL references run through it)")
    return found


def bulkpar_command() -> list[str]:
    """``python -m bulkpar``: the package first on ``PYTHONPATH`` (``--bulkpar-rev``) runs.

    Not the console script: its entry point names a module of the installed
    version (``bulkpar.cli.app``), which an older revision does not have.
    """
    # -P: the runs start in the repository's root, which ``python -m`` would put first on
    # sys.path, so the working tree's bulkpar would shadow the --bulkpar-rev snapshot
    safe_path = ["-P"] if sys.version_info >= (3, 11) else []
    return [sys.executable, *safe_path, "-m", "bulkpar"]


#: The input columns of the load group, in file order (the COPY column list).
LOAD_COLUMNS = ", ".join(LOAD_EXPRESSIONS)
_UPSERT_SET = ", ".join(f"{c} = EXCLUDED.{c}" for c in LOAD_UPDATE_FIELDS)
_UPSERT_CHANGED = (
    f"({', '.join(f'{TABLE}.{c}' for c in LOAD_UPDATE_FIELDS)}) IS DISTINCT FROM "
    f"({', '.join(f'EXCLUDED.{c}' for c in LOAD_UPDATE_FIELDS)})"
)


def build_registry(workers: Sequence[int] | None = None) -> dict[str, Approach]:
    """Every approach, by name, in the order the results list them.

    Args:
        workers: worker counts for every approach that has a pool; None keeps
            the defaults (bulkpar ``update --func``, ``create``, ``upsert`` and
            ``save`` with 1 and 2, the others with 2).

    ``bulkpar-func-django-wN`` is ``bulkpar-func-wN`` with ``--method django``:
    the same ``bulk_update`` writer as the peers, so that comparing the two
    separates what bulkpar's scheduling gains from what its writer gains.
    """
    func_workers = list(workers or (1, 2))
    pool_workers = list(workers or (2,))
    approaches = [
        *_update(func_workers, pool_workers),
        *_load(func_workers, pool_workers),
        *_save(func_workers, pool_workers),
    ]
    return {a.name: a for a in approaches}


def _update(func_workers: list[int], pool_workers: list[int]) -> list[Approach]:
    bump = Effect.BUMP
    return [
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
        ScriptApproach(
            name="raw-psycopg-update-func",
            group="update",
            effect=bump,
            description="one psycopg 3 connection, no Django: stream every row, bump it in "
            "Python, COPY into a temp table, one UPDATE … FROM (the issue-12 reference)",
            workers=None,
            script="raw-psycopg-update-func",
        ),
        *(
            CliApproach(
                name=f"bulkpar-func-score-w{n}",
                group="update",
                effect=Effect.BUMP_SCORE,
                description=f"bulkpar update --func {BUMP_SCORE_REF} --chunk 1000 --workers {n}: "
                "one narrow column (issue 12's case)",
                workers=n,
                job_args=("--func", BUMP_SCORE_REF),
            )
            for n in func_workers
        ),
        ScriptApproach(
            name="raw-psycopg-update-score",
            group="update",
            effect=Effect.BUMP_SCORE,
            description="one psycopg 3 connection, no Django: stream every row, score + 1 in "
            "Python, COPY into a temp table, one UPDATE … FROM (the issue-12 reference)",
            workers=None,
            script="raw-psycopg-update-score",
        ),
        PsqlApproach(
            name="sql-update-func-equivalent",
            group="update",
            effect=bump,
            description="psql: one UPDATE … SET score = score + 1, email = upper(email)",
            workers=None,
            statements=(f"UPDATE {TABLE} SET score = score + 1, email = upper(email)",),
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
            statements=(f"UPDATE {TABLE} SET active = false",),
        ),
    ]


def _load(func_workers: list[int], pool_workers: list[int]) -> list[Approach]:
    create, upsert = Effect.CREATE, Effect.UPSERT
    upsert_args = ("--unique", ",".join(UNIQUE_FIELDS))

    def script(name: str, effect: Effect, description: str) -> ScriptApproach:
        return ScriptApproach(name, "load", effect, description, workers=None, script=name)

    return [
        script(
            "django-bulk_create-serial",
            create,
            "one process: read the JSONL, Row(**converted record), "
            "bulk_create(batch, batch_size=1000) in a transaction per 1000",
        ),
        script(
            "django-pgbulk-copy",
            create,
            "one process: pgbulk.copy(Row, batch) (django-pgbulk's COPY) per 1000, "
            "a transaction each",
        ),
        script(
            "django-bulk-load-create",
            create,
            "one process: django_bulk_load.bulk_insert_models(batch) per 1000 "
            "(COPY into a temp table + INSERT; Django on psycopg2, which the package needs)",
        ),
        *(
            CliInputApproach(
                name=f"bulkpar-create-w{n}",
                group="load",
                effect=create,
                description=f"bulkpar create --input FILE.jsonl --chunk 1000 --workers {n}",
                workers=n,
                operation="create",
            )
            for n in func_workers
        ),
        PsqlApproach(
            name="copy-from-stdin",
            group="load",
            effect=create,
            description="psql: \\copy benchapp_row (…) FROM the same rows as CSV: "
            "the physical limit of a plain load",
            workers=None,
            statements=(
                f"\\copy {TABLE} ({LOAD_COLUMNS}) FROM '{{csv}}' WITH (FORMAT csv, HEADER)",
            ),
        ),
        *(
            CliInputApproach(
                name=f"bulkpar-create-ignore-conflicts-w{n}",
                group="load",
                effect=Effect.CREATE_SKIP,
                description=f"bulkpar create --ignore-conflicts --chunk 1000 --workers {n}, "
                "half the keys already in the table",
                workers=n,
                operation="create",
                job_args=("--ignore-conflicts",),
            )
            for n in pool_workers
        ),
        script(
            "django-bulk_create-update_conflicts-serial",
            upsert,
            "one process: bulk_create(batch, update_conflicts=True, "
            "unique_fields=['external_id'], update_fields=[every other field], "
            "batch_size=1000) in a transaction per 1000",
        ),
        script(
            "select-bulk_create-bulk_update-serial",
            upsert,
            "one process, a transaction per 1000: select_for_update() the batch's keys, "
            "bulk_create the new rows, bulk_update the existing ones",
        ),
        script(
            "django-bulk-update-or-create",
            upsert,
            "one process: bulk_update_or_create(batch, fields, match_field='external_id') "
            "(django-bulk-update-or-create) per 1000, in a transaction each",
        ),
        script(
            "django-pgbulk-upsert",
            upsert,
            "one process: pgbulk.upsert(Row, batch, ['external_id'], fields, "
            "ignore_unchanged=True) per 1000, a transaction each",
        ),
        script(
            "django-bulk-load-upsert",
            upsert,
            "one process: django_bulk_load.bulk_upsert_models(batch, "
            "pk_field_names=['external_id']) per 1000 (Django on psycopg2)",
        ),
        *(
            CliInputApproach(
                name=f"bulkpar-upsert-w{n}",
                group="load",
                effect=upsert,
                description=f"bulkpar upsert --unique external_id --chunk 1000 --workers {n} "
                "(default writer)",
                workers=n,
                operation="upsert",
                job_args=upsert_args,
            )
            for n in func_workers
        ),
        *(
            CliInputApproach(
                name=f"bulkpar-upsert-values-w{n}",
                group="load",
                effect=upsert,
                description=f"bulkpar upsert --method values --chunk 1000 --workers {n}",
                workers=n,
                operation="upsert",
                job_args=(*upsert_args, "--method", "values"),
            )
            for n in pool_workers
        ),
        script(
            "raw-psycopg-create",
            create,
            "one psycopg 3 connection, no Django: json.loads every line, COPY into the table "
            "(the issue-12 reference)",
        ),
        script(
            "raw-psycopg-upsert",
            upsert,
            "one psycopg 3 connection, no Django: json.loads every line, COPY into a temp "
            "table, one INSERT … ON CONFLICT … WHERE … IS DISTINCT FROM (the issue-12 reference)",
        ),
        PsqlApproach(
            name="copy-temp-insert-on-conflict",
            group="load",
            effect=upsert,
            description="psql: \\copy the CSV into a temp table, then one INSERT … SELECT … "
            "ON CONFLICT (external_id) DO UPDATE … WHERE … IS DISTINCT FROM …",
            workers=None,
            statements=(
                f"CREATE TEMP TABLE incoming AS SELECT {LOAD_COLUMNS} FROM {TABLE} WITH NO DATA",
                f"\\copy incoming ({LOAD_COLUMNS}) FROM '{{csv}}' WITH (FORMAT csv, HEADER)",
                f"INSERT INTO {TABLE} ({LOAD_COLUMNS}) SELECT {LOAD_COLUMNS} FROM incoming "
                f"ON CONFLICT (external_id) DO UPDATE SET {_UPSERT_SET} WHERE {_UPSERT_CHANGED}",
            ),
        ),
    ]


def _save(func_workers: list[int], pool_workers: list[int]) -> list[Approach]:
    return [
        ScriptApproach(
            name="django-save-loop-serial",
            group="save",
            effect=Effect.SAVE,
            description="one process: for each record, Signalled(**converted).save() "
            "(autocommit: every statement commits)",
            workers=None,
            script="django-save-loop-serial",
        ),
        *(
            ScriptApproach(
                name=f"futures-per-object-pool-{n}",
                group="save",
                effect=Effect.SAVE,
                description=f"ProcessPoolExecutor({n}, initializer=django.setup): one future "
                "per object that builds and save()s it, tqdm over as_completed",
                workers=n,
                script="futures-per-object-pool",
            )
            for n in pool_workers
        ),
        *(
            CliInputApproach(
                name=f"bulkpar-save-w{n}",
                group="save",
                effect=Effect.SAVE,
                description=f"bulkpar save --model benchapp.Signalled --input FILE.jsonl "
                f"--chunk 500 --workers {n}",
                workers=n,
                operation="save",
            )
            for n in func_workers
        ),
    ]


# --- the script approaches, run inside `python bench/run.py --child NAME` ---------------------


def _setup_django() -> None:
    import django

    sys.path.insert(0, str(PROJECT_DIR))
    os.environ["DJANGO_SETTINGS_MODULE"] = SETTINGS_MODULE
    django.setup()


def _use_psycopg2() -> None:
    """Make Django's PostgreSQL backend use psycopg2 (before ``django.setup()``).

    django-bulk-load 1.4.3 calls psycopg2's cursor API (``copy_expert``) on
    Django's connection, so it only works with Django on psycopg2. Django
    prefers psycopg 3 when it can import it; marking ``psycopg`` unimportable
    makes it fall back to psycopg2, as in a project that has only psycopg2.
    """
    sys.modules["psycopg"] = None  # type: ignore[assignment]


def _write_batch(batch: list[Any]) -> int:
    from benchapp.models import Row
    from django.db import transaction

    with transaction.atomic():
        return int(Row.objects.bulk_update(batch, BUMP_FIELDS, batch_size=CHUNK))


def django_bulk_update_serial(work: ScriptArgs, phases: dict[str, float]) -> int:
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


def blogpost_pool(work: ScriptArgs, phases: dict[str, float]) -> int:
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
    with multiprocessing.Pool(work.workers, initializer=_blogpost_init) as pool:
        written = sum(pool.map(_blogpost_update_chunk, chunks))
        pool.close()
        pool.join()
    phases["load"] = loaded - start
    phases["transform"] = transformed - loaded
    phases["pool start-up and write"] = time.perf_counter() - transformed
    return written


# --- load group: each script reads the JSON Lines file and converts records itself -------------


def _read_records(path: Path) -> Iterator[dict[str, Any]]:
    """The records of a JSON Lines file, one ``json.loads`` per line."""
    with path.open() as lines:
        for line in lines:
            if line.strip():
                yield json.loads(line)


def _row(record: dict[str, Any]) -> Any:
    """A ``Row`` with the record's values converted to Python types, as a loader would."""
    from benchapp.models import Row

    updated_at = record["updated_at"]
    return Row(
        external_id=record["external_id"],
        name=record["name"],
        email=record["email"],
        score=int(record["score"]),
        amount=Decimal(record["amount"]),
        active=bool(record["active"]),
        updated_at=datetime.fromisoformat(updated_at) if updated_at is not None else None,
    )


def _batches(
    path: Path, phases: dict[str, float], size: int = CHUNK
) -> Iterator[list[dict[str, Any]]]:
    """Batches of ``size`` records; the time spent reading them goes to ``phases['read']``."""
    phases.setdefault("read", 0.0)
    batch: list[dict[str, Any]] = []
    mark = time.perf_counter()
    for record in _read_records(path):
        batch.append(record)
        if len(batch) == size:
            phases["read"] += time.perf_counter() - mark
            yield batch
            batch = []
            mark = time.perf_counter()
    phases["read"] += time.perf_counter() - mark
    if batch:
        yield batch


def _load_with(
    work: ScriptArgs,
    phases: dict[str, float],
    write: Callable[[list[Any]], object],
    *,
    atomic: bool = True,
) -> int:
    """Read the input in batches of 1000, build ``Row`` objects, ``write`` each batch.

    Args:
        work: the script's arguments (the input file).
        phases: ``read``, ``convert`` and ``write`` seconds are added here.
        write: writes one batch of unsaved ``Row`` instances.
        atomic: wrap each ``write`` in ``transaction.atomic()`` (False for a
            library call that opens its own transaction).
    """
    from django.db import transaction

    phases["convert"] = phases["write"] = 0.0
    records = 0
    for batch in _batches(work.input, phases):
        start = time.perf_counter()
        objs = [_row(record) for record in batch]
        converted = time.perf_counter()
        if atomic:
            with transaction.atomic():
                write(objs)
        else:
            write(objs)
        phases["convert"] += converted - start
        phases["write"] += time.perf_counter() - converted
        records += len(batch)
    return records


def django_bulk_create_serial(work: ScriptArgs, phases: dict[str, float]) -> int:
    """``bulk_create`` every batch of 1000 in its own transaction."""
    from benchapp.models import Row

    return _load_with(work, phases, lambda objs: Row.objects.bulk_create(objs, batch_size=CHUNK))


def django_bulk_create_update_conflicts_serial(work: ScriptArgs, phases: dict[str, float]) -> int:
    """``bulk_create(update_conflicts=True)`` (Django's own upsert) per batch of 1000."""
    from benchapp.models import Row

    def write(objs: list[Any]) -> None:
        Row.objects.bulk_create(
            objs,
            batch_size=CHUNK,
            update_conflicts=True,
            unique_fields=UNIQUE_FIELDS,
            update_fields=LOAD_UPDATE_FIELDS,
        )

    return _load_with(work, phases, write)


def select_bulk_create_bulk_update_serial(work: ScriptArgs, phases: dict[str, float]) -> int:
    """The classic upsert: lock existing keys, bulk_create the new rows, bulk_update the rest."""
    from benchapp.models import Row

    def write(objs: list[Any]) -> None:
        keys = [obj.external_id for obj in objs]
        existing = {
            row.external_id: row
            for row in Row.objects.select_for_update().filter(external_id__in=keys)
        }
        new, changed = [], []
        for obj in objs:
            row = existing.get(obj.external_id)
            if row is None:
                new.append(obj)
                continue
            for name in LOAD_UPDATE_FIELDS:
                setattr(row, name, getattr(obj, name))
            changed.append(row)
        Row.objects.bulk_create(new, batch_size=CHUNK)
        Row.objects.bulk_update(changed, LOAD_UPDATE_FIELDS, batch_size=CHUNK)

    return _load_with(work, phases, write)


def django_bulk_update_or_create(work: ScriptArgs, phases: dict[str, float]) -> int:
    """django-bulk-update-or-create's ``bulk_update_or_create``, per batch of 1000.

    The package's queryset (``BulkUpdateOrCreateQuerySet``) is normally the
    model's manager; building it on ``Row`` directly is the same thing
    without changing the model.
    """
    from benchapp.models import Row
    from bulk_update_or_create import BulkUpdateOrCreateQuerySet

    queryset = BulkUpdateOrCreateQuerySet(model=Row)

    def write(objs: list[Any]) -> None:
        queryset.bulk_update_or_create(
            objs, LOAD_UPDATE_FIELDS, match_field="external_id", batch_size=CHUNK
        )

    return _load_with(work, phases, write)


def django_pgbulk_upsert(work: ScriptArgs, phases: dict[str, float]) -> int:
    """``pgbulk.upsert`` (one INSERT … ON CONFLICT per batch), unchanged rows left alone."""
    import pgbulk
    from benchapp.models import Row

    def write(objs: list[Any]) -> None:
        pgbulk.upsert(Row, objs, UNIQUE_FIELDS, LOAD_UPDATE_FIELDS, ignore_unchanged=True)

    return _load_with(work, phases, write)


def django_pgbulk_copy(work: ScriptArgs, phases: dict[str, float]) -> int:
    """``pgbulk.copy`` (COPY … FROM STDIN through psycopg 3) per batch of 1000."""
    import pgbulk
    from benchapp.models import Row

    return _load_with(work, phases, lambda objs: pgbulk.copy(Row, objs))


def django_bulk_load_upsert(work: ScriptArgs, phases: dict[str, float]) -> int:
    """django-bulk-load's ``bulk_upsert_models`` per batch of 1000 (its own transaction)."""
    from django_bulk_load import bulk_upsert_models

    return _load_with(
        work,
        phases,
        lambda objs: bulk_upsert_models(objs, pk_field_names=UNIQUE_FIELDS),
        atomic=False,
    )


def django_bulk_load_create(work: ScriptArgs, phases: dict[str, float]) -> int:
    """django-bulk-load's ``bulk_insert_models`` per batch of 1000 (its own transaction)."""
    from django_bulk_load import bulk_insert_models

    return _load_with(work, phases, bulk_insert_models, atomic=False)


# --- save group --------------------------------------------------------------------------------


def _signalled(record: dict[str, Any]) -> Any:
    """A new ``Signalled`` with the record's values converted to Python types."""
    from benchapp.models import Signalled

    return Signalled(
        external_id=record["external_id"],
        name=record["name"],
        quantity=int(record["quantity"]),
        unit_price=Decimal(record["unit_price"]),
    )


def django_save_loop_serial(work: ScriptArgs, phases: dict[str, float]) -> int:
    """``obj.save()`` per record, in autocommit: each statement is its own transaction."""
    phases["read"] = phases["save"] = 0.0
    saved = 0
    mark = time.perf_counter()
    for record in _read_records(work.input):
        obj = _signalled(record)
        now = time.perf_counter()
        phases["read"] += now - mark
        obj.save()
        mark = time.perf_counter()
        phases["save"] += mark - now
        saved += 1
    return saved


def _futures_init() -> None:
    """Initializer of the futures approach: every worker runs ``django.setup()``."""
    _setup_django()


def _futures_save_one(record: dict[str, Any]) -> int:
    """One future: build the object from its record and ``save()`` it (autocommit)."""
    obj = _signalled(record)
    obj.save()
    return int(obj.pk)


def futures_per_object_pool(work: ScriptArgs, phases: dict[str, float]) -> int:
    """The popular recipe: a ProcessPoolExecutor, one future per object, tqdm over as_completed."""
    from concurrent.futures import ProcessPoolExecutor, as_completed

    from django.db import connections
    from tqdm import tqdm

    start = time.perf_counter()
    records = list(_read_records(work.input))
    read = time.perf_counter()
    connections.close_all()  # forked workers must not share the parent's socket
    saved = 0
    with ProcessPoolExecutor(max_workers=work.workers, initializer=_futures_init) as pool:
        futures = [pool.submit(_futures_save_one, record) for record in records]
        for future in tqdm(as_completed(futures), total=len(futures)):
            future.result()
            saved += 1
    phases["read"] = read - start
    phases["pool start-up and save"] = time.perf_counter() - read
    return saved


def _raw_rows(path: Path) -> Iterator[tuple[Any, ...]]:
    """The load group's records as COPY rows (LOAD_EXPRESSIONS order), parsed in Python."""
    columns = list(LOAD_EXPRESSIONS)
    with path.open("rb") as file:
        for line in file:
            record = json.loads(line)
            yield tuple(record[c] for c in columns)


def _raw_copy(cursor: Any, table: str, rows: Iterator[tuple[Any, ...]]) -> int:
    count = 0
    with cursor.copy(f"COPY {table} ({LOAD_COLUMNS}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)
            count += 1
    return count


def _raw_update(
    columns: Sequence[str],
    transform: Callable[[tuple[Any, ...]], tuple[Any, ...]],
    phases: dict[str, float],
) -> int:
    """One psycopg 3 connection, no Django: stream the rows' ``columns``, transform them in
    Python, COPY them into a temp table, one ``UPDATE … FROM`` and one commit."""
    import database

    names = ", ".join(columns)
    sets = ", ".join(f"{c} = b.{c}" for c in columns)
    start = time.perf_counter()
    with database.connect() as conn, conn.cursor() as cursor:
        cursor.execute(
            f"CREATE TEMP TABLE bumped ON COMMIT DROP AS SELECT id, {names} FROM {TABLE} "
            "WITH NO DATA"
        )
        rows = []
        with conn.cursor(name="rows") as reader:  # a server-side cursor: rows stream
            reader.itersize = 10_000
            reader.execute(f"SELECT id, {names} FROM {TABLE} ORDER BY id")
            for row in reader:
                rows.append((row[0], *transform(row[1:])))
        read = time.perf_counter()
        phases["read and transform"] = read - start
        with cursor.copy(f"COPY bumped (id, {names}) FROM STDIN") as copy:
            for values in rows:
                copy.write_row(values)
        cursor.execute(f"UPDATE {TABLE} AS t SET {sets} FROM bumped AS b WHERE t.id = b.id")
        written = int(cursor.rowcount)
        conn.commit()
        phases["copy and update"] = time.perf_counter() - read
    return written


def raw_psycopg_update_func(work: ScriptArgs, phases: dict[str, float]) -> int:
    """The reference for ``bump``: score + 1 and upper-cased email."""
    return _raw_update(["score", "email"], lambda r: (r[0] + 1, r[1].upper()), phases)


def raw_psycopg_update_score(work: ScriptArgs, phases: dict[str, float]) -> int:
    """The reference for ``bump_score``: score + 1."""
    return _raw_update(["score"], lambda r: (r[0] + 1,), phases)


def raw_psycopg_create(work: ScriptArgs, phases: dict[str, float]) -> int:
    """One psycopg 3 connection, no Django: parse the JSON Lines in Python, COPY into the table."""
    import database

    start = time.perf_counter()
    with database.connect() as conn, conn.cursor() as cursor:
        written = _raw_copy(cursor, TABLE, _raw_rows(work.input))
        conn.commit()
    phases["read and copy"] = time.perf_counter() - start
    return written


def raw_psycopg_upsert(work: ScriptArgs, phases: dict[str, float]) -> int:
    """One psycopg 3 connection: parse, COPY into a temp table, one INSERT … ON CONFLICT."""
    import database

    start = time.perf_counter()
    with database.connect() as conn, conn.cursor() as cursor:
        cursor.execute(
            f"CREATE TEMP TABLE incoming ON COMMIT DROP AS "
            f"SELECT {LOAD_COLUMNS} FROM {TABLE} WITH NO DATA"
        )
        records = _raw_copy(cursor, "incoming", _raw_rows(work.input))
        copied = time.perf_counter()
        phases["read and copy"] = copied - start
        cursor.execute(
            f"INSERT INTO {TABLE} ({LOAD_COLUMNS}) SELECT {LOAD_COLUMNS} FROM incoming "
            f"ON CONFLICT (external_id) DO UPDATE SET {_UPSERT_SET} WHERE {_UPSERT_CHANGED}"
        )
        conn.commit()
        phases["insert on conflict"] = time.perf_counter() - copied
    return records


@dataclass(frozen=True)
class ScriptArgs:
    """What ``--child`` passes a script function.

    Attributes:
        workers: ``--workers`` (pool size) or None.
        input_path: ``--input`` (the group's JSON Lines file); None for the update group.
    """

    workers: int | None
    input_path: Path | None

    @property
    def input(self) -> Path:
        """The input file (the load and save scripts need one)."""
        if self.input_path is None:
            raise SystemExit("this script needs --input FILE")
        return self.input_path


@dataclass(frozen=True)
class Script:
    """A script approach's function and how its process must be set up.

    Attributes:
        run: the function; returns the rows it wrote (or records it processed).
        django: set Django up first (``seconds`` starts after that).
        psycopg2: make Django use psycopg2 (see :func:`_use_psycopg2`).
    """

    run: Callable[[ScriptArgs, dict[str, float]], int]
    django: bool
    psycopg2: bool = False


#: The functions ``python bench/run.py --child NAME`` can run.
SCRIPTS: dict[str, Script] = {
    "django-bulk_update-serial": Script(django_bulk_update_serial, django=True),
    "blogpost-pool": Script(blogpost_pool, django=True),
    "django-bulk_create-serial": Script(django_bulk_create_serial, django=True),
    "django-bulk_create-update_conflicts-serial": Script(
        django_bulk_create_update_conflicts_serial, django=True
    ),
    "select-bulk_create-bulk_update-serial": Script(
        select_bulk_create_bulk_update_serial, django=True
    ),
    "django-bulk-update-or-create": Script(django_bulk_update_or_create, django=True),
    "django-pgbulk-upsert": Script(django_pgbulk_upsert, django=True),
    "django-pgbulk-copy": Script(django_pgbulk_copy, django=True),
    "django-bulk-load-upsert": Script(django_bulk_load_upsert, django=True, psycopg2=True),
    "django-bulk-load-create": Script(django_bulk_load_create, django=True, psycopg2=True),
    "django-save-loop-serial": Script(django_save_loop_serial, django=True),
    "futures-per-object-pool": Script(futures_per_object_pool, django=True),
    "raw-psycopg-update-func": Script(raw_psycopg_update_func, django=False),
    "raw-psycopg-update-score": Script(raw_psycopg_update_score, django=False),
    "raw-psycopg-create": Script(raw_psycopg_create, django=False),
    "raw-psycopg-upsert": Script(raw_psycopg_upsert, django=False),
}


def run_script(name: str, workers: int | None, input_path: Path | None = None) -> None:
    """Run one script approach in this process and print its result as one JSON line.

    ``seconds`` starts after Django is set up, so that it compares with the
    ``seconds`` of a bulkpar report (which starts after the CLI loaded Django).
    """
    script = SCRIPTS[name]
    if script.psycopg2:
        _use_psycopg2()
    if script.django:
        _setup_django()
    phases: dict[str, float] = {}
    start = time.perf_counter()
    written = script.run(ScriptArgs(workers, input_path), phases)
    seconds = time.perf_counter() - start
    print(json.dumps({"written": written, "seconds": seconds, "phases": phases}))
