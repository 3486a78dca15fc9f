"""PostgreSQL fast writers: COPY into a temporary table, then one set-based statement.

* update: ``COPY tmp (pk, changed fields)``, then ``UPDATE t SET f = tmp.f FROM
  tmp WHERE t.pk = tmp.pk``.
* create: ``COPY t (fields) FROM STDIN`` straight into the table.
* create ignoring conflicts: COPY into tmp, then ``INSERT INTO t SELECT … FROM
  tmp ON CONFLICT DO NOTHING`` (rowcount = inserted).
* upsert: COPY into tmp, then ``INSERT INTO t SELECT … FROM tmp ORDER BY key
  ON CONFLICT (key) DO UPDATE SET … WHERE ROW(old) IS DISTINCT FROM ROW(new)
  RETURNING (xmax = 0)`` — created and updated counts from the database.

COPY is binary where psycopg has a binary dumper for every column type, text
otherwise. Each connection creates its temporary table once per column
layout (``ON COMMIT DELETE ROWS``: empty again after every chunk's commit,
and a rolled-back chunk takes its rows with it); temporary tables are private
to their session, so parallel workers and parallel runs cannot collide.
Values are prepared with each field's ``get_db_prep_save``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from bulkpar.writers.values import (
    InsertCounts,
    fields_by_table,
    key_span_sql,
    postgres_upsert_counts,
    postgres_upsert_sql,
    preparer,
)

if TYPE_CHECKING:
    from bulkpar.writers import KeySpan


class PostgresCopyWriter:
    """COPY-based writes for one model on one Django PostgreSQL connection."""

    name = "copy"

    def __init__(self, model: type[Any], connection: Any) -> None:
        self.model = model
        self.connection = connection
        self.quote = connection.ops.quote_name
        self.table = self.quote(model._meta.db_table)

    # -- plumbing -----------------------------------------------------------

    def _cursor(self) -> Any:
        """Django's cursor: statements go through its wrappers (``execute_wrapper``,
        query logging) like every other writer's; ``.cursor`` under it is psycopg's,
        whose COPY API the writer uses."""
        return self.connection.cursor()

    def _temp_table(self, cursor: Any, table: str, fields: Sequence[Any]) -> str:
        """A session-private temp table with these columns (created on first use).

        ``IF NOT EXISTS`` on every chunk costs one round trip and stays right
        when a reconnect started a new session, or when the chunk that
        created the table rolled back (taking the table with it).
        """
        columns = ", ".join(self.quote(f.column) for f in fields)
        digest = hashlib.sha1(f"{table}({columns})".encode()).hexdigest()[:12]
        name = f"bulkpar_{digest}"
        cursor.execute(
            "SET LOCAL client_min_messages = warning; "  # no "already exists" notice
            f"CREATE TEMP TABLE IF NOT EXISTS {name} ON COMMIT DELETE ROWS AS "
            f"SELECT {columns} FROM {table} WITH NO DATA"
        )
        return name

    def _copy(self, cursor: Any, table: str, fields: Sequence[Any], rows: Iterable[Any]) -> None:
        columns = ", ".join(self.quote(f.column) for f in fields)
        types = self._binary_types(cursor, table, fields)
        fmt = " (FORMAT BINARY)" if types is not None else ""
        with cursor.cursor.copy(f"COPY {table} ({columns}) FROM STDIN{fmt}") as copy:
            if types is not None:
                copy.set_types(types)
            for row in rows:
                copy.write_row(row)

    def _binary_types(self, cursor: Any, table: str, fields: Sequence[Any]) -> list[int] | None:
        """Column type oids when psycopg can dump every one of them in binary."""
        from psycopg.pq import Format

        key = (table, tuple(f.column for f in fields))
        cache: dict[Any, Any] = self.connection.__dict__.setdefault("_bulkpar_copy_types", {})
        if key not in cache:
            cursor.execute(
                "SELECT attname, atttypid FROM pg_attribute "
                "WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped",
                [table],
            )
            oids = dict(cursor.fetchall())
            types = [oids[f.column] for f in fields]
            adapters = cursor.adapters
            binary = all(
                adapters.get_dumper_by_oid(oid, Format.BINARY) is not None for oid in types
            )
            cache[key] = types if binary else None
        return cache[key]  # type: ignore[no-any-return]

    def _values(self, objs: Sequence[Any], fields: Sequence[Any]) -> Iterable[list[Any]]:
        preps = [(f.attname, preparer(f, self.connection)) for f in fields]
        for obj in objs:
            yield [prep(getattr(obj, attname)) for attname, prep in preps]

    # -- writes ---------------------------------------------------------------

    def update(self, objs: Sequence[Any], fields: Sequence[Any], *, span: KeySpan) -> int:
        """Write ``fields`` of ``objs`` (matched by pk, inside ``span``); returns rows updated.

        The temp table never has statistics (it is emptied at every commit and
        temp tables are not auto-analyzed); the bound on the target's key is
        what keeps the join on the key's index when the target has none either.
        """
        if not objs:
            return 0
        with self.connection.wrap_database_errors:  # psycopg errors as Django's
            return self._update(objs, fields, span)

    def _update(self, objs: Sequence[Any], fields: Sequence[Any], span: KeySpan) -> int:
        updated = 0
        cursor = self._cursor()
        for model, table_fields in fields_by_table(self.model, fields):
            table = self.quote(model._meta.db_table)
            pk = model._meta.pk
            columns = [pk, *table_fields]
            temp = self._temp_table(cursor, table, columns)
            self._copy(cursor, temp, columns, self._pk_values(objs, pk, table_fields))
            sets = ", ".join(
                f"{self.quote(f.column)} = s.{self.quote(f.column)}" for f in table_fields
            )
            pk_column = self.quote(pk.column)
            within, bounds = key_span_sql(self.connection, model, span)
            cursor.execute(
                f"UPDATE {table} AS t SET {sets} FROM {temp} AS s "
                f"WHERE t.{pk_column} = s.{pk_column} AND {within('t')}",
                bounds,
            )
            updated = max(updated, int(cursor.rowcount))
        return updated

    def _pk_values(
        self, objs: Sequence[Any], pk: Any, fields: Sequence[Any]
    ) -> Iterable[list[Any]]:
        prep_pk = preparer(pk, self.connection)
        preps = [(f.attname, preparer(f, self.connection)) for f in fields]
        for obj in objs:
            row = [prep_pk(obj.pk)]
            row.extend(prep(getattr(obj, attname)) for attname, prep in preps)
            yield row

    def insert(
        self,
        objs: Sequence[Any],
        fields: Sequence[Any],
        *,
        unique: Sequence[Any] = (),
        update: Sequence[Any] = (),
        ignore_conflicts: bool = False,
    ) -> InsertCounts:
        """Insert ``objs``: plain, ignoring conflicts, or upserting on ``unique``."""
        if not objs:
            return InsertCounts()
        with self.connection.wrap_database_errors:  # psycopg errors as Django's
            return self._insert(objs, fields, unique, update, ignore_conflicts)

    def _insert(
        self,
        objs: Sequence[Any],
        fields: Sequence[Any],
        unique: Sequence[Any],
        update: Sequence[Any],
        ignore_conflicts: bool,
    ) -> InsertCounts:
        cursor = self._cursor()
        if not unique and not ignore_conflicts:
            self._copy(cursor, self.table, fields, self._values(objs, fields))
            return InsertCounts(created=len(objs))
        temp = self._temp_table(cursor, self.table, fields)
        self._copy(cursor, temp, fields, self._values(objs, fields))
        columns = ", ".join(self.quote(f.column) for f in fields)
        # sorting rows greatly reduces the chance of deadlock between workers
        order = ", ".join(self.quote(f.column) for f in unique) or "1"
        select = f"SELECT {columns} FROM {temp} ORDER BY {order}"
        if not update:
            cursor.execute(f"INSERT INTO {self.table} ({columns}) {select} ON CONFLICT DO NOTHING")
            created = int(cursor.rowcount)
            if unique:
                return InsertCounts(created=created, unchanged=len(objs) - created)
            return InsertCounts(created=created, skipped=len(objs) - created)
        compared = [f for f in update if not getattr(f, "auto_now", False)]
        cursor.execute(
            postgres_upsert_sql(
                self.table,
                columns,
                select,
                [self.quote(f.column) for f in unique],
                [self.quote(f.column) for f in update],
                [self.quote(f.column) for f in compared],
            )
        )
        created, updated = postgres_upsert_counts(cursor.fetchall())
        return InsertCounts(created, updated, len(objs) - created - updated)
