"""The ``bulkpar`` command: parse options, call the Python API, render the result.

No logic of its own lives here: errors from the library are turned into
one-line click errors in :func:`errors_as_click_exceptions`, the only place
that knows about exit codes.
"""

from __future__ import annotations

import contextlib
import gc
import json
import sys
import traceback
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import click

from bulkpar import __version__
from bulkpar.cli.bench import OPERATIONS as BENCH_OPERATIONS
from bulkpar.cli.options import (
    input_options,
    method_option,
    model_option,
    project_options,
    run_options,
    selection_options,
    validate_option,
)
from bulkpar.errors import BulkparError, UsageError

F = TypeVar("F", bound=Callable[..., Any])
CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
EXIT_FAILED_CHUNKS = 1


@contextlib.contextmanager
def errors_as_click_exceptions(show_traceback: bool) -> Iterator[None]:
    """Turn library errors into one-line click errors (``--traceback`` adds the rest)."""
    try:
        yield
    except click.exceptions.Exit:
        raise
    except (BulkparError, Exception) as exc:
        if isinstance(exc, click.ClickException):
            raise
        if show_traceback:
            traceback.print_exc()
        if isinstance(exc, UsageError):
            raise click.UsageError(str(exc).splitlines()[0]) from exc
        if isinstance(exc, BulkparError):
            raise click.ClickException(str(exc).splitlines()[0]) from exc
        from django.core.exceptions import ImproperlyConfigured

        if isinstance(exc, ImproperlyConfigured):
            raise click.ClickException(
                f"Django is not configured correctly: {exc}"
                + (
                    "; install the driver with: pip install 'bulkpar[postgres]' "
                    "(or 'bulkpar[mysql]')"
                    if "module" in str(exc).lower()
                    else ""
                )
            ) from exc
        raise click.ClickException(
            f"unexpected error: {type(exc).__name__}: {exc} (run with --traceback for details)"
        ) from exc


def _progress_sink(quiet: bool) -> Any:
    from rich.console import Console

    from bulkpar.cli.console import ConsoleNotices, RichProgress

    stderr = Console(stderr=True)
    if quiet or not stderr.is_terminal:
        return ConsoleNotices(stderr)
    return RichProgress(stderr)


def _finish(report: Any, as_json: bool) -> None:
    """Print the report, then one line on stderr about what went wrong, and exit.

    Exit 0 exactly when ``report.ok``; 128 + the signal after an interrupt;
    1 otherwise (failed chunks, a stop, rejects beyond ``--max-rejects``).
    """
    from rich.console import Console

    from bulkpar.cli.console import render_report

    if as_json:
        click.echo(json.dumps(report.to_dict(), default=str))
    else:
        render_report(report, Console())
    for line in _problems(report):
        click.echo(line, err=True)
    if report.interrupted:
        sys.exit(128 + (report.signal or 2))  # 130 for SIGINT, 143 for SIGTERM
    if not report.ok:
        sys.exit(EXIT_FAILED_CHUNKS)


def _problems(report: Any) -> list[str]:
    """One line per reason the run is not a clean success (warnings included)."""
    from bulkpar.cli.console import noun

    lines = []
    if report.stopped:
        lines.append(f"Error: {report.stopped}")
    if report.failed_chunks:
        lines.append(
            f"Error: {report.failed_chunks:,} chunk(s) failed and were rolled back "
            f"({report.failed_rows:,} {noun(report, report.failed_rows)}); the report lists "
            "the errors"
        )
    if report.rejected:
        rejected = f"{report.rejected:,} {noun(report, report.rejected)} rejected"
        where = f"see {report.rejects_file}" if report.rejects_file else "see --rejects FILE"
        if report.rejects_allowed:
            lines.append(
                f"bulkpar: {rejected} (allowed by --max-rejects {report.max_rejects}); {where}"
            )
        elif not report.stopped:
            lines.append(
                f"Error: {rejected}; {where}, or allow them with --max-rejects {report.rejected}"
            )
    if not report.reconciles:
        lines.append("Error: the report's counts do not add up (a bug: please report it)")
    return lines


def _load_project(params: dict[str, Any]) -> None:
    """Load the user's project, starting the workers' forkserver as soon as it can.

    The forkserver is started once the settings are imported (they name the
    database driver it preloads) and before ``django.setup()`` loads the apps:
    it imports bulkpar, Django and the driver in its own interpreter, on
    another core, while this one loads the project; the pool forks its
    workers from it once the job is planned. A job small enough to run
    without workers leaves it unused; it ends with this process.
    """
    from bulkpar.bootstrap import load_settings, setup_django
    from bulkpar.engine.contracts import ExecutorKind, RunOptions
    from bulkpar.engine.executors import backend

    options = RunOptions(
        executor=ExecutorKind(params["executor"]), start_method=params["start_method"]
    )
    collecting = gc.isenabled()
    # loading a project allocates much and frees little: collecting meanwhile is
    # wasted work; once loaded, it is frozen, so later collections skip it
    gc.disable()
    try:
        load_settings(params["settings"], params["pythonpath"])
        backend(options.executor).start_early(options)
        setup_django(params["settings"], params["pythonpath"])
    finally:
        gc.freeze()
        if collecting:
            gc.enable()


def _run_spec(params: dict[str, Any]) -> Any:
    """The RunSpec of every command's shared options (run_options, --rejects, --max-rejects)."""
    from bulkpar.operations.options import RunSpec

    return RunSpec(
        chunk=params["chunk"],
        workers=params["workers"],
        executor=params["executor"],
        start_method=params["start_method"],
        database=params["database"],
        retries=params["retries"],
        on_error=params["on_error"],
        rejects=params.get("rejects"),  # delete takes neither
        max_rejects=params.get("max_rejects"),
        dry_run=params["dry_run"],
        checkpoint=params["checkpoint"],
        progress=_progress_sink(params["quiet"]),
    )


@click.group(context_settings=CONTEXT_SETTINGS)
@click.version_option(__version__, "--version", prog_name="bulkpar")
def cli() -> None:
    """Large parallel writes on Django models.

    bulkpar loads your project's settings, cuts the work into chunks (one
    transaction each) and runs them on a pool of worker processes with their
    own database connections, with a live progress bar and a report at the end.
    """


@cli.command(context_settings=CONTEXT_SETTINGS)
@project_options
@model_option
@selection_options
@click.option(
    "--set",
    "assignments",
    multiple=True,
    metavar="FIELD=VALUE",
    help="Assign a constant (converted and checked by the field; 'null' for SQL NULL, "
    "'json:null' for JSON null). Runs as SQL UPDATE per chunk (repeatable).",
)
@click.option(
    "--func",
    metavar="MODULE:CALLABLE",
    help="Call this on each instance; it mutates it in place (return False to leave the row).",
)
@click.option(
    "--fields",
    metavar="A,B",
    help="With --func: the fields it changes (default: detected per row).",
)
@click.option(
    "--touch/--no-touch",
    default=True,
    show_default=True,
    help="Refresh auto_now fields on written rows, as save() would.",
)
@click.option(
    "--lock", is_flag=True, help="With --func: SELECT ... FOR UPDATE each chunk's rows first."
)
@method_option
@click.option(
    "--rejects",
    metavar="FILE",
    help="With --on-error bisect: write the rows that failed on their own here.",
)
@click.option(
    "--max-rejects",
    type=click.IntRange(min=0),
    metavar="N",
    help="With --on-error bisect: allow up to N rejected rows (exit 0); stop once more are.",
)
@run_options()
def update(**params: Any) -> None:
    """Change existing rows, chunk by chunk over primary-key ranges.

    \b
    Examples:
      bulkpar update --settings mysite.settings --model app.User \\
          --filter is_active=true --set newsletter=false
      bulkpar update --model app.User --func fixes:normalize_email --workers 4

    --set runs one SQL UPDATE per chunk and loads no rows. --func loads each
    chunk, calls the function on every instance and writes the rows that
    changed (--method). Signals do not fire; use 'bulkpar save' for that.
    """
    with errors_as_click_exceptions(params["traceback"]):
        _load_project(params)  # first: it starts the workers' forkserver
        from bulkpar.api import execute
        from bulkpar.bootstrap import resolve_model
        from bulkpar.inputs.selection import select
        from bulkpar.inputs.selection_strings import parse_assignments
        from bulkpar.operations.update import UpdateSpec

        model = resolve_model(params["model_label"])
        queryset = select(
            model,
            filters=params["filters"],
            excludes=params["excludes"],
            database=params["database"],
        )
        assignments = params["assignments"]
        report = execute(
            UpdateSpec(
                queryset,
                set=parse_assignments(model, assignments) if assignments else None,
                func=params["func"],
                fields=params["fields"],
                touch=params["touch"],
                lock=params["lock"],
                method=params["method"],
                run=_run_spec(params),
            )
        )
    _finish(report, params["as_json"])


@cli.command(context_settings=CONTEXT_SETTINGS)
@click.option(
    "--rows", type=click.IntRange(min=1), default=50_000, show_default=True, help="Rows to seed."
)
@click.option("--workers", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--chunk", type=click.IntRange(min=1), default=2_000, show_default=True)
@click.option("--keep", is_flag=True, help="Keep the demo database and print its path.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.option("--traceback", is_flag=True, help="Show the full Python traceback of an error.")
def demo(rows: int, workers: int, chunk: int, keep: bool, quiet: bool, traceback: bool) -> None:
    """Seed a throw-away SQLite database and run real parallel updates on it."""
    from bulkpar.cli.demo import run_demo

    with errors_as_click_exceptions(traceback):
        run_demo(
            rows=rows,
            workers=workers,
            chunk=chunk,
            keep=keep,
            progress_factory=lambda: _progress_sink(quiet),
        )


def _pairs(specs: tuple[str, ...], option: str) -> dict[str, str]:
    from bulkpar.inputs.selection_strings import split_assignment

    return dict(split_assignment(spec, option) for spec in specs)


def _consts(specs: tuple[str, ...]) -> dict[str, str]:
    """``--const`` values: text, read like a CSV cell whatever the input's format."""
    from bulkpar.inputs.conversion import TextCell

    return {name: TextCell(value) for name, value in _pairs(specs, "--const").items()}


def _load_command(operation: str, params: dict[str, Any]) -> None:
    """Shared body of ``create`` and ``upsert``: set up, build the spec, run it, render."""
    with errors_as_click_exceptions(params["traceback"]):
        _load_project(params)  # first: it starts the workers' forkserver
        from bulkpar.api import execute
        from bulkpar.bootstrap import resolve_model
        from bulkpar.operations.load import LoadMode, LoadSpec

        model = resolve_model(params["model_label"])
        report = execute(
            LoadSpec(
                model,
                params["input_path"],
                mode=LoadMode.of(operation, params.get("ignore_conflicts", False)),
                unique=params.get("unique"),
                update=params.get("update"),
                format=params["input_format"],
                delimiter=params["delimiter"],
                map=_pairs(params["renames"], "--map"),
                const=_consts(params["consts"]),
                ignore_unknown=params["ignore_unknown"],
                full_clean=params["validate"],
                method=params["method"],
                run=_run_spec(params),
            )
        )
    _finish(report, params["as_json"])


@cli.command(context_settings=CONTEXT_SETTINGS)
@project_options
@model_option
@input_options(required=True)
@validate_option
@method_option
@click.option(
    "--ignore-conflicts",
    is_flag=True,
    help="Skip records whose unique key already exists, and count them.",
)
@run_options()
def create(**params: Any) -> None:
    """Insert records from a file or stdin, in parallel chunks.

    \b
    Examples:
      bulkpar create --model app.Retweet --input retweets.jsonl --ignore-conflicts
      zcat users.csv.gz | bulkpar create --model app.User --input - --format csv
      bulkpar create --model app.Sale --input sales.parquet --workers 4

    Each record is converted with the model's fields; records that cannot be
    converted are rejected (see --rejects) and the rest of their chunk is
    written. Signals do not fire; use 'bulkpar save' for that.
    """
    _load_command("create", params)


@cli.command(context_settings=CONTEXT_SETTINGS)
@project_options
@model_option
@input_options(required=True)
@validate_option
@method_option
@click.option(
    "--unique",
    required=True,
    metavar="A,B",
    help="Fields identifying a row; a unique constraint must cover exactly these.",
)
@click.option(
    "--update",
    metavar="C,D",
    help="Fields to overwrite on existing rows (default: every supplied field "
    "but the unique ones).",
)
@run_options()
def upsert(**params: Any) -> None:
    """Update-or-create records from a file or stdin (bulk update_or_create).

    \b
    Examples:
      bulkpar upsert --model app.Event --input events.csv \\
          --unique organization_id,external_id --update started,name
      cat rows.jsonl | bulkpar upsert --model app.Event --input - --format jsonl \\
          --unique external_id

    Uses the database's own conflict handling (ON CONFLICT / ON DUPLICATE KEY),
    so concurrent runs never raise IntegrityError. The report counts created,
    updated, unchanged (already equal, not rewritten), rejected and duplicate
    records, and they add up to the records read.
    """
    _load_command("upsert", params)


@cli.command(context_settings=CONTEXT_SETTINGS)
@project_options
@model_option
@input_options(required=False)
@validate_option
@click.option(
    "--match",
    metavar="A,B",
    help="With --input: update the existing object with this key instead of "
    "creating one (a unique constraint must cover the fields).",
)
@selection_options
@click.option(
    "--func",
    metavar="MODULE:CALLABLE",
    help="Without --input: call this on each selected object before saving it "
    "(return False to skip the object).",
)
@click.option(
    "--fields", metavar="A,B", help="Without --input: save(update_fields=...) with these fields."
)
@click.option(
    "--setup",
    metavar="MODULE:CALLABLE",
    help="Run once in every worker after django.setup() (warm caches, connect "
    "clients); if it fails, nothing is written.",
)
@click.option(
    "--transaction",
    type=click.Choice(["chunk", "object"]),
    default="chunk",
    show_default=True,
    help="chunk: one transaction per chunk, a failing chunk is bisected so its good "
    "objects commit; object: every save commits alone.",
)
@run_options(chunk=500)
def save(**params: Any) -> None:
    """Call save() on every object, in parallel, so signals and save() overrides run.

    \b
    Examples:
      bulkpar save --model app.User --input users.jsonl --workers 4 --chunk 500 \\
          --setup myproject.bulk:warm_caches
      bulkpar save --model app.Order --filter status=pending \\
          --func billing.fixes:recompute_totals --workers 4

    pre_save/post_save fire for every object exactly once. Signals cannot be
    turned off here: 'bulkpar create' and 'bulkpar update' are the signal-free
    bulk writes. An object whose save() or signal handler raises is rejected
    (see --rejects) and the others are still saved.
    """
    with errors_as_click_exceptions(params["traceback"]):
        _load_project(params)  # first: it starts the workers' forkserver
        from bulkpar.api import execute
        from bulkpar.bootstrap import resolve_model
        from bulkpar.inputs.selection import select
        from bulkpar.operations.save import SaveSpec

        model = resolve_model(params["model_label"])
        path = params["input_path"]
        source: Any = model
        if path is None or params["filters"] or params["excludes"]:
            source = select(
                model,
                filters=params["filters"],
                excludes=params["excludes"],
                database=params["database"],
            )
        report = execute(
            SaveSpec(
                source,
                path,
                func=params["func"],
                match=params["match"],
                fields=params["fields"],
                setup=params["setup"],
                transaction=params["transaction"],
                format=params["input_format"],
                delimiter=params["delimiter"],
                map=_pairs(params["renames"], "--map"),
                const=_consts(params["consts"]),
                ignore_unknown=params["ignore_unknown"],
                full_clean=params["validate"],
                run=_run_spec(params),
            )
        )
    _finish(report, params["as_json"])


@cli.command(context_settings=CONTEXT_SETTINGS)
@project_options
@model_option
@selection_options
@click.option(
    "--archive",
    metavar="FILE",
    help='Append every deleted row, cascaded rows too (each with its "_model"), to this '
    "JSON Lines file (gzip when it ends in .gz) in the chunk that deletes it; "
    "'bulkpar create' loads it back.",
)
@run_options()
def delete(**params: Any) -> None:
    """Delete rows as queryset.delete() does, chunk by chunk over pk ranges.

    \b
    Examples:
      bulkpar delete --model events.Event --filter created__lt=2024-01-01 --chunk 2000 \\
          --workers 4 --archive old-events.jsonl.gz --checkpoint purge.ck

    Each chunk is one transaction through Django's deletion collector: on_delete
    rules (CASCADE, SET_NULL, PROTECT, RESTRICT) apply and pre_delete/post_delete
    fire. A PROTECT or RESTRICT reference fails its chunk, which is left whole.
    """
    with errors_as_click_exceptions(params["traceback"]):
        _load_project(params)  # first: it starts the workers' forkserver
        from bulkpar.api import execute
        from bulkpar.bootstrap import resolve_model
        from bulkpar.inputs.selection import select
        from bulkpar.operations.delete import DeleteSpec

        model = resolve_model(params["model_label"])
        queryset = select(
            model,
            filters=params["filters"],
            excludes=params["excludes"],
            database=params["database"],
        )
        report = execute(DeleteSpec(queryset, archive=params["archive"], run=_run_spec(params)))
    _finish(report, params["as_json"])


@cli.command(
    context_settings={**CONTEXT_SETTINGS, "ignore_unknown_options": True, "allow_extra_args": True}
)
@click.argument("operation", type=click.Choice(BENCH_OPERATIONS))
@project_options
@click.option(
    "--workers",
    "workers_list",
    default="1,2",
    show_default=True,
    metavar="N,N",
    help="Worker counts to try.",
)
@click.option(
    "--chunk",
    "chunk_list",
    default="1000",
    show_default=True,
    metavar="N,N",
    help="Chunk sizes to try.",
)
@click.option(
    "--method",
    "method_list",
    default="auto",
    show_default=True,
    metavar="M,M",
    help="Writers to try (auto, django, values, copy).",
)
@click.option(
    "--executor",
    "executor_list",
    default="process",
    show_default=True,
    metavar="E,E",
    help="Executors to try (process, thread, serial).",
)
@click.option(
    "--repeat",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    help="Runs per combination (interleaved).",
)
@click.option(
    "--commit",
    is_flag=True,
    help="Let the writes stand. Without it every run is a dry run: the real "
    "write cost is measured inside transactions that are rolled back.",
)
@click.option(
    "--confirm-database",
    metavar="NAME",
    help="With --commit: the NAME of the database the writes go to, as a "
    "safeguard (bench refuses to commit to any other).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the raw runs and the summary as JSON.")
@click.option(
    "--plot",
    "plot_path",
    metavar="FILE.png",
    help="Draw rows/s against workers (needs matplotlib).",
)
@click.pass_context
def bench(ctx: click.Context, **params: Any) -> None:
    """Time OPERATION over a grid of settings on your own model and data.

    \b
    Examples:
      bulkpar bench update --model app.User --func fixes:normalize \\
          --workers 1,2,4 --chunk 500,2000 --method auto,django --repeat 3 --plot bench.png
      bulkpar bench upsert --model app.Event --input events.jsonl --unique external_id \\
          --workers 1,2 --json > bench.json

    Every other option is passed to 'bulkpar OPERATION' unchanged. Each run is
    a fresh 'bulkpar OPERATION --dry-run' process (start-up included): your
    data is untouched unless --commit. The serial run with Django's own method
    is always included as the reference for the speed-ups.
    """
    from rich.console import Console

    from bulkpar.cli.bench import BenchRun, run_bench
    from bulkpar.cli.console import render_bench

    console = Console(stderr=True)

    def on_run(run: BenchRun, done: int, total: int) -> None:
        state = f"{run.seconds:.2f}s" if run.ok else f"[red]failed: {run.error}[/red]"
        console.print(f"[{done}/{total}] {run.combo.label}: {state}", highlight=False)

    with errors_as_click_exceptions(params["traceback"]):
        result = run_bench(
            params["operation"],
            list(ctx.args),
            settings=params["settings"],
            pythonpath=params["pythonpath"],
            database=params["database"],
            workers=params["workers_list"],
            chunks=params["chunk_list"],
            methods=params["method_list"],
            executors=params["executor_list"],
            repeat=params["repeat"],
            commit=params["commit"],
            confirm_database=params["confirm_database"],
            plot_path=params["plot_path"],
            on_run=None if params["as_json"] else on_run,
        )
    if params["as_json"]:
        click.echo(json.dumps(result.to_dict(), default=str))
    else:
        # a file or a pipe gets the whole table, not one folded to 80 columns
        render_bench(result, Console(width=None if sys.stdout.isatty() else 140))
    if any(row["failed"] for row in result.summary):
        sys.exit(EXIT_FAILED_CHUNKS)


def main() -> None:
    """Console-script entry point."""
    try:
        cli(prog_name="bulkpar")
    finally:
        # Exiting, the interpreter collects every object Django and the project
        # made (about 0.08 s measured, bench/RESULTS.md); the OS frees them at once.
        gc.freeze()
