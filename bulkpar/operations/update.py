"""``update``: change existing rows, chunk by chunk over primary-key ranges.

Two paths:

* ``set`` — constant assignments run as one SQL ``UPDATE … WHERE pk > lo AND
  pk <= hi`` per chunk; no row is loaded into Python, and rows that already
  hold the values are not rewritten.
* ``func`` — the worker loads its chunk (ordered by pk), calls the function on
  each instance, and writes only the rows (and fields) that really changed,
  with ``bulk_update``.

Chunks are planned in the parent by keyset pagination over the primary key of
the filtered queryset: one ``LIMIT 1 OFFSET chunk-1`` probe from the previous
boundary per chunk, so planning is linear in the table, never quadratic, and
works for integer, UUID and string keys alike.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import json
import operator
import pickle
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from bulkpar.bootstrap import check_database, model_label
from bulkpar.engine.checkpoint import Checkpoint
from bulkpar.engine.contracts import ChunkMark
from bulkpar.engine.runner import Plan
from bulkpar.errors import RowError, UsageError
from bulkpar.inputs.conversion import Reject
from bulkpar.inputs.selection_strings import check_assignment, get_concrete_field, is_json_null
from bulkpar.operations.options import CheckedOperation, RunSpec, resume_point, target
from bulkpar.operations.references import as_queryset, field_names, func_ref, names, writer
from bulkpar.report import ChunkCounts


@dataclass(frozen=True)
class UpdateSpec:
    """The options of an update, as :func:`bulkpar.update` and ``bulkpar update`` take them.

    Attributes:
        queryset: a model class (all rows) or a QuerySet (its filters select the rows).
        set: field name → value, for one SQL ``UPDATE`` per chunk.
        func: a callable or ``"module:callable"`` applied to each loaded instance.
        fields: the fields ``func`` may change (``"a,b"`` or an iterable).
        touch: refresh ``auto_now`` fields of written rows.
        lock: ``SELECT … FOR UPDATE`` each chunk's rows before ``func`` runs.
        method: the writer of ``func``'s changes (see :mod:`bulkpar.writers`).
        run: the options every operation shares.
    """

    queryset: Any
    set: Mapping[str, Any] | None = None
    func: Callable[[Any], Any] | str | None = None
    fields: Iterable[str] | str | None = None
    touch: bool = True
    lock: bool = False
    method: str = "auto"
    run: RunSpec = dataclasses.field(default_factory=RunSpec)

    def validate(self) -> CheckedOperation:
        """Check every option once and build the job, before any write.

        Raises:
            bulkpar.errors.UsageError: neither or both of set and func, fields
                without func, an unknown field, the primary key in set, a value
                the column cannot hold, an invalid run option.
            bulkpar.errors.BulkparError: the database cannot be reached.
        """
        from django.db import connections, router

        queryset = as_queryset(self.queryset)
        model = queryset.model
        if (self.set is None) == (self.func is None):
            raise UsageError("give either --set FIELD=VALUE or --func MODULE:CALLABLE (not both)")
        fields = names(self.fields, "--fields")
        if fields and self.func is None:
            raise UsageError("--fields goes with --func")
        options = self.run.validate()
        alias = self.run.database or queryset._db or router.db_for_write(model)
        targets = []
        if self.set is not None:
            if not self.set:
                raise UsageError("set is empty: name at least one field=value")
            for name, value in self.set.items():
                field = get_concrete_field(model, name, option="set", spec=f"{name}=…")
                if field.primary_key:
                    raise UsageError(f"set cannot change the primary key {name!r}")
                targets.append((field, value))
        changeable = field_names(model, fields, "fields")
        func = func_ref(self.func, options) if self.func is not None else None
        query = pickle.dumps(queryset.order_by().query)
        check_database(alias, model)
        assignments = tuple(
            (field.attname, check_assignment(field, value, connection=connections[alias]))
            for field, value in targets
        )
        job = UpdateJob(
            model=model_label(model),
            database=alias,
            query=query,
            chunk=self.run.chunk,
            assignments=assignments,
            func=func,
            fields=changeable,
            touch=self.touch,
            lock=self.lock,
            writer=writer(self.method, alias, "update"),
        )
        return CheckedOperation(
            job=job,
            options=options,
            target=target(options, alias),
            fingerprint=job.describe(),
            planner=functools.partial(plan_selection, job.queryset(), job.chunk),
            checkpoint=self.run.checkpoint,
        )


def selection_description(queryset: Any) -> list[Any]:
    """A selection's SQL and parameters, for a checkpoint fingerprint."""
    sql, params = queryset.query.sql_with_params()
    return [sql, [repr(p) for p in params]]


def plan_selection(queryset: Any, chunk: int, checkpoint: Checkpoint | None) -> Plan:
    """The pk ranges of ``queryset`` a run still has to do (outside the committed ones).

    Shared by ``update``, ``delete`` and the queryset mode of ``save``: the rows
    are counted once, when the run starts (while the pool starts), and the
    ranges planned lazily as workers free up.
    """
    skip, first_index = resume_point(checkpoint)
    remaining = exclude_ranges(queryset, skip)
    return Plan(
        chunks=plan_pk_ranges(queryset, chunk, skip=skip, first_index=first_index),
        checkpoint=checkpoint,
        chunk=chunk,
        count=lambda: int(remaining.count()),
    )


@dataclass(frozen=True)
class PkRange:
    """Rows with ``lo < pk <= hi`` (``lo`` None: from the first row).

    A :class:`bulkpar.engine.contracts.Chunk`: its rows are counted when it
    runs (``size`` 0), and it may run alongside any other range.
    """

    index: int
    lo: Any
    hi: Any

    size: ClassVar[int] = 0
    position: ClassVar[int | None] = None
    partition: ClassVar[int | None] = None

    def mark(self) -> ChunkMark:
        """The journal keeps the range: a resume plans only the gaps."""
        return ChunkMark(lo=self.lo, hi=self.hi)

    @property
    def label(self) -> str:
        """Human description, e.g. ``pk in (1000, 2000]``."""
        if self.lo is None:
            return f"pk <= {self.hi!r}"
        return f"pk in ({self.lo!r}, {self.hi!r}]"


def plan_pk_ranges(
    queryset: Any, chunk: int, *, skip: Sequence[tuple[Any, Any]] = (), first_index: int = 0
) -> Iterator[PkRange]:
    """Yield primary-key ranges of ``chunk`` rows each over ``queryset``, lazily.

    Keyset pagination: each boundary is found by one indexed probe starting
    after the previous boundary, so the ranges stay disjoint and cover every
    row even while workers are already changing earlier ranges.

    Args:
        skip: ``(lo, hi]`` ranges already done (sorted, merged; from a
            checkpoint): only the gaps between them are planned.
        first_index: the index of the first range yielded.
    """
    index = first_index
    for gap_lo, gap_hi in _gaps(skip):
        keys = queryset.order_by("pk").values_list("pk", flat=True)
        if gap_hi is not None:
            keys = keys.filter(pk__lte=gap_hi)
        lo: Any = gap_lo
        while True:
            page = keys if lo is None else keys.filter(pk__gt=lo)
            hi = next(iter(page[chunk - 1 : chunk]), None)
            if hi is None:
                hi = next(iter(page.order_by("-pk")[:1]), None)
                if hi is not None:
                    yield PkRange(index, lo, hi)
                    index += 1
                break
            yield PkRange(index, lo, hi)
            index += 1
            lo = hi


def _gaps(done: Sequence[tuple[Any, Any]]) -> list[tuple[Any, Any]]:
    """The ``(lo, hi]`` stretches of key space outside ``done`` (None: unbounded)."""
    gaps: list[tuple[Any, Any]] = []
    previous: Any = None
    for lo, hi in done:
        if lo is not None:
            gaps.append((previous, lo))
        previous = hi
    gaps.append((previous, None))
    return gaps


def exclude_ranges(queryset: Any, done: Sequence[tuple[Any, Any]]) -> Any:
    """``queryset`` without the rows inside the ``(lo, hi]`` ranges of ``done``."""
    for lo, hi in done:
        queryset = (
            queryset.exclude(pk__lte=hi) if lo is None else queryset.exclude(pk__gt=lo, pk__lte=hi)
        )
    return queryset


def split_pk_range(chunk: PkRange, pks: list[Any]) -> list[PkRange] | None:
    """Halve a range by its keys (``pks``: the range's keys, sorted); None for one row."""
    if len(pks) <= 1:
        return None
    middle = pks[len(pks) // 2 - 1]
    return [PkRange(chunk.index, chunk.lo, middle), PkRange(chunk.index, middle, chunk.hi)]


def reject_pk_range(pks: list[Any], error: BaseException) -> list[Reject] | None:
    """The reject of a one-row range whose write failed (None when it is not one row)."""
    if len(pks) != 1:
        return None
    trace = "".join(traceback.format_exception(error))
    return [Reject(None, {"pk": pks[0]}, None, f"{type(error).__name__}: {error}", trace)]


def _serialises_writers(database: str) -> bool:
    from django.db import connections

    return bool(connections[database].vendor == "sqlite")


def _snapshot(value: Any) -> Any:
    # JSON values are mutated in place by transforms; compare against a copy.
    return copy.deepcopy(value) if isinstance(value, dict | list) else value


def _same(field: Any, old: Any, new: Any) -> bool:
    """Whether a transform left ``field`` as it was (then it is not written).

    JSON values are compared as JSON, types included: in Python ``1 == True``
    and ``1 == 1.0``, but the database stores ``1``, ``true`` and ``1.0``
    apart. An untouched value is the very same object, so an untouched float
    NaN (``nan != nan``) counts as unchanged; a NaN computed anew is written.
    """
    from django.db.models import JSONField

    if new is old:
        return True
    if isinstance(field, JSONField):
        try:
            return _json_text(field, old) == _json_text(field, new)
        except (TypeError, ValueError):  # not JSON serialisable: let the write say so
            return False
    return bool(new == old)


def _json_text(field: Any, value: Any) -> str:
    return json.dumps(value, cls=field.encoder, sort_keys=True)


def _holds(field: Any, name: str, value: Any, connection: Any) -> Any:
    """A condition true where column ``name`` already stores what ``SET name = value`` stores.

    It is exact, never a guess: a row it misses is rewritten (harmless), a
    row it matches would not change. SQL NULL is ``IS NULL``; JSON values
    and, on MariaDB/MySQL, strings (whose collations ignore case and
    trailing spaces) are compared as stored bytes (see :func:`_stores_class`);
    everything else with the field's own ``exact`` lookup.
    """
    from django.db.models import CharField, JSONField, Q, TextField

    if value is None:
        return Q(**{f"{name}__isnull": True})
    if isinstance(field, JSONField) and is_json_null(value):
        return Q(_stores(name, field, value))
    if hasattr(value, "resolve_expression"):
        return Q(**{name: value})
    if isinstance(field, JSONField):
        return Q(_stores(name, field, value))
    target = field.target_field if field.is_relation else field
    if connection.vendor == "mysql" and isinstance(target, CharField | TextField):
        return Q(_stores(name, field, value))
    return Q(**{name: value})


@functools.cache
def _stores_class() -> type[Any]:
    from django.db.models import BooleanField, Expression, F

    class Stores(Expression):
        """``column`` is not NULL and equals, as stored, ``field``'s database value of ``value``.

        PostgreSQL compares jsonb by its canonical text (``1`` and ``1.0``
        are equal as jsonb but stored apart); SQLite compares the stored text
        (Django writes JSON as ``json.dumps`` text); MariaDB/MySQL compare
        bytes (``CAST … AS BINARY``), beyond the column's collation.
        """

        conditional = True
        output_field = BooleanField()

        def __init__(self, name: str, field: Any, value: Any) -> None:
            super().__init__()
            self.column: Any = F(name)
            self.target = field
            self.value = value

        def get_source_expressions(self) -> list[Any]:
            return [self.column]

        def set_source_expressions(self, exprs: list[Any]) -> None:
            (self.column,) = exprs

        def as_sql(self, compiler: Any, connection: Any) -> tuple[str, list[Any]]:
            column, params = compiler.compile(self.column)
            prepared = self.target.get_db_prep_save(self.value, connection)
            if connection.vendor == "postgresql" and self.target.get_internal_type() == "JSONField":
                test = f"{column}::text = (%s::jsonb)::text"
            elif connection.vendor == "mysql":
                test = f"CAST({column} AS BINARY) = CAST(%s AS BINARY)"
            else:
                test = f"{column} = %s"
            return f"({column} IS NOT NULL AND {test})", [*params, *params, prepared]

    return Stores


def _stores(name: str, field: Any, value: Any) -> Any:
    """The ``Stores`` expression (its class is built on first use: Django loads lazily here)."""
    return _stores_class()(name, field, value)


@dataclass(frozen=True)
class UpdateJob:
    """An update of the rows selected by a queryset.

    Attributes:
        model: ``app_label.ModelName``.
        database: alias to read and write.
        query: the pickled ``Query`` of the selection (filters, excludes).
        chunk: rows per chunk (and per transaction).
        assignments: ``(field attname, value)`` pairs for the SQL path.
        func: ``module:callable`` for the transform path.
        fields: names of the fields the transform may change (all when empty).
        touch: refresh ``auto_now`` fields on written rows, as ``save()`` would.
        lock: ``SELECT … FOR UPDATE`` the chunk's rows before the transform.
        writer: the writer of changed rows (see :mod:`bulkpar.writers`).
    """

    model: str
    database: str
    query: bytes
    chunk: int
    assignments: tuple[tuple[str, Any], ...] = ()
    func: str | None = None
    fields: tuple[str, ...] = ()
    touch: bool = True
    lock: bool = False
    writer: str = "django"
    operation: str = "update"

    @property
    def method(self) -> str:
        """The write path: ``sql`` (set) or the writer used for ``func``."""
        return "sql" if self.assignments else self.writer

    def model_class(self) -> Any:
        from django.apps import apps

        return apps.get_model(self.model)

    def queryset(self) -> Any:
        """The selection, rebuilt from the pickled query, on this job's database."""
        model = self.model_class()
        queryset = model._base_manager.db_manager(self.database).all()
        queryset.query = pickle.loads(self.query)
        return queryset

    def describe(self) -> dict[str, Any]:
        """What identifies this job for a checkpoint fingerprint."""
        return {
            "operation": self.operation,
            "model": self.model,
            "database": self.database,
            "selection": selection_description(self.queryset()),
            "set": [[name, repr(value)] for name, value in self.assignments],
            "func": self.func if isinstance(self.func, str) else repr(self.func),
            "fields": list(self.fields),
            "touch": self.touch,
            "chunk": self.chunk,
        }

    def chunk_rows(self, chunk: PkRange) -> int:
        """Rows currently selected inside ``chunk`` (for reporting a failed chunk)."""
        return int(self._range(chunk).count())

    def _keys(self, chunk: PkRange) -> list[Any]:
        return list(self._range(chunk).order_by("pk").values_list("pk", flat=True))

    def split(self, chunk: PkRange) -> list[PkRange] | None:
        """Two halves of ``chunk`` (for ``--on-error bisect``), or None for one row."""
        return split_pk_range(chunk, self._keys(chunk))

    def reject(self, chunk: PkRange, error: BaseException) -> list[Reject] | None:
        """The reject of a one-row chunk that failed on its own."""
        return reject_pk_range(self._keys(chunk), error)

    def _range(self, chunk: PkRange) -> Any:
        queryset = self.queryset().filter(pk__lte=chunk.hi)
        return queryset if chunk.lo is None else queryset.filter(pk__gt=chunk.lo)

    def _touch_fields(self, model: Any) -> list[Any]:
        if not self.touch:
            return []
        return [f for f in model._meta.concrete_fields if getattr(f, "auto_now", False)]

    def execute(
        self, chunk: PkRange, phases: dict[str, float], atomic: Callable[[], Any]
    ) -> ChunkCounts:
        """Run one chunk; its writes commit or roll back together.

        On SQLite, which allows one writer at a time, a ``func`` chunk is
        loaded and transformed before its write transaction begins, so that
        workers transform in parallel and hold the write lock only to write.
        Elsewhere (and with ``lock``) the whole chunk is one transaction.
        """
        if self.assignments:
            with atomic():
                return self._execute_set(chunk, phases)
        if self.lock or not _serialises_writers(self.database):
            with atomic():
                return self._execute_func(chunk, phases, contextlib.nullcontext)
        return self._execute_func(chunk, phases, atomic)

    def _execute_set(self, chunk: PkRange, phases: dict[str, float]) -> ChunkCounts:
        from django.db import connections

        model = self.model_class()
        connection = connections[self.database]
        start = time.perf_counter()
        rows = self._range(chunk)
        matched = rows.count()
        differs = [
            ~_holds(model._meta.get_field(name), name, value, connection)
            for name, value in self.assignments
        ]
        values = dict(self.assignments)
        for field in self._touch_fields(model):
            if field.name not in values:
                values[field.name] = field.pre_save(model(), add=False)
        if differs:
            rows = rows.filter(functools.reduce(operator.or_, differs))
        written = rows.update(**values)
        phases["write"] = time.perf_counter() - start
        return ChunkCounts(
            rows=matched, matched=matched, written=written, unchanged=matched - written
        )

    def _execute_func(
        self, chunk: PkRange, phases: dict[str, float], atomic: Callable[[], Any]
    ) -> ChunkCounts:
        from django.db import connections

        from bulkpar.bootstrap import import_callable
        from bulkpar.writers import KeySpan, make_writer

        assert self.func is not None
        func = self.func if callable(self.func) else import_callable(self.func)
        model = self.model_class()
        meta = model._meta
        start = time.perf_counter()
        rows = self._range(chunk).order_by("pk")
        if self.lock:
            rows = rows.select_for_update()
        objs = list(rows)
        loaded = time.perf_counter()
        phases["load"] = loaded - start

        if self.fields:
            compare = [meta.get_field(name) for name in self.fields]
        else:
            compare = [f for f in meta.concrete_fields if not f.primary_key]
        # Rows grouped by the fields their own transform changed: a row is
        # written with those fields only, never with a field it left alone
        # (rewriting a loaded JSON null would store SQL NULL: both load as None).
        groups: dict[tuple[str, ...], list[Any]] = {}
        skipped = unchanged = 0
        for obj in objs:
            before = [_snapshot(getattr(obj, f.attname)) for f in compare]
            try:
                outcome = func(obj)
            except Exception as exc:
                raise RowError(obj.pk, exc) from exc
            if outcome is False:
                skipped += 1
                continue
            changed = tuple(
                f.name
                for f, old in zip(compare, before, strict=True)
                if not _same(f, old, getattr(obj, f.attname))
            )
            if changed:
                groups.setdefault(changed, []).append(obj)
            else:
                unchanged += 1
        transformed = time.perf_counter()
        phases["transform"] = transformed - loaded

        written = sum(len(group) for group in groups.values())
        if groups:
            touch = self._touch_fields(model)
            batches = []
            for names, group in groups.items():
                for field in touch:
                    for obj in group:
                        field.pre_save(obj, add=False)
                fields = [meta.get_field(name) for name in names]
                fields += [f for f in touch if f.name not in names]
                batches.append((group, fields))
            with atomic():
                # one statement (or COPY) per distinct set of changed fields
                for group, fields in batches:
                    writer = make_writer(
                        self.writer, model, connections[self.database], rows=len(group)
                    )
                    # the group keeps the load's ORDER BY pk: its ends bound the keys
                    writer.update(group, fields, span=KeySpan.of(group))
        phases["write"] = time.perf_counter() - transformed
        return ChunkCounts(
            rows=len(objs),
            matched=len(objs),
            written=written,
            unchanged=unchanged,
            skipped=skipped,
        )
