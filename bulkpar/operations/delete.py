"""``delete``: remove the rows of a selection, chunk by chunk over primary-key ranges.

Chunks are the keyset pk ranges of ``update`` (:func:`plan_pk_ranges`); a
worker deletes its range through Django's own deletion collector, so
``on_delete`` rules (CASCADE, SET_NULL, PROTECT, RESTRICT) and
``pre_delete``/``post_delete`` signals behave exactly as ``queryset.delete()``
does on that range, and where the collector finds a fast delete safe (no
signals, no cascades) it is one ``DELETE … WHERE``.

With an archive, every row the chunk deletes (cascaded rows too) is written
to a part file, and fsynced, inside the chunk's transaction before its
``DELETE`` statements run; a chunk that rolls back removes its part. The
parent then appends the parts of committed chunks to the archive
(:func:`collect_parts`): a chunk is deleted and archived, or neither.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import datetime
import decimal
import functools
import gzip
import hashlib
import json
import os
import pickle
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from bulkpar.bootstrap import check_database, model_label
from bulkpar.errors import DeleteRefusedError, UsageError
from bulkpar.inputs.conversion import MODEL_KEY, Reject
from bulkpar.operations.options import CheckedOperation, RunSpec, target
from bulkpar.operations.references import as_queryset
from bulkpar.operations.update import PkRange, UpdateJob, plan_selection
from bulkpar.report import ChunkCounts


@dataclass(frozen=True)
class DeleteSpec:
    """The options of a delete, as :func:`bulkpar.delete` and ``bulkpar delete`` take them.

    Attributes:
        queryset: a model class (all rows) or a QuerySet (its filters select the rows).
        archive: JSON Lines file (``.gz``: gzip) receiving every deleted row.
        run: the options every operation shares (``on_error`` abort or skip).
    """

    queryset: Any
    archive: str | None = None
    run: RunSpec = dataclasses.field(default_factory=RunSpec)

    def validate(self) -> CheckedOperation:
        """Check every option once and build the job, before any delete.

        Raises:
            bulkpar.errors.UsageError: ``on_error="bisect"``, an archive that
                cannot be written, an invalid run option.
            bulkpar.errors.BulkparError: the database or the table is missing.
        """
        from django.db import router

        queryset = as_queryset(self.queryset)
        model = queryset.model
        if self.run.on_error == "bisect":
            raise UsageError(
                "delete takes --on-error 'abort' or 'skip': a chunk is deleted whole or not at all"
            )
        options = self.run.validate()
        alias = self.run.database or queryset._db or router.db_for_write(model)
        check_database(alias, model)
        parts = None
        if self.archive is not None and not self.run.dry_run:
            parts = f"{self.archive}.parts"
            try:
                with open(self.archive, "ab"):
                    pass
                os.makedirs(parts, exist_ok=True)
            except OSError as exc:
                raise UsageError(
                    f"cannot write the archive {self.archive!r}: {exc.strerror or exc}"
                ) from None
        job = DeleteJob(
            model=model_label(model),
            database=alias,
            query=pickle.dumps(queryset.order_by().query),
            chunk=self.run.chunk,
            parts=parts,
        )
        return CheckedOperation(
            job=job,
            options=options,
            target=target(options, alias),
            fingerprint=job.describe(),
            planner=functools.partial(plan_selection, job.queryset(), job.chunk),
            checkpoint=self.run.checkpoint,
            session=functools.partial(_archiving, parts, self.archive, model, alias),
        )


@contextlib.contextmanager
def _archiving(parts: str | None, archive: str | None, model: Any, database: str) -> Iterator[None]:
    """Append committed chunks' parts to the archive: a stopped run's first, this run's after."""
    if parts is None or archive is None:
        yield
        return
    collect_parts(parts, archive, model, database)
    try:
        yield
    finally:
        collect_parts(parts, archive, model, database)
        with contextlib.suppress(OSError):
            os.rmdir(parts)


@dataclass(frozen=True)
class DeleteJob:
    """A delete of the rows selected by a queryset, with everything they cascade to.

    Attributes:
        model: ``app_label.ModelName``.
        database: alias to read and delete from.
        query: the pickled ``Query`` of the selection.
        chunk: rows of ``model`` per chunk (and per transaction); cascaded
            rows come on top.
        parts: folder for the chunks' archive parts (None: no archive).
    """

    model: str
    database: str
    query: bytes
    chunk: int
    parts: str | None = None
    operation: str = "delete"
    method: str = "collector"

    @property
    def _selection(self) -> UpdateJob:
        # the pk-range machinery of update, over the same pickled selection
        return UpdateJob(
            model=self.model,
            database=self.database,
            query=self.query,
            chunk=self.chunk,
            operation=self.operation,
        )

    def queryset(self) -> Any:
        """The selection, rebuilt from the pickled query, on this job's database."""
        return self._selection.queryset()

    def describe(self) -> dict[str, Any]:
        """What identifies this job for a checkpoint fingerprint."""
        keep = ("operation", "model", "database", "selection", "chunk")
        described = self._selection.describe()
        return {key: described[key] for key in keep} | {"archive": self.parts is not None}

    def chunk_rows(self, chunk: PkRange) -> int:
        """Rows currently selected inside ``chunk`` (for reporting a failed chunk)."""
        return self._selection.chunk_rows(chunk)

    def split(self, chunk: PkRange) -> list[PkRange] | None:
        """A delete is not bisected: a chunk is deleted whole, or not at all."""
        return None

    def reject(self, chunk: PkRange, error: BaseException) -> list[Reject] | None:
        """A delete rejects no rows: a refused chunk fails whole."""
        return None

    def execute(
        self,
        chunk: PkRange,
        phases: dict[str, float],
        atomic: Callable[[], contextlib.AbstractContextManager[None]],
    ) -> ChunkCounts:
        """Delete one chunk (and its cascades) in one transaction, archiving it first.

        Raises:
            DeleteRefusedError: a PROTECT or RESTRICT foreign key refers to a
                row of the chunk; nothing of the chunk is deleted.
        """
        from django.db.models.deletion import ProtectedError, RestrictedError

        part = self._part_path(chunk)
        try:
            with atomic():
                return self._delete(chunk, phases, part)
        except (ProtectedError, RestrictedError) as exc:
            _remove(part)
            raise DeleteRefusedError(refusal(self.model, exc)) from None
        except BaseException:
            _remove(part)
            raise

    def _delete(self, chunk: PkRange, phases: dict[str, float], part: str | None) -> ChunkCounts:
        from django.db.models.deletion import Collector

        start = time.perf_counter()
        rows = self._selection._range(chunk)
        matched = rows.count()
        rows._for_write = True  # as QuerySet.delete(): collect where the delete happens
        rows.query.clear_ordering(force=True)
        collector = Collector(using=self.database, origin=rows)
        collector.collect(rows)
        collected = time.perf_counter()
        phases["collect"] = collected - start
        if part is not None:
            _write_part(part, self.model, _archived_rows(collector, self.database))
            phases["archive"] = time.perf_counter() - collected
        written_start = time.perf_counter()
        _total, deleted = collector.delete()
        phases["write"] = time.perf_counter() - written_start
        written = deleted.get(self.model, 0)
        return ChunkCounts(
            rows=matched,
            matched=matched,
            written=written,
            skipped=max(matched - written, 0),  # gone before the chunk ran
            deleted={label: count for label, count in deleted.items() if count},
        )

    def _part_path(self, chunk: PkRange) -> str | None:
        if self.parts is None:
            return None
        # the same range always gets the same name: a chunk rerun after its worker
        # died replaces the part its first run left, instead of adding a second one
        digest = hashlib.sha1(repr((chunk.lo, chunk.hi)).encode()).hexdigest()[:16]
        return os.path.join(self.parts, f"{chunk.index:09d}-{digest}.jsonl")


def refusal(label: str, error: Exception) -> str:
    """One line naming the protecting model and row of a ProtectedError/RestrictedError."""
    from django.db.models.deletion import ProtectedError

    kind = "PROTECT" if isinstance(error, ProtectedError) else "RESTRICT"
    objs: Any = getattr(error, "protected_objects", None) or getattr(
        error, "restricted_objects", ()
    )
    blockers = sorted(
        objs,
        key=lambda obj: (obj._meta.label, str(obj.pk)),
    )
    if not blockers:
        return f"cannot delete {label} rows: {error}"
    first = blockers[0]
    more = f" and {len(blockers) - 1} more" if len(blockers) > 1 else ""
    target = ""
    for field in first._meta.concrete_fields:
        if field.is_relation and field.remote_field.on_delete.__name__ == kind:
            value = getattr(first, field.attname)
            if value is not None:
                target = f"{field.related_model._meta.label} pk={value!r}: "
                break
    return (
        f"cannot delete {target or label + ' rows: '}protected by {first._meta.label} "
        f"pk={first.pk!r}{more} (on_delete={kind}); delete or repoint it first, or "
        "leave these rows out with --exclude"
    )


def _archived_rows(collector: Any, database: str) -> Iterator[tuple[Any, dict[str, Any]]]:
    """Every row the collector will delete, as ``(model, {attname: value})``.

    Collected instances may be deferred (Django loads only the keys it needs
    when no signal listens), so rows are read again, whole, by primary key;
    fast deletes are querysets, read before they run. Rows that SET_NULL
    only updates are not deleted, so not here.
    """
    for model, instances in collector.data.items():
        pks = [obj.pk for obj in instances]
        manager = model._base_manager.using(database)
        for start in range(0, len(pks), 500):
            batch = pks[start : start + 500]
            yield from _rows(model, manager.filter(pk__in=batch))
    for queryset in collector.fast_deletes:
        yield from _rows(queryset.model, queryset)


def _rows(model: Any, queryset: Any) -> Iterator[tuple[Any, dict[str, Any]]]:
    attnames = [f.attname for f in model._meta.concrete_fields]
    for values in queryset.order_by("pk").values(*attnames):
        yield model, values


def _write_part(path: str, label: str, rows: Iterator[tuple[Any, dict[str, Any]]]) -> None:
    """Write the chunk's rows as JSON Lines, the selection's own model first, and fsync."""
    first: list[bytes] = []
    rest: list[bytes] = []
    for model, values in rows:
        record = {MODEL_KEY: model._meta.label, **values}
        line = json.dumps(record, default=_json_default).encode() + b"\n"
        (first if model._meta.label == label else rest).append(line)
    temporary = f"{path}.{os.getpid()}.tmp"
    with open(temporary, "wb") as file:
        file.writelines(first + rest)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)


def _json_default(value: Any) -> Any:
    """Values as ``bulkpar create`` reads them back (``to_python`` of the field)."""
    if isinstance(value, datetime.datetime | datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal | uuid.UUID):
        return str(value)
    if isinstance(value, datetime.timedelta):
        return str(value.total_seconds())
    if isinstance(value, bytes | memoryview):
        return base64.b64encode(bytes(value)).decode()
    raise TypeError(f"cannot archive a value of type {type(value).__name__}")


def _remove(path: str | None) -> None:
    if path is None:
        return
    with contextlib.suppress(FileNotFoundError):
        os.remove(path)


def collect_parts(parts: str, archive: str, model: Any, database: str) -> int:
    """Append the parts of committed chunks to ``archive`` (gzip by name); return rows appended.

    A part whose chunk did not commit (its worker was killed between the
    fsync and the commit) still has its first row, of the selection's model,
    in the table: it is dropped, and the chunk's next run archives it again.
    """
    names = sorted(n for n in os.listdir(parts) if n.endswith(".jsonl"))
    if not names:
        return 0
    opener: Any = gzip.open if archive.endswith(".gz") else open
    appended = 0
    manager = model._base_manager.using(database)
    with opener(archive, "ab") as out:
        for name in names:
            path = os.path.join(parts, name)
            with open(path, "rb") as file:
                data = file.read()
            lines = data.splitlines()
            if lines:
                head = json.loads(lines[0])
                if (
                    head.get(MODEL_KEY) == model._meta.label
                    and manager.filter(pk=head[model._meta.pk.attname]).exists()
                ):
                    os.remove(path)
                    continue
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
            os.remove(path)
            appended += len(lines)
    return appended
