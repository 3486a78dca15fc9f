"""``save``: per-object ``save()`` in parallel, so signals and custom save logic run.

A worker receives a chunk — a batch of input records or a primary-key range —
and calls ``save()`` on each of its objects: ``pre_save``/``post_save`` fire
and ``save()`` overrides run exactly once per committed object. The speed
comes from chunked tasks (not one task per object) and, by default, one
transaction per chunk instead of one commit per object.

Failures are per object. With ``transaction="object"`` every save commits on
its own and a failing object is rejected while the rest go on. With
``transaction="chunk"`` a failing chunk is bisected: its halves are retried
until the failing objects are isolated, the good ones commit and the bad ones
are rejected. Objects are rebuilt for every attempt, so a rolled-back attempt
leaves no trace (no stale primary keys, no half-saved state) in the next one.
"""

from __future__ import annotations

import functools
import itertools
import pickle
import time
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bulkpar.engine.transient import is_transient
from bulkpar.inputs.conversion import (
    ColumnPlan,
    Reject,
    RowConverter,
    RowRejected,
    validate_instance,
)
from bulkpar.operations.load import (
    RowBatch,
    input_columns,
    input_fingerprint,
    partitioner,
    plan_input,
    read_input,
    reject_batch,
    split_batch,
    unique_field_sets,
)
from bulkpar.operations.options import CheckedOperation, RunSpec, target
from bulkpar.operations.references import (
    as_queryset,
    field_names,
    func_ref,
    is_model_class,
    is_queryset,
    names,
)
from bulkpar.operations.update import (
    PkRange,
    plan_selection,
    reject_pk_range,
    selection_description,
    split_pk_range,
)
from bulkpar.report import ChunkCounts

TRANSACTION_MODES = ("chunk", "object")
DRY_RUN_NOTE = (
    "dry run: save() overrides and signal receivers ran; whatever they did outside "
    "this database (e-mails, API calls, caches) was not rolled back."
)


@dataclass(frozen=True)
class SaveSpec:
    """The options of a save, as :func:`bulkpar.save` and ``bulkpar save`` take them.

    Two modes: with ``rows`` each record becomes (or, with ``match``, updates)
    an instance of the model ``source``; without, every object ``source``
    selects is loaded, passed to ``func`` and saved.

    Attributes:
        source: a model class, or (without rows) a QuerySet.
        rows: a path, ``"-"``, a Source, an Arrow table, a DataFrame or an iterable of
            dicts, as for a load (None: queryset mode).
        func: queryset mode: applied to each object before its save.
        match: input mode: the fields that find the existing object.
        fields: queryset mode: ``save(update_fields=…)``.
        setup: run once in every worker after ``django.setup()``.
        transaction: ``chunk`` or ``object``.
        format, delimiter, map, const, ignore_unknown: input mode, as for a load.
        full_clean: ``full_clean()`` (no unique checks) before every save.
        run: the options every operation shares.
    """

    source: Any
    rows: Any = None
    func: Callable[[Any], Any] | str | None = None
    match: Iterable[str] | str | None = None
    fields: Iterable[str] | str | None = None
    setup: Callable[[], Any] | str | None = None
    transaction: str = "chunk"
    format: str | None = None
    delimiter: str | None = None
    map: Mapping[str, str] | None = None
    const: Mapping[str, Any] | None = None
    ignore_unknown: bool = False
    full_clean: bool = False
    run: RunSpec = field(default_factory=lambda: RunSpec(chunk=500))

    def validate(self) -> CheckedOperation:
        """Check every option once and build the job, before any write.

        Raises:
            bulkpar.errors.UsageError: an option of the other mode (``--match``
                without rows, ``--func`` with them …), a ``--match`` no unique
                constraint covers, an unknown field or function, a run option.
            bulkpar.errors.InputError: the input cannot be read or is empty.
        """
        from django.db import router

        from bulkpar.bootstrap import check_database, model_label
        from bulkpar.errors import UsageError

        if self.transaction not in TRANSACTION_MODES:
            raise UsageError(f"transaction must be 'chunk' or 'object' (got {self.transaction!r})")
        fields = names(self.fields, "--fields")
        if self.rows is not None:
            if is_queryset(self.source) or self.func is not None or fields:
                raise UsageError(
                    "--input cannot be combined with --filter/--exclude/--func/--fields: "
                    "rows bring their own objects (pass a model class and no func or fields)"
                )
            if not is_model_class(self.source):
                raise UsageError("with rows, the first argument must be a model class")
        else:
            if self.match:
                raise UsageError("--match goes with --input (rows), not with a queryset")
            if self.delimiter is not None:
                raise UsageError("--delimiter goes with --input (rows), not with a queryset")
        options = self.run.validate()
        chunk = self.run.chunk
        setup = func_ref(self.setup, options, "--setup") if self.setup is not None else None

        if self.rows is not None:
            model = self.source
            alias = self.run.database or router.db_for_write(model)
            source, first, records = read_input(self.rows, self.format, self.delimiter)
            columns = input_columns(model, source, first, self.map, self.const, self.ignore_unknown)
            match = field_names(model, names(self.match), "--match")
            if match and not any(set(s) == set(match) for s in unique_field_sets(model)):
                raise UsageError(
                    f"--match {','.join(match)} is not covered by a unique constraint of "
                    f"{model._meta.label}, so it may find several objects; use one of: "
                    + " or ".join(",".join(s) for s in unique_field_sets(model))
                )
            check_database(alias, model)
            job = SaveJob(
                model=model_label(model), database=alias, columns=columns, match=match,
                transaction=self.transaction, validate=self.full_clean,
            )  # fmt: skip
            partition = partitioner(model, columns, match, options, alias)
            fingerprint = input_fingerprint(job, source, chunk, partition)
            stream = itertools.chain([first] if first is not None else [], records)
            planner = functools.partial(
                plan_input, stream, chunk, source, partition, source.total_bytes
            )
            input_name = source.name
        else:
            queryset = as_queryset(self.source)
            model = queryset.model
            alias = self.run.database or queryset._db or router.db_for_write(model)
            update_fields = field_names(model, fields, "--fields")
            job = SaveJob(
                model=model_label(model),
                database=alias,
                query=pickle.dumps(queryset.order_by().query),
                func=func_ref(self.func, options) if self.func is not None else None,
                fields=update_fields,
                transaction=self.transaction,
                validate=self.full_clean,
            )
            check_database(alias, model)  # before counting the rows
            selection = job.queryset()
            # the keys an update's fingerprint has ("set", "touch") stay, so that
            # journals written before save had a fingerprint of its own still resume
            fingerprint = {
                "operation": "save", "model": job.model, "database": alias,
                "selection": selection_description(selection), "set": [],
                "func": repr(job.func), "fields": list(update_fields), "touch": True,
                "chunk": chunk, "transaction": self.transaction,
            }  # fmt: skip
            planner = functools.partial(plan_selection, selection, chunk)
            input_name = "the input"
        return CheckedOperation(
            job=job,
            options=options,
            target=target(options, alias, setup),
            fingerprint=fingerprint,
            planner=planner,
            checkpoint=self.run.checkpoint,
            input_name=input_name,
            notes=(DRY_RUN_NOTE,) if self.run.dry_run else (),
        )


#: A save's chunk: a batch of input records, or a primary-key range of a queryset.
SaveChunk = RowBatch | PkRange


@dataclass
class _Tally:
    created: int = 0
    updated: int = 0
    skipped: int = 0
    rejects: list[Reject] = field(default_factory=list)


@dataclass(frozen=True)
class SaveJob:
    """Save objects one by one, from input records or from a queryset.

    Attributes:
        model: ``app_label.ModelName``.
        database: alias to write to.
        columns: input mode: how input keys map to fields.
        match: input mode: fields that find the existing object to update
            (update_or_create semantics); empty: every record is a new object.
        query: queryset mode: the pickled ``Query`` of the selection.
        func: queryset mode: ``module:callable`` applied to each object
            before it is saved (returning False skips the object).
        fields: ``save(update_fields=…)`` for queryset mode.
        transaction: ``"chunk"`` or ``"object"``.
        validate: ``full_clean()`` without the unique checks before each save
            (:func:`bulkpar.inputs.conversion.validate_instance`); an invalid object
            is rejected and not saved.
    """

    model: str
    database: str
    columns: ColumnPlan | None = None
    match: tuple[str, ...] = ()
    query: bytes | None = None
    func: Any = None
    fields: tuple[str, ...] = ()
    transaction: str = "chunk"
    operation: str = "save"
    validate: bool = False

    @property
    def method(self) -> str:
        return f"save() per object, one transaction per {self.transaction}"

    def model_class(self) -> Any:
        from django.apps import apps

        return apps.get_model(self.model)

    # -- the parent's side (queryset mode) --------------------------------

    def queryset(self) -> Any:
        model = self.model_class()
        queryset = model._base_manager.db_manager(self.database).all()
        queryset.query = pickle.loads(self.query or b"")
        return queryset

    def chunk_rows(self, chunk: SaveChunk) -> int:
        if isinstance(chunk, RowBatch):
            return chunk.size
        return len(self._pks(chunk))

    def split(self, chunk: SaveChunk) -> list[SaveChunk] | None:
        parts: Sequence[SaveChunk] | None = (
            split_batch(chunk)
            if isinstance(chunk, RowBatch)
            else split_pk_range(chunk, self._pks(chunk))
        )
        return None if parts is None else list(parts)

    def reject(self, chunk: SaveChunk, error: BaseException) -> list[Reject] | None:
        if isinstance(chunk, RowBatch):
            return reject_batch(chunk, error)
        return reject_pk_range(self._pks(chunk), error)

    def _pks(self, chunk: PkRange) -> list[Any]:
        queryset = self.queryset().filter(pk__lte=chunk.hi)
        if chunk.lo is not None:
            queryset = queryset.filter(pk__gt=chunk.lo)
        return list(queryset.order_by("pk").values_list("pk", flat=True))

    # -- the worker's side ---------------------------------------------------

    def execute(
        self, chunk: SaveChunk, phases: dict[str, float], atomic: Callable[[], Any]
    ) -> ChunkCounts:
        """Save every object of the chunk; failures become rejects, not a failed chunk."""
        start = time.perf_counter()
        tally = _Tally()
        if isinstance(chunk, RowBatch):
            items, builder = self._input_items(chunk.records, tally)
            rows = chunk.size
        else:
            items, builder = self._pks(chunk), self._queryset_builder()
            rows = len(items)
        if self.transaction == "object":
            for item in items:
                self._attempt([item], builder, atomic, tally)
        else:
            self._attempt(items, builder, atomic, tally)
        phases["save"] = time.perf_counter() - start
        rejects = tally.rejects
        return ChunkCounts(
            rows=rows,
            matched=rows,
            created=tally.created,
            updated=tally.updated,
            written=tally.created + tally.updated,
            skipped=tally.skipped,
            rejected=len(rejects),
            rejects=tuple(rejects),
        )

    def _attempt(
        self,
        items: Sequence[Any],
        builder: Callable[[Sequence[Any]], list[tuple[Any, Any]]],
        atomic: Callable[[], Any],
        tally: _Tally,
    ) -> None:
        """Save ``items`` in one transaction; on failure, bisect down to the bad ones."""
        if not items:
            return
        created = updated = skipped = 0
        invalid: list[Reject] = []  # kept only if this attempt commits
        try:
            with atomic():
                for item, obj in builder(items):
                    if obj is None:
                        skipped += 1
                        continue
                    if self.validate:
                        try:
                            validate_instance(obj, database=self.database)
                        except RowRejected as exc:
                            invalid.append(self._invalid(item, exc))
                            continue
                    adding = obj._state.adding
                    if self.fields and not adding:
                        obj.save(using=self.database, update_fields=self.fields)
                    else:
                        obj.save(using=self.database)
                    if adding:
                        created += 1
                    else:
                        updated += 1
        except Exception as exc:
            if is_transient(exc):
                raise  # the runner retries the whole chunk
            if len(items) == 1:
                self._reject(items[0], exc, tally)
                return
            middle = len(items) // 2
            self._attempt(items[:middle], builder, atomic, tally)
            self._attempt(items[middle:], builder, atomic, tally)
            return
        tally.created += created
        tally.updated += updated
        tally.skipped += skipped
        tally.rejects.extend(invalid)

    @staticmethod
    def _invalid(item: Any, exc: RowRejected) -> Reject:
        if isinstance(item, tuple):  # (record, converted values)
            record = item[0]
            return Reject(record.line, record.values, exc.field, exc.message)
        return Reject(None, {"pk": item}, exc.field, exc.message)

    def _reject(self, item: Any, exc: BaseException, tally: _Tally) -> None:
        cause = getattr(exc, "error", exc)  # a RowError carries the transform's exception
        error = f"{type(cause).__name__}: {cause}"
        trace = "".join(traceback.format_exception(cause))
        if isinstance(item, tuple):  # (record, converted values)
            record = item[0]
            tally.rejects.append(Reject(record.line, record.values, None, error, trace))
        else:
            tally.rejects.append(Reject(None, {"pk": item}, None, error, trace))

    def _input_items(
        self, records: Sequence[Any], tally: _Tally
    ) -> tuple[list[Any], Callable[[Sequence[Any]], list[tuple[Any, Any]]]]:
        """Convert records once (rejecting bad ones) and return a builder of instances.

        Existing objects (found by ``match``) are loaded in one query per
        attempt and updated; other records become new objects.
        """
        from django.db import connections
        from django.db.models import Q

        model = self.model_class()
        assert self.columns is not None
        converter = RowConverter(
            model, self.columns, require=not self.match, connection=connections[self.database]
        )
        items: list[tuple[Any, dict[str, Any]]] = []
        for record in records:
            try:
                items.append((record, converter.convert(record.values)))
            except RowRejected as exc:
                tally.rejects.append(Reject(record.line, record.values, exc.field, exc.message))
        match = [model._meta.get_field(name) for name in self.match]
        manager = model._base_manager.db_manager(self.database)

        def build(batch: Sequence[tuple[Any, dict[str, Any]]]) -> list[tuple[Any, Any]]:
            existing: dict[tuple[Any, ...], Any] = {}
            if match:
                condition = Q()
                for _, values in batch:
                    condition |= Q(**{f.attname: values.get(f.attname) for f in match})
                for obj in manager.filter(condition):
                    existing[tuple(getattr(obj, f.attname) for f in match)] = obj
            built = []
            for item in batch:
                values = item[1]
                obj = existing.get(tuple(values.get(f.attname) for f in match)) if match else None
                if obj is None:
                    obj = model(**values)
                else:
                    for attname, value in values.items():
                        setattr(obj, attname, value)
                built.append((item, obj))
            return built

        return items, build

    def _queryset_builder(self) -> Callable[[Sequence[Any]], list[tuple[Any, Any]]]:
        """Load objects by pk and apply the function; None marks a skipped object."""
        from bulkpar.bootstrap import import_callable
        from bulkpar.errors import RowError

        func = self.func
        if func is None:  # save every object as it is

            def func(obj: Any) -> None:
                return None

        elif not callable(func):
            func = import_callable(func)
        queryset = self.queryset()

        def build(pks: Sequence[Any]) -> list[tuple[Any, Any]]:
            if not pks:
                return []
            # pks are sorted as the database sorts them: the rows are read by the range
            # of their ends, not by a long IN list, which PostgreSQL reads with a full
            # scan when the table has no statistics yet (a table loaded a minute ago)
            wanted = set(pks)
            rows = queryset.filter(pk__gte=pks[0], pk__lte=pks[-1])
            objs = {obj.pk: obj for obj in rows if obj.pk in wanted}
            built = []
            for pk in pks:
                obj = objs.get(pk)
                if obj is None:
                    continue  # deleted since the chunk was planned
                try:
                    outcome = func(obj)
                except Exception as exc:
                    raise RowError(pk, exc) from exc
                built.append((pk, None if outcome is False else obj))
            return built

        return build
