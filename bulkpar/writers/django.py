"""The portable writer: Django's own ``bulk_update`` and ``bulk_create``.

Works on every backend Django supports. ``bulk_update`` builds one
``CASE WHEN pk = … THEN …`` per field, which the database evaluates row by
row: correct everywhere, slow on large chunks (see bench/RESULTS.md). Django
cannot say how many rows an ``ignore_conflicts`` or ``update_conflicts``
insert created, so those are left to the other writers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bulkpar.errors import UsageError
from bulkpar.writers.values import InsertCounts


class DjangoWriter:
    """``bulk_update`` / ``bulk_create`` on one model and connection."""

    name = "django"

    def __init__(self, model: type[Any], connection: Any) -> None:
        self.model = model
        self.connection = connection
        self.manager = model._base_manager.db_manager(connection.alias)

    def update(self, objs: Sequence[Any], fields: Sequence[Any]) -> int:
        """``bulk_update(objs, fields)``; returns rows matched."""
        if not objs:
            return 0
        return int(self.manager.bulk_update(objs, [f.name for f in fields]))

    def insert(
        self,
        objs: Sequence[Any],
        fields: Sequence[Any],
        *,
        unique: Sequence[Any] = (),
        update: Sequence[Any] = (),
        ignore_conflicts: bool = False,
    ) -> InsertCounts:
        """``bulk_create(objs)``: plain inserts only."""
        if unique or ignore_conflicts:
            raise UsageError(
                "--method django cannot count the rows an upsert or --ignore-conflicts "
                "insert created; use --method values (or copy on PostgreSQL)"
            )
        self.manager.bulk_create(objs)
        return InsertCounts(created=len(objs))
