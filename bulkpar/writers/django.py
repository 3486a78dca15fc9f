"""The portable writer: Django's own ``bulk_update`` and ``bulk_create``.

Works on every backend Django supports. ``bulk_update`` builds one
``CASE WHEN pk = … THEN …`` per field, which the database evaluates row by
row: correct everywhere, slow on large chunks (see bench/RESULTS.md). Django
cannot say how many rows an ``ignore_conflicts`` or ``update_conflicts``
insert created, so those are left to the other writers.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from bulkpar.errors import UsageError
from bulkpar.writers.values import InsertCounts

if TYPE_CHECKING:
    from bulkpar.writers import KeySpan


class DjangoWriter:
    """``bulk_update`` / ``bulk_create`` on one model and connection."""

    name = "django"

    def __init__(self, model: type[Any], connection: Any) -> None:
        self.model = model
        self.connection = connection
        self.manager = model._base_manager.db_manager(connection.alias)

    def update(self, objs: Sequence[Any], fields: Sequence[Any], *, span: KeySpan) -> int:
        """``bulk_update(objs, fields)`` on the rows inside ``span``; returns rows matched.

        ``bulk_update`` keeps its queryset's filters, so the span bounds its
        ``WHERE pk IN (…)``. PostgreSQL still reads a thousand-key ``IN`` list
        of an unanalyzed table with a full scan, bound or not, so on PostgreSQL
        sequential scans are off for this statement (see :func:`_index_scans`).
        """
        if not objs:
            return 0
        rows = self.manager.filter(pk__gte=span.first, pk__lte=span.last)
        with _index_scans(self.connection):
            return int(rows.bulk_update(objs, [f.name for f in fields]))

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


@contextlib.contextmanager
def _index_scans(connection: Any) -> Iterator[None]:
    """On PostgreSQL, ``enable_seqscan = off`` for the statements inside, then as it was.

    A planner setting, local to the transaction and restored at once: the
    statements inside read rows by their keys, which an index always serves
    better than a scan of the whole table, whatever the statistics say.
    """
    if connection.vendor != "postgresql":
        yield
        return
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT current_setting('enable_seqscan'), set_config('enable_seqscan', 'off', true)"
        )
        (previous, _) = cursor.fetchone()
        try:
            yield
        finally:
            cursor.execute("SELECT set_config('enable_seqscan', %s, true)", [previous])
