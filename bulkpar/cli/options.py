"""The click options the ``bulkpar`` commands share, as decorator factories.

One definition per option keeps the commands consistent: ``--chunk`` means
the same thing, with the same help, under ``update``, ``create``, ``upsert``
and ``save``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


def project_options(func: F) -> F:
    """--settings, --pythonpath, --database, --traceback: how to reach the project."""
    options = [
        click.option(
            "--settings",
            metavar="MODULE",
            help="Django settings module, e.g. mysite.settings (default: $DJANGO_SETTINGS_MODULE).",
        ),
        click.option(
            "--pythonpath",
            multiple=True,
            metavar="DIR",
            help="Directory to add to the Python path (repeatable); the current "
            "directory is always importable, as with manage.py.",
        ),
        click.option(
            "--database",
            default="default",
            show_default=True,
            metavar="ALIAS",
            help="Database alias from DATABASES to write to.",
        ),
        click.option(
            "--traceback", is_flag=True, help="Show the full Python traceback of an error."
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def run_options(chunk: int = 1000) -> Callable[[F], F]:
    """--chunk, --workers, --executor …: how to schedule the work, and how to show it."""
    return functools.partial(_add_run_options, chunk=chunk)  # type: ignore[return-value]


def _add_run_options(func: F, chunk: int) -> F:
    from bulkpar.engine.contracts import EXECUTORS
    from bulkpar.engine.executors import cpu_count

    options = [
        click.option(
            "--chunk",
            type=click.IntRange(min=1),
            default=chunk,
            show_default=True,
            help="Rows per chunk; a chunk is one transaction.",
        ),
        click.option(
            "--workers",
            type=click.IntRange(min=1),
            default=cpu_count(),
            show_default="number of CPUs",
            help="Parallel workers, each with its own database connection.",
        ),
        click.option(
            "--executor",
            type=click.Choice(EXECUTORS),
            default="auto",
            show_default=True,
            help="auto: a pool of processes, but a job of at most two chunks runs in this "
            "process; process: always a pool; thread: threads in this process; serial: no "
            "pool (for debugging).",
        ),
        click.option(
            "--start-method",
            type=click.Choice(["fork", "forkserver", "spawn"]),
            help="How worker processes start (default: forkserver where available).",
        ),
        click.option(
            "--retries",
            type=click.IntRange(min=0),
            default=5,
            show_default=True,
            help="Retries of a chunk after a transient error (deadlock, lock timeout, "
            "dropped connection, SQLite busy).",
        ),
        click.option(
            "--on-error",
            type=click.Choice(["abort", "skip", "bisect"]),
            default="abort",
            show_default=True,
            help="abort: stop starting chunks after one fails; skip: record it and go on; "
            "bisect: split a failing chunk until the bad rows are isolated, commit the "
            "rest and reject the bad rows (see --rejects).",
        ),
        click.option(
            "--checkpoint",
            metavar="FILE",
            help="Journal of committed chunks: run the same command again with the same "
            "file to resume where an interrupted run stopped.",
        ),
        click.option(
            "--dry-run",
            is_flag=True,
            help="Do everything inside transactions that are rolled back, and report "
            "what would have been written.",
        ),
        click.option("--quiet", "-q", is_flag=True, help="No progress bar."),
        click.option("--json", "as_json", is_flag=True, help="Print the report as JSON."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def input_options(required: bool) -> Callable[[F], F]:
    """--input, --format, --map, --const …: what to read, and how it maps to fields."""
    return functools.partial(_add_input_options, required=required)  # type: ignore[return-value]


def _add_input_options(func: F, required: bool) -> F:
    from bulkpar.inputs.sources import FORMATS

    options = [
        click.option("--input", "input_path", required=required, metavar="FILE",
                     help="CSV, JSON Lines or JSON file (.gz too), Parquet file, "
                     "or - for stdin."),
        click.option("--format", "input_format", type=click.Choice(FORMATS),
                     help="Input format (default: from the file name: .csv, .jsonl, .ndjson, "
                     ".json, .parquet, .pq; required for stdin, which cannot be Parquet). "
                     "Parquet needs pyarrow: pip install 'bulkpar[parquet]'."),
        click.option("--delimiter", metavar="CHAR",
                     help="CSV field separator, e.g. ';' or tab (default: ',')."),
        click.option("--map", "renames", multiple=True, metavar="COLUMN=FIELD",
                     help="Read input column COLUMN into FIELD (repeatable)."),
        click.option("--const", "consts", multiple=True, metavar="FIELD=VALUE",
                     help="Set FIELD to VALUE on every record (repeatable)."),
        click.option("--ignore-unknown", is_flag=True,
                     help="Drop input columns that match no field instead of failing."),
        click.option("--rejects", metavar="FILE",
                     help="Write rejected records (with their error) to this JSON Lines file."),
        click.option("--max-rejects", type=click.IntRange(min=0), metavar="N",
                     help="Allow up to N rejected records (exit 0 with a warning); stop "
                     "once more are. Default: any reject makes the exit code 1."),
    ]  # fmt: skip
    for option in reversed(options):
        func = option(func)
    return func


def validate_option(func: F) -> F:
    """--validate: run the fields' own validators and clean() (full_clean without unique checks)."""
    return click.option(
        "--validate", is_flag=True,
        help="Also run each field's own validators (e-mail, URL, custom), choices, blank, "
        "foreign-key existence and the model's clean(): full_clean() without the unique "
        "checks. An invalid record is rejected. Default: to_python and the database's "
        "limits only, as save() and bulk_create() do.",
    )(func)  # fmt: skip


def selection_options(func: F) -> F:
    """--filter, --exclude: which rows of the model."""
    options = [
        click.option("--filter", "filters", multiple=True, metavar="LOOKUP=VALUE",
                     help="Select rows, e.g. is_active=true or created__lt=2024-01-01 "
                     "(repeatable)."),
        click.option("--exclude", "excludes", multiple=True, metavar="LOOKUP=VALUE",
                     help="Leave out rows matching this lookup (repeatable)."),
    ]  # fmt: skip
    for option in reversed(options):
        func = option(func)
    return func


def method_option(func: F) -> F:
    """--method: which writer."""
    from bulkpar.writers import METHODS

    return click.option(
        "--method", type=click.Choice(METHODS), default="auto", show_default=True,
        help="How rows are written: auto (the fastest for the database), django "
        "(bulk_update/bulk_create), values (multi-row VALUES statements), copy "
        "(PostgreSQL COPY).",
    )(func)  # fmt: skip


def model_option(func: F) -> F:
    """--model APP.MODEL."""
    return click.option(
        "--model", "model_label", required=True, metavar="APP.MODEL",
        help="The model, e.g. events.Event (case-insensitive).",
    )(func)  # fmt: skip
