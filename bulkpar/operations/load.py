"""``create`` and ``upsert``: load input records into a model, chunk by chunk.

The parent reads the input as a stream and cuts it into :class:`RowBatch`
chunks of plain values (input position order); workers convert and validate
each record with the model's fields, reject what cannot be converted, and
write the rest in one transaction with a native multi-row INSERT
(:mod:`bulkpar.writers.insert`) that reports created / updated / unchanged /
skipped counts.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from bulkpar.engine.checkpoint import records_digest
from bulkpar.engine.contracts import ChunkMark
from bulkpar.errors import UsageError
from bulkpar.inputs.conversion import (
    ColumnPlan,
    Reject,
    RowConverter,
    RowRejected,
    instance_builder,
    validate_instance,
)
from bulkpar.inputs.partitions import KeyPartitioner, collation_key
from bulkpar.inputs.sources import Record
from bulkpar.report import ChunkCounts


@dataclass(frozen=True)
class RowBatch:
    """A chunk of input records (plain values) and where it ends in the input.

    ``partition`` is the key partition its records were routed to (see
    :mod:`bulkpar.inputs.partitions`): the runner runs a partition's chunks one at a
    time, in ``index`` order. None: the chunk may run alongside any other.
    A :class:`bulkpar.engine.contracts.Chunk`.
    """

    index: int
    records: tuple[Record, ...]
    position: int | None = None
    partition: int | None = None

    def mark(self) -> ChunkMark:
        """The journal keeps the records' digest: a resume checks the input is the same."""
        return ChunkMark(digest=records_digest(self.records))

    @property
    def size(self) -> int:
        """Records in the chunk."""
        return len(self.records)

    @property
    def label(self) -> str:
        """Human description, e.g. ``lines 2-1001``."""
        if not self.records:
            return "no records"
        lines = f"lines {self.records[0].line}-{self.records[-1].line}"
        return lines if self.partition is None else f"{lines} of partition {self.partition}"


def plan_batches(
    records: Iterable[Record],
    chunk: int,
    position: Callable[[], int | None] = lambda: None,
    *,
    partition: KeyPartitioner | None = None,
) -> Iterator[RowBatch]:
    """Cut a stream of records into batches of ``chunk``, lazily.

    With ``partition``, every record goes to its key's partition; a partition
    is cut into a batch each time it holds ``chunk`` records, and what is left
    when the input ends follows in partition order. Indexes count the batches
    in the order they are cut, so the same input is always the same batches.
    At most ``partitions × chunk`` records are held.
    """
    if partition is None:
        batch: list[Record] = []
        index = 0
        for record in records:
            batch.append(record)
            if len(batch) == chunk:
                yield RowBatch(index, tuple(batch), position())
                index += 1
                batch = []
        if batch:
            yield RowBatch(index, tuple(batch), position())
        return
    buffers: list[list[Record]] = [[] for _ in range(partition.partitions)]
    index = 0
    for record in records:
        number = partition(record)
        buffer = buffers[number]
        buffer.append(record)
        if len(buffer) == chunk:
            yield RowBatch(index, tuple(buffer), position(), number)
            index += 1
            buffers[number] = []
    for number, buffer in enumerate(buffers):
        if buffer:
            yield RowBatch(index, tuple(buffer), position(), number)
            index += 1


def split_batch(chunk: RowBatch) -> list[RowBatch] | None:
    """Halve a batch of records (for ``--on-error bisect``); None for one record."""
    if chunk.size <= 1:
        return None
    middle = chunk.size // 2
    return [
        RowBatch(chunk.index, chunk.records[:middle], chunk.position, chunk.partition),
        RowBatch(chunk.index, chunk.records[middle:], chunk.position, chunk.partition),
    ]


def reject_batch(chunk: RowBatch, error: BaseException) -> list[Reject] | None:
    """The reject of a one-record batch whose write failed."""
    if chunk.size != 1:
        return None
    record = chunk.records[0]
    trace = "".join(traceback.format_exception(error))
    return [Reject(record.line, record.values, None, f"{type(error).__name__}: {error}", trace)]


def unique_field_sets(model: type[Any]) -> list[tuple[str, ...]]:
    """Field-name tuples covered by a unique constraint (pk, unique=True, Meta)."""
    from django.db.models import UniqueConstraint

    meta = model._meta
    sets: list[tuple[str, ...]] = [(meta.pk.name,)]
    sets += [(f.name,) for f in meta.concrete_fields if f.unique and not f.primary_key]
    sets += [tuple(names) for names in meta.unique_together]
    for constraint in meta.constraints:
        if (
            isinstance(constraint, UniqueConstraint)
            and constraint.fields
            and constraint.condition is None
            and not getattr(constraint, "expressions", ())
        ):
            sets.append(tuple(constraint.fields))
    return sets


def _sort_key(values: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple((v is None, v) for v in values)


@dataclass(frozen=True)
class LoadJob:
    """A create or upsert of input records into one model.

    Attributes:
        operation: ``"create"`` or ``"upsert"``.
        model: ``app_label.ModelName``.
        database: alias to write to.
        columns: how input keys map to fields.
        unique: upsert: the fields identifying a row (a unique constraint).
        update: upsert: the fields overwritten on existing rows.
        ignore_conflicts: create: skip rows that collide with a unique key.
        sort: fields to sort each chunk by, so workers take locks in one order.
        insert_pk: whether the primary key column is written: always, unless the
            database fills it (an auto-increment key the input does not give);
            a key with a Python default gets it per record, as ``Model()`` does.
        writer: ``values``, ``copy`` or ``django`` (see :mod:`bulkpar.writers`).
        validate: run ``full_clean()`` without the unique checks on every record
            (see :func:`bulkpar.inputs.conversion.validate_instance`); an upsert checks
            the fields the record gives.
    """

    operation: str
    model: str
    database: str
    columns: ColumnPlan
    unique: tuple[str, ...] = ()
    update: tuple[str, ...] = ()
    ignore_conflicts: bool = False
    sort: tuple[str, ...] = ()
    insert_pk: bool = False
    writer: str = "values"
    validate: bool = False

    @property
    def method(self) -> str:
        """The writer used (see :mod:`bulkpar.writers`)."""
        return self.writer

    def model_class(self) -> Any:
        from django.apps import apps

        return apps.get_model(self.model)

    def chunk_rows(self, chunk: RowBatch) -> int:
        return chunk.size

    def split(self, chunk: RowBatch) -> list[RowBatch] | None:
        return split_batch(chunk)

    def reject(self, chunk: RowBatch, error: BaseException) -> list[Reject] | None:
        return reject_batch(chunk, error)

    def execute(
        self, chunk: RowBatch, phases: dict[str, float], atomic: Callable[[], Any]
    ) -> ChunkCounts:
        """Convert the chunk's records, then write them in one transaction."""
        from django.db import connections

        from bulkpar.writers import make_writer

        model = self.model_class()
        meta = model._meta
        start = time.perf_counter()
        objs, rejects = self._convert(model, chunk.records)
        duplicates = 0
        if self.unique:
            by_key: dict[tuple[Any, ...], Any] = {}
            key_fields = [meta.get_field(n).attname for n in self.unique]
            for obj in objs:  # last one wins, and takes the place of the last one
                key = tuple(getattr(obj, a) for a in key_fields)
                by_key.pop(key, None)
                by_key[key] = obj
            duplicates = len(objs) - len(by_key)
            # sorting rows greatly reduces the chance of deadlock between workers; the
            # sort is stable and by the key as the database compares it, so keys that
            # differ here but name one row (MariaDB: 'a', 'A ') stay in input order
            vendor = connections[self.database].vendor
            objs = [
                by_key[k]
                for k in sorted(
                    by_key, key=lambda k: _sort_key(tuple(collation_key(v, vendor) for v in k))
                )
            ]
        elif self.sort:
            attnames = [meta.get_field(n).attname for n in self.sort]
            objs.sort(key=lambda o: _sort_key(tuple(getattr(o, a) for a in attnames)))
        converted = time.perf_counter()
        phases["convert"] = converted - start

        fields = [
            f for f in meta.concrete_fields
            if (self.insert_pk or f is not meta.pk) and not getattr(f, "generated", False)
        ]  # fmt: skip
        writer = make_writer(self.writer, model, connections[self.database])
        with atomic():
            counts = writer.insert(
                objs,
                fields,
                unique=[meta.get_field(n) for n in self.unique],
                update=[meta.get_field(n) for n in self.update] + self._auto_now(meta),
                ignore_conflicts=self.ignore_conflicts,
            )
        phases["write"] = time.perf_counter() - converted
        return ChunkCounts(
            rows=chunk.size,
            created=counts.created,
            updated=counts.updated,
            unchanged=counts.unchanged,
            skipped=counts.skipped,
            rejected=len(rejects),
            duplicates=duplicates,
            rejects=tuple(rejects),
            inexact=counts.inexact,
        )

    def _auto_now(self, meta: Any) -> list[Any]:
        if not self.update:
            return []
        return [
            f for f in meta.concrete_fields
            if getattr(f, "auto_now", False) and f.name not in self.update
        ]  # fmt: skip

    def _convert(self, model: Any, records: Iterable[Record]) -> tuple[list[Any], list[Reject]]:
        from django.db import connections

        meta = model._meta
        converter = RowConverter(
            model, self.columns, require=True, connection=connections[self.database]
        )
        build = instance_builder(model)
        auto = [
            f for f in meta.concrete_fields
            if getattr(f, "auto_now", False) or getattr(f, "auto_now_add", False)
        ]  # fmt: skip
        # an upsert overwrites these on existing rows: every record must give them
        needed = [meta.get_field(n) for n in (*self.unique, *self.update)]
        objs: list[Any] = []
        rejects: list[Reject] = []
        for record in records:
            try:
                values = converter.convert(record.values)
                for field in needed:
                    if field.attname not in values:
                        raise RowRejected(
                            field.name, f"missing field {field.name!r} that upsert writes"
                        )
                obj = build(values)
                if self.validate:
                    # an upsert writes only some fields of existing rows: check those it gives
                    exclude = None
                    if self.unique:
                        exclude = [f.name for f in meta.concrete_fields if f.attname not in values]
                    validate_instance(obj, exclude=exclude, database=self.database)
            except RowRejected as exc:
                rejects.append(Reject(record.line, record.values, exc.field, exc.message))
                continue
            except (TypeError, ValueError) as exc:
                rejects.append(Reject(record.line, record.values, None, str(exc)))
                continue
            for field in auto:
                field.pre_save(obj, add=True)
            objs.append(obj)
        return objs, rejects


def check_loadable(model: type[Any]) -> None:
    """Refuse models a multi-row INSERT cannot write correctly.

    Raises:
        UsageError: for multi-table inheritance children (their parents'
            tables would need rows too) and proxy or unmanaged-less cases.
    """
    meta = model._meta
    if meta.parents:
        raise UsageError(
            f"{meta.label} uses multi-table inheritance; create/upsert write one table "
            "per statement and cannot fill its parent tables: use 'bulkpar save' instead"
        )
    if meta.proxy:
        raise UsageError(
            f"{meta.label} is a proxy model; load into {meta.concrete_model._meta.label}"
        )
