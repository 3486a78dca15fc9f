"""``python manage.py bulkpar …``: the bulkpar command line inside a Django project.

Add ``"bulkpar"`` to INSTALLED_APPS, then ``python manage.py bulkpar update
--model app.User --set newsletter=false`` works exactly like the ``bulkpar``
executable, with the project's settings already loaded.
"""

from __future__ import annotations

import os
from typing import Any

from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Large parallel writes on models: bulkpar update|demo … (see 'bulkpar -h')."

    def run_from_argv(self, argv: list[str]) -> None:
        """Hand the raw arguments to bulkpar's click group (it parses its own options)."""
        from bulkpar.cli.app import cli

        prog = f"{os.path.basename(argv[0])} {argv[1]}"
        cli.main(args=argv[2:], prog_name=prog)

    def handle(self, *args: Any, **options: Any) -> None:  # pragma: no cover - via argv
        from bulkpar.cli.app import cli

        cli.main(args=list(args), prog_name="bulkpar", standalone_mode=False)
