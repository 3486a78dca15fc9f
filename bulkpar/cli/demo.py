"""``bulkpar demo``: a real parallel run on a throw-away SQLite database.

Uses the demo project in ``examples/demo`` of the source checkout (settings
module ``demo.settings``, app ``people``). Part of the command-line layer: it
prints with rich.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bulkpar.errors import BulkparError

DEMO_DIR = Path(__file__).resolve().parents[2] / "examples" / "demo"


def run_demo(
    *, rows: int, workers: int, chunk: int, keep: bool, progress_factory: Callable[[], Any]
) -> None:
    """Seed ``rows`` people in a new SQLite file and run two parallel updates on them."""
    from rich.console import Console

    from bulkpar.cli.console import render_report

    console = Console()
    if not (DEMO_DIR / "demo" / "settings.py").exists():
        raise BulkparError(
            f"the demo project is not at {DEMO_DIR}; run 'bulkpar demo' from a source "
            "checkout installed with 'pip install -e .'"
        )
    folder = Path(tempfile.mkdtemp(prefix="bulkpar-demo-"))
    database = folder / "demo.sqlite3"
    os.environ.pop("DATABASE_URL", None)
    os.environ["BULKPAR_DEMO_DB"] = str(database)
    try:
        _demo(console, render_report, database, rows, workers, chunk, progress_factory)
    finally:
        from django.db import connections

        connections.close_all()
        if keep:
            console.print(f"kept the demo database: {database}")
        else:
            shutil.rmtree(folder, ignore_errors=True)


def _demo(
    console: Any,
    render_report: Callable[..., None],
    database: Path,
    rows: int,
    workers: int,
    chunk: int,
    progress_factory: Callable[[], Any],
) -> None:
    from django.core.management import call_command

    import bulkpar
    from bulkpar.bootstrap import setup_django

    setup_django("demo.settings", [str(DEMO_DIR)])
    from people.models import Person
    from people.seed import seed

    call_command("migrate", verbosity=0)
    seed(rows)
    messy = Person.objects.filter(email__regex=r"[A-Z]").count()
    console.print(
        f"[bold]bulkpar demo[/bold]: {rows:,} people in {database} "
        f"({messy:,} with upper-case e-mails)\n"
    )
    console.print(
        "[bold]1.[/bold] bulkpar update --settings demo.settings --model people.Person "
        f"--func people.fixes:normalize_email --workers {workers} --chunk {chunk}"
    )
    report = bulkpar.update(
        Person,
        func="people.fixes:normalize_email",
        workers=workers,
        chunk=chunk,
        progress=progress_factory(),
    )
    render_report(report, console)
    left = Person.objects.filter(email__regex=r"[A-Z]").count()
    console.print(
        f"check: {left} upper-case e-mails left; {report.written:,} rows written, "
        f"{report.unchanged:,} already clean and not rewritten\n"
    )
    console.print(
        "[bold]2.[/bold] bulkpar update --settings demo.settings --model people.Person "
        f"--filter active=false --set score=0 --workers {workers} --chunk {chunk}"
    )
    report = bulkpar.update(
        Person.objects.filter(active=False),
        set={"score": 0},
        workers=workers,
        chunk=chunk,
        progress=progress_factory(),
    )
    render_report(report, console)
    nonzero = Person.objects.filter(active=False).exclude(score=0).count()
    console.print(f"check: {nonzero} inactive people with a non-zero score left")
