"""The Python API: thin functions that pack their arguments into an operation's spec and run it.

Each function builds the spec (:class:`~bulkpar.operations.update.UpdateSpec`,
:class:`~bulkpar.operations.load.LoadSpec`, :class:`~bulkpar.operations.save.SaveSpec`,
:class:`~bulkpar.operations.delete.DeleteSpec`)
and hands it to :func:`execute`: the spec's ``validate()`` holds every check,
for the API and the CLI alike. The CLI builds the same specs and calls
:func:`execute`; nothing here prints or imports a terminal library.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from bulkpar.engine.runner import ProgressSink, run
from bulkpar.operations.options import RunSpec
from bulkpar.report import Report

if TYPE_CHECKING:  # each function imports its own operation: one run loads one
    from bulkpar.operations.delete import DeleteSpec
    from bulkpar.operations.load import LoadSpec
    from bulkpar.operations.save import SaveSpec
    from bulkpar.operations.update import UpdateSpec


def update(
    queryset: Any,
    *,
    set: Mapping[str, Any] | None = None,
    func: Callable[[Any], Any] | str | None = None,
    fields: Iterable[str] | None = None,
    chunk: int = 1000,
    workers: int | None = None,
    executor: str = "auto",
    start_method: str | None = None,
    database: str | None = None,
    touch: bool = True,
    lock: bool = False,
    method: str = "auto",
    retries: int = 5,
    on_error: str = "abort",
    rejects: str | None = None,
    max_rejects: int | None = None,
    dry_run: bool = False,
    checkpoint: str | None = None,
    progress: bool | ProgressSink = False,
) -> Report:
    """Update the rows of ``queryset`` in parallel chunks of primary-key ranges.

    Exactly one of ``set`` and ``func``:

    * ``set={"active": False}`` runs one SQL ``UPDATE`` per chunk; no row is
      loaded, and rows already holding the values are not rewritten.
    * ``func=normalize`` loads each chunk, calls ``normalize(obj)`` on every
      instance (mutate in place; return ``False`` to leave the row), and
      writes only changed rows and fields with ``bulk_update``.

    Each chunk is one transaction in one worker. Signals do not fire and
    ``save()`` is not called (use :func:`bulkpar.save` for that). With
    ``touch`` (default) ``auto_now`` fields are refreshed on written rows, as
    ``save()`` would; ``touch=False`` leaves them alone.

    Args:
        queryset: a model class (all rows) or a QuerySet (its filters select
            the rows; not sliced, not ``.values()``).
        set: field name → Python value, converted by the field (``to_python``)
            and checked against the column's limits — NOT NULL, max_length,
            decimal digits and places (never rounded), integer range — once,
            before any write. ``None`` is SQL NULL; ``Value(None,
            JSONField())`` is JSON null.
        func: a callable or ``"module:callable"``; for the ``auto`` and
            ``process`` executors it must be importable by name (defined at
            module level), even for a small job that runs in this process:
            the same call works whatever the table's size.
        fields: the fields ``func`` may change; changes to others are ignored.
            Default: every concrete field, detected by comparing values.
        chunk: rows per chunk and per transaction.
        workers: parallel workers (default: CPUs available).
        executor: ``"auto"`` (default: a pool of worker processes, except for
            a job of at most two chunks, which runs in this process and
            says so in ``report.executor``), ``"process"`` (always a pool),
            ``"thread"`` or ``"serial"``.
        start_method: ``fork``, ``forkserver`` or ``spawn`` (worker processes).
        database: alias to write to (default: the queryset's, or the router's).
        touch: refresh ``auto_now`` fields of written rows.
        lock: ``SELECT … FOR UPDATE`` each chunk's rows before ``func`` runs,
            so concurrent writers cannot change them in between.
        method: how ``func``'s changes are written: ``auto`` (default: the
            fastest for the backend), ``django`` (``bulk_update``), ``values``
            (``UPDATE … FROM (VALUES …)``) or ``copy`` (PostgreSQL: COPY into a
            temporary table, then ``UPDATE … FROM``).
        retries: retries of a chunk after transient errors (deadlock, lock
            timeout, dropped connection, SQLite busy).
        on_error: ``"abort"`` stops after a failed chunk; ``"skip"`` goes on;
            ``"bisect"`` splits a failing chunk until the bad rows are
            isolated, commits the others and rejects the bad ones.
        rejects: JSON Lines file receiving the rows ``bisect`` rejected.
        max_rejects: rows ``bisect`` may reject with ``report.ok`` still
            True; the run stops once more are rejected (default: none
            allowed, but the run goes on).
        dry_run: do everything inside transactions that are rolled back, and
            report what would have been written.
        checkpoint: a journal file of committed chunks; running the same job
            again with it skips them (see :mod:`bulkpar.engine.checkpoint`).
        progress: True for a tqdm bar, or any ProgressSink.

    Returns:
        The run's Report; ``report.ok`` is False if any chunk failed or more
        rows were rejected than ``max_rejects`` allows.

    Raises:
        bulkpar.errors.BulkparError: invalid arguments, unknown fields, an
            unreachable database, or workers that cannot start.
    """
    from bulkpar.operations.update import UpdateSpec

    spec = UpdateSpec(
        queryset,
        set=set,
        func=func,
        fields=fields,
        touch=touch,
        lock=lock,
        method=method,
        run=RunSpec(
            chunk=chunk,
            workers=workers,
            executor=executor,
            start_method=start_method,
            database=database,
            retries=retries,
            on_error=on_error,
            rejects=rejects,
            max_rejects=max_rejects,
            dry_run=dry_run,
            checkpoint=checkpoint,
            progress=progress,
        ),
    )
    return execute(spec)


def execute(spec: UpdateSpec | LoadSpec | SaveSpec | DeleteSpec) -> Report:
    """Run an operation given as its spec (what the CLI builds from its options).

    The spec's ``validate()`` checks every option before anything is written;
    then its chunks are planned (opening the checkpoint, if any) and run.

    Raises:
        bulkpar.errors.BulkparError: as the operation's function would.
    """
    operation = spec.validate()
    with operation.session():
        return run(
            operation.job,
            operation.plan(),
            operation.options,
            operation.target,
            progress=spec.run.progress_sink(),
            notes=operation.notes,
        )


def create(
    model: Any,
    rows: Any,
    *,
    ignore_conflicts: bool = False,
    format: str | None = None,
    delimiter: str | None = None,
    map: Mapping[str, str] | None = None,
    const: Mapping[str, Any] | None = None,
    ignore_unknown: bool = False,
    validate: bool = False,
    method: str = "auto",
    chunk: int = 1000,
    workers: int | None = None,
    executor: str = "auto",
    start_method: str | None = None,
    database: str | None = None,
    retries: int = 5,
    on_error: str = "abort",
    rejects: str | None = None,
    max_rejects: int | None = None,
    dry_run: bool = False,
    checkpoint: str | None = None,
    progress: bool | ProgressSink = False,
) -> Report:
    """Insert records into ``model`` in parallel chunks.

    ``rows`` is a path (CSV, JSON Lines, JSON, ``.gz`` too; Parquet),
    ``"-"`` for stdin, a ``pyarrow.Table`` or ``RecordBatchReader``, a pandas
    DataFrame (NaN, NaT and ``pd.NA`` are None; the index is not read), or
    any iterable of dicts (a generator stays lazy). Parquet and Arrow need
    pyarrow (``pip install 'bulkpar[parquet]'``). Each record is
    converted with the model's fields; a record that cannot be converted is
    rejected (counted, written to ``rejects``) and the rest of its chunk is
    still written. Defaults, ``auto_now`` and ``auto_now_add`` are filled in
    as Django would. Signals do not fire and ``save()`` is not called.

    Args:
        ignore_conflicts: skip records whose unique key already exists, and
            count them (``report.skipped``), instead of failing the chunk. Of
            several records with one key the first in the input wins.
        format: ``csv``, ``jsonl``, ``json`` or ``parquet`` (default: from the
            file name; Parquet cannot be read from stdin).
        delimiter: the CSV field separator (default ``,``; ``"tab"`` or
            ``"\\t"`` for tab-separated files); only for CSV paths and stdin.
        map: input column → field renames.
        const: field → value set on every record.
        ignore_unknown: drop input columns that match no field.
        validate: also run each field's own validators (e-mail, URL, custom …),
            ``choices``, ``blank``, foreign-key existence and the model's
            ``clean()`` — ``full_clean()`` without the unique checks, which
            ``bulk_create`` and ``save()`` never run. An invalid record is
            rejected with the field and Django's message. Without it, values
            are checked by ``to_python`` and the database's own limits only.
        method: the writer: ``auto`` (default), ``values`` (multi-row INSERT),
            ``copy`` (PostgreSQL COPY) or ``django`` (``bulk_create``, plain
            creates only).
        rejects: JSON Lines file for rejected records (line, row, field, error).
        max_rejects: stop once more records than this are rejected.
        chunk, workers, executor, start_method, database, retries, on_error,
            progress: as for :func:`update`.

    Returns:
        The Report: ``input_rows == created + skipped + rejected + failed_rows``.
    """
    from bulkpar.operations.load import LoadMode, LoadSpec

    spec = LoadSpec(
        model,
        rows,
        mode=LoadMode.of("create", ignore_conflicts),
        format=format,
        delimiter=delimiter,
        map=map,
        const=const,
        ignore_unknown=ignore_unknown,
        full_clean=validate,
        method=method,
        run=RunSpec(
            chunk=chunk,
            workers=workers,
            executor=executor,
            start_method=start_method,
            database=database,
            retries=retries,
            on_error=on_error,
            rejects=rejects,
            max_rejects=max_rejects,
            dry_run=dry_run,
            checkpoint=checkpoint,
            progress=progress,
        ),
    )
    return execute(spec)


def upsert(
    model: Any,
    rows: Any,
    *,
    unique: Iterable[str] | str,
    update: Iterable[str] | str | None = None,
    format: str | None = None,
    delimiter: str | None = None,
    map: Mapping[str, str] | None = None,
    const: Mapping[str, Any] | None = None,
    ignore_unknown: bool = False,
    validate: bool = False,
    method: str = "auto",
    chunk: int = 1000,
    workers: int | None = None,
    executor: str = "auto",
    start_method: str | None = None,
    database: str | None = None,
    retries: int = 5,
    on_error: str = "abort",
    rejects: str | None = None,
    max_rejects: int | None = None,
    dry_run: bool = False,
    checkpoint: str | None = None,
    progress: bool | ProgressSink = False,
) -> Report:
    """Update-or-create records in ``model`` (a bulk ``update_or_create``), in parallel.

    Uses the database's own conflict handling (``INSERT … ON CONFLICT`` on
    PostgreSQL and SQLite, ``INSERT … ON DUPLICATE KEY UPDATE`` on MariaDB),
    so parallel workers and concurrent runs never raise IntegrityError or lose
    an update. Existing rows whose values are already equal are not rewritten.
    ``auto_now`` fields are refreshed on created and updated rows,
    ``auto_now_add`` fields only set on created rows. When a key appears
    several times the last record in the input wins, as in a serial loop
    (records are routed to partitions by their key, and a partition's chunks
    run in input order); the others count as duplicates within a chunk, as
    updated or unchanged across chunks.

    Args:
        unique: the fields identifying a row; a unique constraint must cover
            exactly these fields (checked before any write).
        update: the fields overwritten on existing rows (default: every field
            the input supplies except the unique ones); never the primary key.
        validate: as for :func:`create`, on the fields each record gives (as a
            ModelForm validates only its own fields).
        Others: as for :func:`create`.

    Returns:
        The Report with ``created``, ``updated``, ``unchanged``, ``rejected``
        and ``duplicates``, which add up to ``input_rows``.
    """
    from bulkpar.operations.load import LoadMode, LoadSpec

    spec = LoadSpec(
        model,
        rows,
        mode=LoadMode.UPSERT,
        unique=unique,
        update=update,
        format=format,
        delimiter=delimiter,
        map=map,
        const=const,
        ignore_unknown=ignore_unknown,
        full_clean=validate,
        method=method,
        run=RunSpec(
            chunk=chunk,
            workers=workers,
            executor=executor,
            start_method=start_method,
            database=database,
            retries=retries,
            on_error=on_error,
            rejects=rejects,
            max_rejects=max_rejects,
            dry_run=dry_run,
            checkpoint=checkpoint,
            progress=progress,
        ),
    )
    return execute(spec)


def save(
    source: Any,
    rows: Any = None,
    *,
    func: Callable[[Any], Any] | str | None = None,
    match: Iterable[str] | str | None = None,
    fields: Iterable[str] | str | None = None,
    setup: Callable[[], Any] | str | None = None,
    transaction: str = "chunk",
    format: str | None = None,
    delimiter: str | None = None,
    map: Mapping[str, str] | None = None,
    const: Mapping[str, Any] | None = None,
    ignore_unknown: bool = False,
    validate: bool = False,
    chunk: int = 500,
    workers: int | None = None,
    executor: str = "auto",
    start_method: str | None = None,
    database: str | None = None,
    retries: int = 5,
    on_error: str = "abort",
    rejects: str | None = None,
    max_rejects: int | None = None,
    dry_run: bool = False,
    checkpoint: str | None = None,
    progress: bool | ProgressSink = False,
) -> Report:
    """Call ``save()`` on every object, in parallel chunks, so signals and overrides run.

    Two sources:

    * ``rows`` given (a path, ``"-"``, an Arrow table, a DataFrame or an
      iterable of dicts, as for :func:`create`): each record
      becomes an instance of ``source`` (a model class) and is saved. With
      ``match``, the existing object with that key is loaded, updated and saved
      instead (update_or_create semantics: ``post_save`` gets the right
      ``created`` flag).
    * ``rows`` omitted: every object of ``source`` (a model or queryset) is
      loaded, passed to ``func`` (if any; returning False skips it) and saved,
      with ``update_fields=fields`` when ``fields`` is given.

    ``pre_save``/``post_save`` fire and ``save()`` overrides run exactly once
    per committed object. There is deliberately no way to turn signals off:
    :func:`create` and :func:`update` are the tools for signal-free writes.

    Args:
        setup: ``module:callable`` (or an importable function) run once in
            every worker after ``django.setup()``; if it raises, the run stops
            before any write.
        transaction: ``"chunk"`` (default: one transaction per chunk; a failing
            chunk is bisected so its good objects still commit) or ``"object"``
            (every save commits alone).
        validate: run ``full_clean()`` without the unique checks on every
            object before its ``save()`` (after ``func``); an invalid object is
            rejected with the field and Django's message, and not saved.
        rejects, max_rejects: objects whose save raised, with their traceback.
        Others: as for :func:`update` and :func:`create`.

    Returns:
        The Report: ``saved`` (= ``written``), ``created``, ``updated``,
        ``skipped``, ``rejected``.
    """
    from bulkpar.operations.save import SaveSpec

    spec = SaveSpec(
        source,
        rows,
        func=func,
        match=match,
        fields=fields,
        setup=setup,
        transaction=transaction,
        format=format,
        delimiter=delimiter,
        map=map,
        const=const,
        ignore_unknown=ignore_unknown,
        full_clean=validate,
        run=RunSpec(
            chunk=chunk,
            workers=workers,
            executor=executor,
            start_method=start_method,
            database=database,
            retries=retries,
            on_error=on_error,
            rejects=rejects,
            max_rejects=max_rejects,
            dry_run=dry_run,
            checkpoint=checkpoint,
            progress=progress,
        ),
    )
    return execute(spec)


def delete(
    queryset: Any,
    *,
    archive: str | None = None,
    chunk: int = 1000,
    workers: int | None = None,
    executor: str = "auto",
    start_method: str | None = None,
    database: str | None = None,
    retries: int = 5,
    on_error: str = "abort",
    dry_run: bool = False,
    checkpoint: str | None = None,
    progress: bool | ProgressSink = False,
) -> Report:
    """Delete the rows of ``queryset`` in parallel chunks of primary-key ranges.

    Each chunk is deleted in one transaction by Django's deletion collector,
    as ``queryset.delete()`` would delete it: ``on_delete`` rules (CASCADE,
    SET_NULL, PROTECT, RESTRICT) apply and ``pre_delete``/``post_delete``
    fire for every object; where the collector says it is safe (no signals,
    no cascades) a chunk is one ``DELETE … WHERE``. A PROTECT or RESTRICT
    reference fails its chunk, which is left whole.

    Args:
        queryset: a model class (all rows) or a QuerySet (its filters select
            the rows; not sliced, not ``.values()``).
        archive: a JSON Lines file (gzip when it ends in ``.gz``) that
            receives every deleted row, cascaded rows too, as its concrete
            fields by attname plus ``"_model": "app_label.ModelName"``; a
            chunk is deleted and archived, or neither. The file is appended
            to, so a resumed run continues it. ``bulkpar.create(Model,
            archive)`` loads a model's rows back.
        chunk: rows of the selected model per chunk (cascades come on top).
        on_error: ``"abort"`` or ``"skip"`` (a delete is not bisected).
        dry_run: delete inside transactions that are rolled back and report
            what would be deleted, cascades included; nothing is archived.
        checkpoint, workers, executor, start_method, database, retries,
        progress: as for :func:`update`.

    Returns:
        The run's Report: ``report.deleted`` holds the rows deleted per
        model, ``report.written`` those of the selected model;
        ``matched = written + skipped + failed_rows + not_attempted``.
    """
    from bulkpar.operations.delete import DeleteSpec

    return execute(
        DeleteSpec(
            queryset,
            archive=archive,
            run=RunSpec(
                chunk=chunk, workers=workers, executor=executor, start_method=start_method,
                database=database, retries=retries, on_error=on_error, dry_run=dry_run,
                checkpoint=checkpoint, progress=progress,
            ),
        )
    )  # fmt: skip
