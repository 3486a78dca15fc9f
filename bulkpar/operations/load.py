"""``create`` and ``upsert``: load input records into a model, chunk by chunk.

The parent reads the input as a stream and cuts it into :class:`RowBatch`
chunks of plain values (input position order); workers convert and validate
each record with the model's fields, reject what cannot be converted, and
write the rest in one transaction with a native multi-row INSERT
(:mod:`bulkpar.writers.insert`) that reports created / updated / unchanged /
skipped counts.
"""

from __future__ import annotations

import enum
import functools
import itertools
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from bulkpar.bootstrap import check_database, model_label
from bulkpar.engine.checkpoint import Checkpoint, records_digest
from bulkpar.engine.contracts import ChunkMark, RunOptions
from bulkpar.engine.runner import Plan
from bulkpar.errors import InputError, UsageError
from bulkpar.inputs.arrow import ParquetSource
from bulkpar.inputs.conversion import (
    ColumnPlan,
    OtherModel,
    Reject,
    RowConverter,
    RowRejected,
    instance_builder,
    validate_instance,
)
from bulkpar.inputs.partitions import KeyPartitioner, collation_key, partition_count
from bulkpar.inputs.sources import FileSource, Record, Source
from bulkpar.operations.options import CheckedOperation, RunSpec, target
from bulkpar.operations.references import field_names, is_model_class, names, writer
from bulkpar.report import ChunkCounts


class LoadMode(enum.Enum):
    """What a load does with a record whose unique key exists: checked once, from the options.

    The value is the writers' name for the operation (see :mod:`bulkpar.writers`).
    """

    CREATE = "create"  # a conflict fails the chunk
    CREATE_IGNORE = "create-ignore"  # a conflict skips the record, counted
    UPSERT = "upsert"  # a conflict updates the existing row

    @classmethod
    def of(cls, operation: str, ignore_conflicts: bool = False) -> LoadMode:
        """The mode of ``operation`` (``create`` or ``upsert``) with ``ignore_conflicts``.

        Raises:
            UsageError: an unknown operation, or ``ignore_conflicts`` with upsert.
        """
        if operation == "upsert":
            if ignore_conflicts:
                raise UsageError("an upsert updates conflicting rows: it takes no ignore_conflicts")
            return cls.UPSERT
        if operation != "create":
            raise UsageError(f"unknown load operation {operation!r}: use create or upsert")
        return cls.CREATE_IGNORE if ignore_conflicts else cls.CREATE

    @property
    def operation(self) -> str:
        """``create`` or ``upsert``: the command's name."""
        return "upsert" if self is LoadMode.UPSERT else "create"


@dataclass(frozen=True)
class LoadSpec:
    """The options of a create or upsert, as the API and the CLI take them.

    Attributes:
        model: the model class to load into.
        rows: a path (CSV, JSON Lines, JSON, Parquet), ``"-"`` (stdin), a
            :class:`~bulkpar.inputs.sources.Source`, a ``pyarrow.Table`` or
            ``RecordBatchReader``, a pandas DataFrame, or an iterable of dicts.
        mode: create, create ignoring conflicts, or upsert.
        unique: upsert: the fields identifying a row (``"a,b"`` or an iterable).
        update: upsert: the fields overwritten on existing rows (None: every
            supplied field but the unique ones).
        format, delimiter: how to read a file (default: from its name; ``,``).
        map: input column → field renames.
        const: field → value set on every record.
        ignore_unknown: drop input columns that match no field.
        full_clean: run the fields' validators and ``clean()`` on every record.
        method: the writer (see :mod:`bulkpar.writers`).
        run: the options every operation shares.
    """

    model: Any
    rows: Any
    mode: LoadMode = LoadMode.CREATE
    unique: Iterable[str] | str | None = None
    update: Iterable[str] | str | None = None
    format: str | None = None
    delimiter: str | None = None
    map: Mapping[str, str] | None = None
    const: Mapping[str, Any] | None = None
    ignore_unknown: bool = False
    full_clean: bool = False
    method: str = "auto"
    run: RunSpec = field(default_factory=RunSpec)

    def validate(self) -> CheckedOperation:
        """Check every option once, read the input's first record, build the job.

        The upsert key policy lives here: a unique constraint must cover
        exactly ``unique``; ``update`` names neither a unique field nor the
        primary key, nor a field the input does not supply.

        Raises:
            bulkpar.errors.UsageError: naming the option and the fix.
            bulkpar.errors.InputError: the input cannot be read or is empty.
        """
        from django.db import router

        from bulkpar.inputs.conversion import is_database_filled, required_fields

        model = self.model
        if not is_model_class(model):
            raise UsageError(f"expected a model class, got {model!r}")
        check_loadable(model)
        options = self.run.validate()
        alias = self.run.database or router.db_for_write(model)
        meta = model._meta
        source, first, records = read_input(self.rows, self.format, self.delimiter)
        columns = input_columns(model, source, first, self.map, self.const, self.ignore_unknown)
        supplied = set(columns.supplied)
        if first is not None and columns.text_cells:  # a CSV header holds for every record
            absent = [f.name for f in required_fields(model) if f.name not in supplied]
            if absent:
                raise UsageError(
                    f"the input {source.name} has no column for required field(s) "
                    f"{', '.join(absent)} of {meta.label} (NOT NULL, no default); "
                    "add the column or give --const FIELD=VALUE"
                )
        unique = field_names(model, names(self.unique), "--unique")
        update: tuple[str, ...] = ()
        sort: tuple[str, ...] = ()
        if self.mode is LoadMode.UPSERT:
            update = self._upsert_keys(model, unique, columns, source, first is not None)
        else:
            sort = next((s for s in unique_field_sets(model) if set(s) <= supplied), ())
        check_database(alias, model)
        job = LoadJob(
            operation=self.mode.operation,
            model=model_label(model),
            database=alias,
            columns=columns,
            unique=unique,
            update=update,
            ignore_conflicts=self.mode is LoadMode.CREATE_IGNORE,
            sort=sort,
            # a key with a Python default is filled per record, as Model() does
            insert_pk=meta.pk.name in supplied or not is_database_filled(meta.pk),
            writer=writer(self.method, alias, self.mode.value),
            validate=self.full_clean,
        )
        # a key meets itself in input order: upserts by their unique key, creates by the key
        # their chunks are sorted by (with ignore_conflicts the first record wins)
        partition = partitioner(model, columns, unique or sort, options, alias)
        rows = self.rows
        sized = len(rows) if hasattr(rows, "__len__") and not isinstance(rows, str) else None
        return CheckedOperation(
            job=job,
            options=options,
            target=target(options, alias),
            fingerprint=input_fingerprint(job, source, self.run.chunk, partition),
            planner=functools.partial(
                plan_input,
                itertools.chain([first] if first is not None else [], records),
                self.run.chunk,
                source,
                partition,
                source.total_bytes if source.total_bytes is not None else sized,
            ),
            checkpoint=self.run.checkpoint,
            input_name=source.name,
        )

    def _upsert_keys(
        self, model: Any, unique: tuple[str, ...], columns: ColumnPlan, source: Source, read: bool
    ) -> tuple[str, ...]:
        """Check the upsert's key policy; return the fields it overwrites."""
        meta = model._meta
        if not unique:
            raise UsageError("upsert needs --unique: the fields that identify a row")
        if not any(set(s) == set(unique) for s in unique_field_sets(model)):
            choices = " or ".join(f"--unique {','.join(s)}" for s in unique_field_sets(model))
            raise UsageError(
                f"no unique constraint of {meta.label} covers exactly "
                f"({', '.join(unique)}); add unique=True or a UniqueConstraint "
                f"(and migrate), or use {choices}"
            )
        supplied = columns.supplied
        missing = [n for n in unique if read and n not in supplied]
        if missing:
            raise UsageError(
                f"the input {source.name} has no column for unique field(s) "
                f"{', '.join(missing)}; every record must give the key"
            )
        if self.update is None:
            return tuple(n for n in supplied if n not in unique and n != meta.pk.name)
        update = field_names(model, names(self.update), "--update")
        overlap = set(update) & set(unique)
        if overlap:
            raise UsageError(
                f"--update names unique field(s) {', '.join(sorted(overlap))}; "
                "a row's key cannot be overwritten"
            )
        if meta.pk.name in update:
            raise UsageError(
                f"--update names the primary key {meta.pk.name!r}; an upsert never "
                "overwrites the key of an existing row (leave it out of --update)"
            )
        absent = [n for n in update if read and n not in supplied]
        if absent:
            raise UsageError(
                f"--update names {', '.join(absent)}, which the input {source.name} does "
                f"not supply (it gives {', '.join(supplied) or 'no fields'}); "
                "add the column, --const it, or drop it from --update"
            )
        return update


def read_input(
    rows: Any, format: str | None, delimiter: str | None
) -> tuple[Source, Record | None, Iterator[Record]]:
    """The input's source, its first record (None: no records) and the rest.

    Raises:
        InputError: a file with no records: almost always a mistake upstream.
    """
    from bulkpar.inputs.sources import as_source

    source = as_source(rows, format, delimiter)
    records = iter(source)
    first = next(records, None)
    if first is None and isinstance(source, FileSource | ParquetSource):
        raise InputError(
            f"input {source.name} holds no records (an empty file, or a CSV header "
            "alone); nothing to load: check the export that produced it"
        )
    return source, first, records


def input_columns(
    model: Any,
    source: Source,
    first: Record | None,
    rename: Mapping[str, str] | None,
    consts: Mapping[str, Any] | None,
    ignore_unknown: bool,
) -> ColumnPlan:
    """How the input's keys (those of its first record) map to the model's fields."""
    from bulkpar.inputs.conversion import plan_columns

    text_cells = source.format == "csv"
    if first is None:
        return ColumnPlan(text_cells=text_cells)
    return plan_columns(
        model, first.values.keys(), rename=rename, consts=consts,
        ignore_unknown=ignore_unknown, text_cells=text_cells, source=source.name,
    )  # fmt: skip


def partitioner(
    model: Any, columns: ColumnPlan, key: tuple[str, ...], options: RunOptions, alias: str
) -> KeyPartitioner | None:
    """Routes records by ``key`` so each key's records run in input order (None: no key)."""
    from django.db import connections

    if not key:
        return None
    from bulkpar.engine.executors import backend

    workers = backend(options.executor).slots(options.workers)
    return KeyPartitioner(
        model, columns, key, partition_count(workers), vendor=connections[alias].vendor
    )


def input_fingerprint(
    job: Any, source: Source, chunk: int, partition: KeyPartitioner | None
) -> dict[str, Any]:
    """What identifies a load (or an input save) for a checkpoint: the partition count
    too, since it decides what each chunk holds."""
    description = {
        "operation": job.operation,
        "model": job.model,
        "database": job.database,
        "input": source.identity(),
        "columns": repr(job.columns),
        "unique": list(getattr(job, "unique", ())),
        "update": list(getattr(job, "update", ())),
        "match": list(getattr(job, "match", ())),
        "ignore_conflicts": getattr(job, "ignore_conflicts", False),
        "chunk": chunk,
    }
    if partition is not None:
        description["partitions"] = partition.partitions
    return description


def plan_input(
    records: Iterable[Record],
    chunk: int,
    source: Source,
    partition: KeyPartitioner | None,
    total: int | None,
    checkpoint: Checkpoint | None,
) -> Plan:
    """The batches of an input, cut lazily; progress in bytes for a file."""
    return Plan(
        chunks=plan_batches(records, chunk, source.bytes_read, partition=partition),
        total=total,
        unit="bytes" if source.total_bytes is not None else "rows",
        counts_input=True,
        checkpoint=checkpoint,
        chunk=chunk,
    )


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
        objs, rejects, others = self._convert(model, chunk.records)
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
            skipped=counts.skipped + others,
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

    def _convert(
        self, model: Any, records: Iterable[Record]
    ) -> tuple[list[Any], list[Reject], int]:
        """The records' instances, the rejected records, and how many are other models' rows."""
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
        others = 0
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
            except OtherModel:
                others += 1  # another model's row in a delete archive: not this load's
                continue
            except RowRejected as exc:
                rejects.append(Reject(record.line, record.values, exc.field, exc.message))
                continue
            except (TypeError, ValueError) as exc:
                rejects.append(Reject(record.line, record.values, None, str(exc)))
                continue
            for field in auto:
                field.pre_save(obj, add=True)
            objs.append(obj)
        return objs, rejects, others


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
