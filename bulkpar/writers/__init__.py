"""Writers: how a chunk's rows reach the database.

Every writer offers ``update(objs, fields) -> rows updated`` and
``insert(objs, fields, *, unique, update, ignore_conflicts) -> InsertCounts``,
and every writer passes the same behavioural tests.

| method | update (``--func``) | create / upsert | backends |
|---|---|---|---|
| ``django`` | ``bulk_update`` (CASE WHEN) | ``bulk_create`` (plain create only) | all |
| ``values`` | ``UPDATE … FROM (VALUES …)`` / ``UPDATE … JOIN`` | multi-row ``INSERT … VALUES`` with ``ON CONFLICT`` / ``ON DUPLICATE KEY`` | all |
| ``copy`` | ``COPY`` to a temp table + ``UPDATE … FROM`` | ``COPY``; temp table + ``INSERT … SELECT … ON CONFLICT`` | PostgreSQL |

``auto`` picks the fastest correct writer for the backend (measured in
bench/RESULTS.md): ``copy`` on PostgreSQL (for updates: ``values`` for chunks
that write fewer than :data:`COPY_MIN_ROWS` rows), ``values`` elsewhere.
"""  # noqa: E501

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from bulkpar.errors import UsageError

if TYPE_CHECKING:
    from bulkpar.writers.values import InsertCounts


@dataclass(frozen=True)
class KeySpan:
    """The first and the last primary key of an update's rows, as the database orders them.

    Update writers bound their statement by it (``pk >= first AND pk <= last``)
    besides matching each row by its key, so that the server reaches the rows
    through the key's index whatever the planner's statistics say. Without the
    bound, a table loaded a minute ago (no statistics yet) made PostgreSQL
    hash the whole table to update the thousand rows of one chunk, and the
    cost of a chunk grew with the table (issue 12). The rows come from the
    chunk's load ``ORDER BY pk``, so the first and last are the database's own
    minimum and maximum, whatever the collation of a string key.
    """

    first: Any
    last: Any

    @classmethod
    def of(cls, objs: Sequence[Any]) -> KeySpan:
        """The span of ``objs``, which are sorted by primary key in the database's order."""
        return cls(objs[0].pk, objs[-1].pk)


class Writer(Protocol):
    """How a chunk's rows reach the database: the contract every writer keeps.

    A writer is made per chunk (by :func:`make_writer`) for one model on one
    Django connection, inside the chunk's transaction; it never commits.
    ``objs`` are model instances, ``fields`` their concrete model fields.
    """

    #: The method's name (``"values"``, ``"copy"``, ``"django"``).
    name: str

    def update(self, objs: Sequence[Any], fields: Sequence[Any], *, span: KeySpan) -> int:
        """Write ``fields`` of ``objs`` to their rows (matched by primary key); rows written.

        ``span`` holds every key of ``objs``: the statement reads the table
        only inside it.
        """
        ...

    def insert(
        self,
        objs: Sequence[Any],
        fields: Sequence[Any],
        *,
        unique: Sequence[Any] = (),
        update: Sequence[Any] = (),
        ignore_conflicts: bool = False,
    ) -> InsertCounts:
        """Insert ``objs``: plain, skipping conflicts, or upserting on the ``unique`` fields.

        Upserts overwrite ``update`` on existing rows and leave rows whose
        values are already equal untouched (counted ``unchanged``).
        """
        ...


METHODS = ("auto", "django", "values", "copy")

#: ``auto`` on PostgreSQL for updates: COPY for chunks that write at least this
#: many rows, VALUES below. Measured with ``bulkpar bench update --method
#: copy,values --chunk 100,500,2000 --workers 2`` on the demo model (50,000
#: rows, half of them changed): VALUES is 13% faster at ~50 changed rows per
#: chunk, the two are level at ~250, COPY is 14% faster at ~1,000.
COPY_MIN_ROWS = 250
COPY_OR_VALUES = "copy/values"


def resolve_method(method: str, vendor: str, operation: str) -> str:
    """The concrete writer for ``method`` on ``vendor``.

    ``operation`` is ``update``, ``create``, ``create-ignore`` (ignoring
    conflicts) or ``upsert``.

    Raises:
        UsageError: an unknown method, or one this backend cannot run.
    """
    if method not in METHODS:
        raise UsageError(f"unknown method {method!r}: use one of {', '.join(METHODS)}")
    if method == "auto":
        if vendor == "postgresql":
            return COPY_OR_VALUES if operation == "update" else "copy"
        if vendor == "sqlite" and sqlite3.sqlite_version_info < (3, 33):
            return "django" if operation == "update" else "values"
        return "values"
    if method == "copy" and vendor != "postgresql":
        raise UsageError(
            f"--method copy needs PostgreSQL (this database is {vendor}); "
            "use --method values or auto"
        )
    if method == "django" and operation in ("upsert", "create-ignore"):
        raise UsageError(
            "--method django cannot count the rows an upsert or --ignore-conflicts "
            "insert created; use --method values (or copy on PostgreSQL)"
        )
    old_sqlite = vendor == "sqlite" and sqlite3.sqlite_version_info < (3, 33)
    if method == "values" and operation == "update" and old_sqlite:
        raise UsageError(
            f"--method values needs SQLite 3.33+ for UPDATE … FROM "
            f"(this is {sqlite3.sqlite_version}); use --method django"
        )
    return method


def make_writer(method: str, model: type[Any], connection: Any, rows: int = 0) -> Writer:
    """An instance of the writer called ``method`` (already resolved) for ``rows`` rows."""
    if method == COPY_OR_VALUES:
        method = "copy" if rows >= COPY_MIN_ROWS else "values"
    if method == "copy":
        from bulkpar.writers.postgres import PostgresCopyWriter

        return PostgresCopyWriter(model, connection)
    if method == "django":
        from bulkpar.writers.django import DjangoWriter

        return DjangoWriter(model, connection)
    from bulkpar.writers.values import ValuesWriter

    return ValuesWriter(model, connection)
