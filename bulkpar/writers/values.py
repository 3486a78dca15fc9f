"""Multi-row ``VALUES`` statements that report what they did (the portable fast writer).

Django's ``bulk_create(ignore_conflicts=True)`` and
``bulk_create(update_conflicts=True)`` cannot say how many rows were inserted,
updated or left alone. These statements can, per backend:

* PostgreSQL: ``INSERT … ON CONFLICT DO NOTHING`` (rowcount = inserted) and
  ``INSERT … ON CONFLICT (key) DO UPDATE … WHERE (old) IS DISTINCT FROM (new)
  RETURNING (xmax = 0)``: one row back per created (true) or updated (false)
  row; rows whose values were already equal are not rewritten.
* SQLite (3.35+): the same upsert with ``RETURNING``; created rows are told
  from updated ones by counting the chunk's keys that existed before, which is
  exact because SQLite writers hold the database's only write lock.
* MariaDB/MySQL: ``INSERT IGNORE`` and ``INSERT … ON DUPLICATE KEY UPDATE``.
  Django connects with CLIENT_FOUND_ROWS, so the rowcount is 1 per inserted or
  unchanged row and 2 per updated row; the chunk's existing keys are counted
  (and locked) first.

Values are prepared with each field's own ``get_db_prep_save``, so custom
fields, JSON and timezone handling behave exactly as in Django. Statements are
split to respect each backend's limit on query parameters.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bulkpar.writers import KeySpan

#: Rows per statement at most, whatever the parameter limit allows: keeps
#: statements well inside MariaDB's max_allowed_packet and PostgreSQL's
#: 65,535 bind parameters.
MAX_ROWS_PER_STATEMENT = 2000
MAX_PARAMS = 65535


@dataclass(frozen=True)
class InsertCounts:
    """What an insert did to a batch of rows."""

    created: int = 0
    updated: int = 0
    unchanged: int = 0
    skipped: int = 0
    inexact: bool = False


def postgres_upsert_sql(
    table: str,
    columns: str,
    rows: str,
    unique: Sequence[str],
    update: Sequence[str],
    compared: Sequence[str],
) -> str:
    """PostgreSQL's counting upsert: one returned row per created (true) or updated (false) row.

    ``INSERT INTO table AS t (columns) rows ON CONFLICT (unique) DO UPDATE SET
    … WHERE ROW(old) IS DISTINCT FROM ROW(new) RETURNING (xmax = 0)``: rows
    whose ``compared`` columns already hold the new values are not rewritten
    (and not returned). ``rows`` is ``VALUES …`` or a ``SELECT``; every name
    is quoted already. Read the result with :func:`postgres_upsert_counts`.
    """
    sets = ", ".join(f"{c} = EXCLUDED.{c}" for c in update)
    old = ", ".join(f"t.{c}" for c in compared)
    new = ", ".join(f"EXCLUDED.{c}" for c in compared)
    # ROW() keeps a one-column comparison a row comparison.
    where = f" WHERE ROW({old}) IS DISTINCT FROM ROW({new})" if compared else ""
    return (
        f"INSERT INTO {table} AS t ({columns}) {rows} "
        f"ON CONFLICT ({', '.join(unique)}) DO UPDATE SET {sets}{where} RETURNING (xmax = 0)"
    )


def postgres_upsert_counts(returned: Iterable[tuple[bool]]) -> tuple[int, int]:
    """``(created, updated)`` from the rows a :func:`postgres_upsert_sql` statement returned."""
    created = updated = 0
    for (inserted,) in returned:
        if inserted:
            created += 1
        else:
            updated += 1
    return created, updated


def split_upsert_counts(rows: int, existing: int, updated: int) -> InsertCounts:
    """Created / updated / unchanged of an upsert of ``rows`` distinct keys (MariaDB/MySQL).

    ``updated`` comes from the statement's own row count and is exact;
    ``existing`` is the locking count of the keys taken just before it. Under
    READ COMMITTED that count locks no gaps, so a key another writer inserts
    in between is missing from it: ``existing`` can then be below
    ``updated``. The split is clamped so that no count is negative and they
    still add up to ``rows``, and marked ``inexact``.
    """
    clamped = min(max(existing, updated), rows)
    return InsertCounts(
        created=rows - clamped,
        updated=min(updated, rows),
        unchanged=clamped - min(updated, rows),
        inexact=clamped != existing or updated > rows,
    )


class ValuesWriter:
    """Multi-row ``VALUES`` statements on PostgreSQL, SQLite and MariaDB/MySQL.

    Use :meth:`insert` (plain, ignoring conflicts, or upserting) and
    :meth:`update` (rows matched by primary key).
    """

    name = "values"

    def __init__(self, model: type[Any], connection: Any) -> None:
        self.model = model
        self.connection = connection
        self.vendor = connection.vendor
        self.table = connection.ops.quote_name(model._meta.db_table)

    def insert(
        self,
        objs: Sequence[Any],
        fields: Sequence[Any],
        *,
        unique: Sequence[Any] = (),
        update: Sequence[Any] = (),
        ignore_conflicts: bool = False,
    ) -> InsertCounts:
        """Insert ``objs``: plain, ignoring conflicts, or upserting on ``unique``.

        Args:
            fields: concrete fields to insert, in order.
            unique: upserts: the fields of the unique constraint that identifies a row.
            update: upserts: the fields overwritten on existing rows (``auto_now``
                fields among them are refreshed only when another field changes).
            ignore_conflicts: skip rows that collide with an existing unique key.
        """
        return _InsertStatement(
            self.model, self.connection, fields, unique, update, ignore_conflicts
        ).write(objs)

    def update(self, objs: Sequence[Any], fields: Sequence[Any], *, span: KeySpan) -> int:
        """Write ``fields`` of ``objs``, matched by primary key; returns rows updated.

        PostgreSQL and SQLite (3.33+): ``UPDATE t SET f = v.f FROM (VALUES …) v
        WHERE t.pk = v.pk``; MariaDB/MySQL: ``UPDATE t JOIN (SELECT … UNION ALL
        SELECT …) v ON t.pk = v.pk SET t.f = v.f``; each bounded by ``span``
        (``AND t.pk >= first AND t.pk <= last``), so that the table is read
        through its key's index even when the planner has no statistics.
        """
        if not objs:
            return 0
        updated = 0
        for model, table_fields in fields_by_table(self.model, fields):
            updated = max(updated, self._update_table(model, objs, table_fields, span))
        return updated

    def _update_table(
        self, model: Any, objs: Sequence[Any], fields: Sequence[Any], span: KeySpan
    ) -> int:
        connection = self.connection
        quote = connection.ops.quote_name
        table = quote(model._meta.db_table)
        pk = model._meta.pk
        columns = [pk, *fields]
        names = [f"c{i}" for i in range(len(columns))]
        prep_pk = preparer(pk, connection)
        preps = [(f.attname, preparer(f, connection)) for f in fields]
        size = _rows_per_statement(connection, columns, objs)
        within, bounds = key_span_sql(connection, model, span)
        updated = 0
        with connection.cursor() as cursor:
            for start in range(0, len(objs), size):
                batch = objs[start : start + size]
                params: list[Any] = []
                for obj in batch:
                    params.append(prep_pk(obj.pk))
                    params.extend(prep(getattr(obj, attname)) for attname, prep in preps)
                sets = ", ".join(
                    f"{quote(f.column)} = v.{n}" for f, n in zip(fields, names[1:], strict=True)
                )
                if self.vendor == "mysql":
                    row = "SELECT " + ", ".join(f"%s AS {n}" for n in names)
                    rows = " UNION ALL ".join(
                        [row] + ["SELECT " + ", ".join(["%s"] * len(names))] * (len(batch) - 1)
                    )
                    t_sets = ", ".join(
                        f"t.{quote(f.column)} = v.{n}"
                        for f, n in zip(fields, names[1:], strict=True)
                    )
                    sql = (
                        f"UPDATE {table} AS t JOIN ({rows}) AS v "
                        f"ON t.{quote(pk.column)} = v.c0 SET {t_sets} WHERE {within('t')}"
                    )
                elif self.vendor == "sqlite":  # no column aliases on a VALUES subquery
                    values = ", ".join([_typed_row(connection, columns)] * len(batch))
                    sql = (
                        f"WITH v ({', '.join(names)}) AS (VALUES {values}) "
                        f"UPDATE {table} SET {sets} FROM v "
                        f"WHERE {table}.{quote(pk.column)} = v.c0 AND {within(table)}"
                    )
                else:
                    values = ", ".join([_typed_row(connection, columns)] * len(batch))
                    sql = (
                        f"UPDATE {table} SET {sets} FROM (VALUES {values}) "
                        f"AS v ({', '.join(names)}) "
                        f"WHERE {table}.{quote(pk.column)} = v.c0 AND {within(table)}"
                    )
                cursor.execute(sql, [*params, *bounds])
                updated += max(cursor.rowcount, 0)
        return updated


#: Field classes whose ``get_db_prep_save`` returns a value of this type unchanged.
_PLAIN_TYPES = {
    "CharField": str, "TextField": str, "IntegerField": int, "BigIntegerField": int,
    "SmallIntegerField": int, "PositiveIntegerField": int, "PositiveSmallIntegerField": int,
    "PositiveBigIntegerField": int, "AutoField": int, "BigAutoField": int,
    "SmallAutoField": int, "BooleanField": bool, "FloatField": float,
}  # fmt: skip


def preparer(field: Any, connection: Any) -> Callable[[Any], Any]:
    """``field.get_db_prep_save`` for ``connection``, skipped where it is the identity.

    For Django's plain field types a value that already has the field's
    Python type (or is None) goes to the driver as it is; so do finite
    decimals and aware datetimes where the backend hands them to its driver
    unchanged (PostgreSQL: see :func:`_passes_through`); anything else —
    other types, custom fields, JSON, naive datetimes — goes through the field.
    """
    prep = field.get_db_prep_save
    plain = None
    if type(field).__module__.startswith("django.db"):
        plain = _PLAIN_TYPES.get(type(field).__name__)
        if plain is None:
            special = _passes_through(field, connection)
            if special is not None:
                return special
    if plain is None:
        return lambda value: prep(value, connection)

    def prepare(value: Any) -> Any:
        if value is None or type(value) is plain:
            return value
        return prep(value, connection)

    return prepare


def key_span_sql(
    connection: Any, model: Any, span: KeySpan
) -> tuple[Callable[[str], str], list[Any]]:
    """``(alias → "alias.pk >= %s AND alias.pk <= %s", [first, last])`` for ``model``'s table."""
    pk = model._meta.pk
    column = connection.ops.quote_name(pk.column)
    prepare = preparer(pk, connection)

    def within(alias: str) -> str:
        return f"{alias}.{column} >= %s AND {alias}.{column} <= %s"

    return within, [prepare(span.first), prepare(span.last)]


def _passes_through(field: Any, connection: Any) -> Callable[[Any], Any] | None:
    """A fast preparer for Django's DecimalField and DateTimeField, where it is exact.

    ``DecimalField.get_db_prep_save`` is ``adapt_decimalfield_value(Decimal(v))``
    and ``DateTimeField``'s, for an aware datetime with ``USE_TZ``,
    ``adapt_datetimefield_value(v)``. Whether the backend's adapter is the
    identity depends on the backend and Django's version (PostgreSQL passes
    both through; MariaDB and SQLite make strings; Django 4.2 formats
    decimals), so it is asked once: an adapter that hands back the very object
    it was given passes values through, and only then is the field skipped.
    """
    import datetime
    import decimal

    from django.conf import settings

    prep = field.get_db_prep_save
    kind = type(field).__name__
    ops = connection.ops
    if kind == "DecimalField":
        sample = decimal.Decimal("1.5")
        if (
            ops.adapt_decimalfield_value(sample, field.max_digits, field.decimal_places)
            is not sample
        ):
            return None

        def prepare_decimal(value: Any) -> Any:
            if value is None or (type(value) is decimal.Decimal and value.is_finite()):
                return value
            return prep(value, connection)

        return prepare_decimal
    if kind == "DateTimeField" and settings.USE_TZ:
        moment = datetime.datetime(2000, 1, 1, tzinfo=datetime.timezone.utc)
        if ops.adapt_datetimefield_value(moment) is not moment:
            return None

        def prepare_datetime(value: Any) -> Any:
            if value is None or (type(value) is datetime.datetime and value.tzinfo is not None):
                return value
            return prep(value, connection)

        return prepare_datetime
    return None


def fields_by_table(model: Any, fields: Sequence[Any]) -> list[tuple[Any, list[Any]]]:
    """Group fields by the model whose table holds them (multi-table inheritance).

    A child's primary key equals its parents' keys, so every group is matched
    by ``obj.pk``.
    """
    groups: dict[Any, list[Any]] = {}
    for field in fields:
        owner = field.model._meta.concrete_model
        groups.setdefault(owner, []).append(field)
    return list(groups.items())


def _typed_row(connection: Any, fields: Sequence[Any]) -> str:
    """``(%s, %s::jsonb, …)``: PostgreSQL cannot infer types inside a VALUES list."""
    if connection.vendor != "postgresql":
        return "(" + ", ".join(["%s"] * len(fields)) + ")"
    return "(" + ", ".join(f"%s::{f.db_type(connection)}" for f in fields) + ")"


def _rows_per_statement(connection: Any, fields: Sequence[Any], objs: Sequence[Any]) -> int:
    per_row = max(len(fields), 1)
    size = min(MAX_ROWS_PER_STATEMENT, MAX_PARAMS // per_row)
    if connection.vendor == "sqlite":
        size = min(size, connection.ops.bulk_batch_size(list(fields), objs))
    return max(size, 1)


class _InsertStatement:
    """One insert of a batch of objects with a conflict policy."""

    def __init__(
        self,
        model: type[Any],
        connection: Any,
        fields: Sequence[Any],
        unique: Sequence[Any],
        update: Sequence[Any],
        ignore_conflicts: bool,
    ) -> None:
        self.model = model
        self.connection = connection
        self.fields = list(fields)
        self.unique = list(unique)
        self.update = list(update)
        self.ignore_conflicts = ignore_conflicts
        self.vendor = connection.vendor
        quote = connection.ops.quote_name
        self.table = quote(model._meta.db_table)
        self.columns = ", ".join(quote(f.column) for f in self.fields)
        self.row_placeholder = "(" + ", ".join(["%s"] * len(self.fields)) + ")"
        self.auto_now = [f for f in self.fields if getattr(f, "auto_now", False)]
        self.compared = [f for f in self.update if f not in self.auto_now]
        self.preparers = [(f.attname, preparer(f, connection)) for f in self.fields]

    # -- values ---------------------------------------------------------

    def values(self, obj: Any) -> list[Any]:
        """One row's database values, prepared by the fields themselves."""
        return [prep(getattr(obj, attname)) for attname, prep in self.preparers]

    def batches(self, objs: Sequence[Any]) -> Iterator[Sequence[Any]]:
        """Split ``objs`` so every statement stays within the backend's parameter limit."""
        size = _rows_per_statement(self.connection, self.fields, objs)
        for start in range(0, len(objs), size):
            yield objs[start : start + size]

    def _insert_sql(self, count: int) -> str:
        rows = ", ".join([self.row_placeholder] * count)
        return f"INSERT INTO {self.table} ({self.columns}) VALUES {rows}"

    # -- writing --------------------------------------------------------

    def write(self, objs: Sequence[Any]) -> InsertCounts:
        """Insert ``objs`` under this writer's conflict policy and count the outcome."""
        if not objs:
            return InsertCounts()
        if self.unique and self.update:
            return self._upsert(objs)
        if self.unique:  # an upsert with nothing to overwrite: existing rows stay as they are
            created = self._insert_ignore(objs)
            return InsertCounts(created=created, unchanged=len(objs) - created)
        if self.ignore_conflicts:
            created = self._insert_ignore(objs)
            return InsertCounts(created=created, skipped=len(objs) - created)
        with self.connection.cursor() as cursor:
            for batch in self.batches(objs):
                cursor.execute(self._insert_sql(len(batch)), self._params(batch))
        return InsertCounts(created=len(objs))

    def _params(self, batch: Sequence[Any]) -> list[Any]:
        params: list[Any] = []
        for obj in batch:
            params.extend(self.values(obj))
        return params

    def _insert_ignore(self, objs: Sequence[Any]) -> int:
        created = 0
        with self.connection.cursor() as cursor:
            for batch in self.batches(objs):
                sql = self._insert_sql(len(batch))
                if self.vendor == "mysql":
                    sql = sql.replace("INSERT INTO", "INSERT IGNORE INTO", 1)
                else:
                    sql += " ON CONFLICT DO NOTHING"
                cursor.execute(sql, self._params(batch))
                created += max(cursor.rowcount, 0)
        return created

    def _upsert(self, objs: Sequence[Any]) -> InsertCounts:
        if self.vendor == "postgresql":
            return self._upsert_postgres(objs)
        if self.vendor == "sqlite":
            return self._upsert_sqlite(objs)
        if self.vendor == "mysql":
            return self._upsert_mysql(objs)
        from bulkpar.errors import UsageError

        raise UsageError(f"upsert is not supported on the {self.vendor!r} backend")

    def _quoted(self, fields: Sequence[Any]) -> list[str]:
        quote = self.connection.ops.quote_name
        return [quote(f.column) for f in fields]

    def _upsert_postgres(self, objs: Sequence[Any]) -> InsertCounts:
        unique, update = self._quoted(self.unique), self._quoted(self.update)
        compared = self._quoted(self.compared)
        created = updated = 0
        with self.connection.cursor() as cursor:
            for batch in self.batches(objs):
                rows = "VALUES " + ", ".join([self.row_placeholder] * len(batch))
                sql = postgres_upsert_sql(self.table, self.columns, rows, unique, update, compared)
                cursor.execute(sql, self._params(batch))
                batch_created, batch_updated = postgres_upsert_counts(cursor.fetchall())
                created += batch_created
                updated += batch_updated
        return InsertCounts(created, updated, len(objs) - created - updated)

    def _count_existing(self, cursor: Any, batch: Sequence[Any], *, lock: bool) -> int:
        """How many of ``batch``'s unique keys are already in the table."""
        columns = self._quoted(self.unique)
        keys: list[Any] = []
        for obj in batch:
            keys.extend(
                f.get_db_prep_save(getattr(obj, f.attname), self.connection) for f in self.unique
            )
        if len(columns) == 1:
            condition = f"{columns[0]} IN ({', '.join(['%s'] * len(batch))})"
        else:
            row = "(" + ", ".join(["%s"] * len(columns)) + ")"
            values = ", ".join([row] * len(batch))
            if self.vendor == "sqlite":
                values = f"VALUES {values}"
            condition = f"({', '.join(columns)}) IN ({values})"
        suffix = " FOR UPDATE" if lock else ""
        cursor.execute(f"SELECT COUNT(*) FROM {self.table} WHERE {condition}{suffix}", keys)
        return int(cursor.fetchone()[0])

    def _upsert_sqlite(self, objs: Sequence[Any]) -> InsertCounts:
        unique = ", ".join(self._quoted(self.unique))
        sets = ", ".join(f"{c} = excluded.{c}" for c in self._quoted(self.update))
        differs = " OR ".join(
            f"{self.table}.{c} IS NOT excluded.{c}" for c in self._quoted(self.compared)
        )
        where = f" WHERE {differs}" if differs else ""
        created = updated = existing_total = 0
        with self.connection.cursor() as cursor:
            for batch in self.batches(objs):
                existing = self._count_existing(cursor, batch, lock=False)
                sql = (
                    f"{self._insert_sql(len(batch))} ON CONFLICT ({unique}) "
                    f"DO UPDATE SET {sets}{where} RETURNING 1"
                )
                cursor.execute(sql, self._params(batch))
                returned = len(cursor.fetchall())
                batch_created = len(batch) - existing
                created += batch_created
                updated += returned - batch_created
                existing_total += existing
        return InsertCounts(created, updated, existing_total - updated)

    def _upsert_mysql(self, objs: Sequence[Any]) -> InsertCounts:
        compared = self._quoted(self.compared)
        # byte-wise: a case-insensitive collation would call 'abc' and 'ABC' equal
        same = (
            " AND ".join(f"CAST({c} AS BINARY) <=> CAST(VALUES({c}) AS BINARY)" for c in compared)
            or "TRUE"
        )
        # Assignments run left to right and see earlier ones, so the auto_now
        # columns are decided first, against the row's old values.
        sets = [f"{c} = IF({same}, {c}, VALUES({c}))" for c in self._quoted(self.auto_now)]
        sets += [f"{c} = VALUES({c})" for c in compared]
        created = updated = unchanged = 0
        inexact = False
        with self.connection.cursor() as cursor:
            for batch in self.batches(objs):
                existing = self._count_existing(cursor, batch, lock=True)
                sql = f"{self._insert_sql(len(batch))} ON DUPLICATE KEY UPDATE {', '.join(sets)}"
                cursor.execute(sql, self._params(batch))
                # CLIENT_FOUND_ROWS: 1 per inserted or unchanged row, 2 per updated row.
                counts = split_upsert_counts(
                    len(batch), existing, max(cursor.rowcount - len(batch), 0)
                )
                created += counts.created
                updated += counts.updated
                unchanged += counts.unchanged
                inexact = inexact or counts.inexact
        return InsertCounts(created, updated, unchanged, inexact=inexact)
