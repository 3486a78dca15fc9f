"""The Python API: build a frozen job from the caller's arguments, run it, return a Report.

The CLI and the management command call these functions and only render the
result; nothing here prints or imports a terminal library.
"""

from __future__ import annotations

import dataclasses
import pickle
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from bulkpar import arguments
from bulkpar.bootstrap import check_database, import_callable, model_label
from bulkpar.engine.contracts import RunOptions
from bulkpar.engine.runner import Plan, ProgressSink, run
from bulkpar.errors import UsageError
from bulkpar.inputs.partitions import KeyPartitioner, partition_count
from bulkpar.inputs.selection_strings import check_assignment, get_concrete_field
from bulkpar.operations.update import UpdateJob
from bulkpar.report import Report


def update(
    queryset: Any,
    *,
    set: Mapping[str, Any] | None = None,
    func: Callable[[Any], Any] | str | None = None,
    fields: Iterable[str] | None = None,
    chunk: int = 1000,
    workers: int | None = None,
    executor: str = "process",
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
        func: a callable or ``"module:callable"``; for the process executor it
            must be importable by name (defined at module level).
        fields: the fields ``func`` may change; changes to others are ignored.
            Default: every concrete field, detected by comparing values.
        chunk: rows per chunk and per transaction.
        workers: parallel workers (default: CPUs available).
        executor: ``"process"`` (default), ``"thread"`` or ``"serial"``.
        start_method: ``fork``, ``forkserver`` or ``spawn`` (process executor).
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
    from django.db import connections, router

    queryset = arguments.as_queryset(queryset)
    model = queryset.model
    if (set is None) == (func is None):
        raise UsageError("give exactly one of set (field=value) or func (a transform)")
    if chunk < 1:
        raise UsageError(f"chunk must be at least 1 (got {chunk})")
    options = arguments.run_options(workers, executor, start_method, retries, on_error)
    if max_rejects is not None and max_rejects < 0:
        raise UsageError(f"max_rejects must be 0 or more (got {max_rejects})")
    options = dataclasses.replace(
        options, rejects=rejects, max_rejects=max_rejects, dry_run=dry_run
    )
    alias = database or queryset._db or router.db_for_write(model)

    targets = []
    if set is not None:
        if not set:
            raise UsageError("set is empty: name at least one field=value")
        for name, value in set.items():
            field = get_concrete_field(model, name, option="set", spec=f"{name}=…")
            if field.primary_key:
                raise UsageError(f"set cannot change the primary key {name!r}")
            targets.append((field, value))
    field_names: tuple[str, ...] = ()
    for name in fields or ():
        field = get_concrete_field(model, name, option="fields", spec=name)
        field_names += (field.name,)
    func_ref = arguments.func_ref(func, options) if func is not None else None

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
        chunk=chunk,
        assignments=assignments,
        func=func_ref,
        fields=field_names,
        touch=touch,
        lock=lock,
        writer=arguments.writer(method, alias, "update"),
    )
    journal = arguments.open_checkpoint(checkpoint, job.describe(), dry_run)
    skip, first_index = arguments.resume_point(journal)
    matched = job.total_rows(skip)
    plan = Plan(
        chunks=job.plan(skip, first_index), total=matched, matched=matched, checkpoint=journal
    )
    return run(
        job,
        plan,
        options,
        arguments.target(options, alias),
        progress=arguments.progress_sink(progress),
    )


def _load(
    operation: str,
    model: Any,
    rows: Any,
    *,
    unique: Iterable[str] | str | None,
    update: Iterable[str] | str | None,
    ignore_conflicts: bool,
    format: str | None,
    delimiter: str | None,
    map: Mapping[str, str] | None,
    const: Mapping[str, Any] | None,
    ignore_unknown: bool,
    validate: bool,
    method: str,
    chunk: int,
    workers: int | None,
    executor: str,
    start_method: str | None,
    database: str | None,
    retries: int,
    on_error: str,
    rejects: str | None,
    max_rejects: int | None,
    dry_run: bool,
    checkpoint: str | None,
    progress: bool | ProgressSink,
) -> Report:
    import itertools

    from django.db import router

    from bulkpar.inputs.conversion import (
        ColumnPlan,
        is_database_filled,
        plan_columns,
        required_fields,
    )
    from bulkpar.inputs.sources import as_source
    from bulkpar.operations.load import LoadJob, check_loadable, plan_batches, unique_field_sets

    if not arguments.is_model_class(model):
        raise UsageError(f"expected a model class, got {model!r}")
    check_loadable(model)
    if chunk < 1:
        raise UsageError(f"chunk must be at least 1 (got {chunk})")
    if max_rejects is not None and max_rejects < 0:
        raise UsageError(f"max_rejects must be 0 or more (got {max_rejects})")
    options = arguments.run_options(workers, executor, start_method, retries, on_error)
    options = dataclasses.replace(
        options, rejects=rejects, max_rejects=max_rejects, dry_run=dry_run
    )
    alias = database or router.db_for_write(model)
    meta = model._meta

    source = as_source(rows, format, delimiter)
    records = iter(source)
    first = next(records, None)
    arguments.refuse_empty_file(source, first)
    text_cells = source.format == "csv"
    if first is None:
        columns = ColumnPlan(text_cells=text_cells)
    else:
        columns = plan_columns(
            model, first.values.keys(), rename=map, consts=const,
            ignore_unknown=ignore_unknown, text_cells=text_cells, source=source.name,
        )  # fmt: skip
    supplied = set(columns.supplied)
    if first is not None and text_cells:  # a CSV header holds for every record
        absent = [f.name for f in required_fields(model) if f.name not in supplied]
        if absent:
            raise UsageError(
                f"the input {source.name} has no column for required field(s) "
                f"{', '.join(absent)} of {meta.label} (NOT NULL, no default); "
                "add the column or give --const FIELD=VALUE"
            )

    unique_names = arguments.field_names(model, arguments.names(unique), "--unique")
    update_names: tuple[str, ...] = ()
    if operation == "upsert":
        if not unique_names:
            raise UsageError("upsert needs --unique: the fields that identify a row")
        covered = [s for s in unique_field_sets(model) if set(s) == set(unique_names)]
        if not covered:
            choices = " or ".join(f"--unique {','.join(s)}" for s in unique_field_sets(model))
            raise UsageError(
                f"no unique constraint of {meta.label} covers exactly "
                f"({', '.join(unique_names)}); add unique=True or a UniqueConstraint "
                f"(and migrate), or use {choices}"
            )
        missing = [n for n in unique_names if first is not None and n not in supplied]
        if missing:
            raise UsageError(
                f"the input {source.name} has no column for unique field(s) "
                f"{', '.join(missing)}; every record must give the key"
            )
        if update is None:
            update_names = tuple(
                n for n in columns.supplied if n not in unique_names and n != meta.pk.name
            )
        else:
            update_names = arguments.field_names(model, arguments.names(update), "--update")
            overlap = set(update_names) & set(unique_names)
            if overlap:
                raise UsageError(
                    f"--update names unique field(s) {', '.join(sorted(overlap))}; "
                    "a row's key cannot be overwritten"
                )
            if meta.pk.name in update_names:
                raise UsageError(
                    f"--update names the primary key {meta.pk.name!r}; an upsert never "
                    "overwrites the key of an existing row (leave it out of --update)"
                )
            absent = [n for n in update_names if first is not None and n not in supplied]
            if absent:
                raise UsageError(
                    f"--update names {', '.join(absent)}, which the input {source.name} does "
                    f"not supply (it gives {', '.join(columns.supplied) or 'no fields'}); "
                    "add the column, --const it, or drop it from --update"
                )
    sort: tuple[str, ...] = ()
    if operation == "create":
        sort = next((s for s in unique_field_sets(model) if set(s) <= supplied), ())
    check_database(alias, model)
    job = LoadJob(
        operation=operation,
        model=model_label(model),
        database=alias,
        columns=columns,
        unique=unique_names,
        update=update_names,
        ignore_conflicts=ignore_conflicts,
        sort=sort,
        # a key with a Python default is filled per record, as Model() does
        insert_pk=meta.pk.name in supplied or not is_database_filled(meta.pk),
        writer=arguments.writer(method, alias, "create-ignore" if ignore_conflicts else operation),
        validate=validate,
    )
    # a key meets itself in input order: upserts by their unique key, creates by the key
    # their chunks are sorted by (with ignore_conflicts the first record wins)
    partition = _partitioner(model, columns, unique_names or sort, options, alias)
    journal = arguments.open_checkpoint(
        checkpoint,
        _partitioned(arguments.load_description(job, source, chunk), partition),
        dry_run,
        source.name,
    )
    stream = itertools.chain([first] if first is not None else [], records)
    sized = len(rows) if hasattr(rows, "__len__") and not isinstance(rows, str) else None
    plan = Plan(
        chunks=plan_batches(stream, chunk, source.bytes_read, partition=partition),
        total=source.total_bytes if source.total_bytes is not None else sized,
        unit="bytes" if source.total_bytes is not None else "rows",
        counts_input=True,
        checkpoint=journal,
    )
    return run(
        job,
        plan,
        options,
        arguments.target(options, alias),
        progress=arguments.progress_sink(progress),
    )


def _partitioner(
    model: Any, columns: Any, key: tuple[str, ...], options: RunOptions, alias: str
) -> KeyPartitioner | None:
    """Routes records by ``key`` so each key's records run in input order (None: no key)."""
    from django.db import connections

    if not key:
        return None
    workers = 1 if options.executor == "serial" else options.workers
    return KeyPartitioner(
        model, columns, key, partition_count(workers), vendor=connections[alias].vendor
    )


def _partitioned(description: dict[str, Any], partition: KeyPartitioner | None) -> dict[str, Any]:
    """A load's checkpoint fingerprint: the partition count decides what each chunk holds."""
    if partition is None:
        return description
    return {**description, "partitions": partition.partitions}


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
    executor: str = "process",
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

    ``rows`` is a path (CSV, JSON Lines, JSON; ``.gz`` too), ``"-"`` for
    stdin, or any iterable of dicts (a generator stays lazy). Each record is
    converted with the model's fields; a record that cannot be converted is
    rejected (counted, written to ``rejects``) and the rest of its chunk is
    still written. Defaults, ``auto_now`` and ``auto_now_add`` are filled in
    as Django would. Signals do not fire and ``save()`` is not called.

    Args:
        ignore_conflicts: skip records whose unique key already exists, and
            count them (``report.skipped``), instead of failing the chunk. Of
            several records with one key the first in the input wins.
        format: ``csv``, ``jsonl`` or ``json`` (default: from the file name).
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
    return _load(
        "create",
        model,
        rows,
        unique=None,
        update=None,
        ignore_conflicts=ignore_conflicts,
        format=format,
        delimiter=delimiter,
        map=map,
        const=const,
        ignore_unknown=ignore_unknown,
        validate=validate,
        method=method,
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
    )


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
    executor: str = "process",
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
    return _load(
        "upsert",
        model,
        rows,
        unique=unique,
        update=update,
        ignore_conflicts=False,
        format=format,
        delimiter=delimiter,
        map=map,
        const=const,
        ignore_unknown=ignore_unknown,
        validate=validate,
        method=method,
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
    )


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
    executor: str = "process",
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

    * ``rows`` given (a path, ``"-"`` or an iterable of dicts): each record
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
    import itertools

    from django.db import router

    from bulkpar.inputs.conversion import ColumnPlan, plan_columns
    from bulkpar.inputs.sources import as_source
    from bulkpar.operations.load import plan_batches, unique_field_sets
    from bulkpar.operations.save import TRANSACTION_MODES, SaveChunk, SaveJob

    if transaction not in TRANSACTION_MODES:
        raise UsageError(f"transaction must be 'chunk' or 'object' (got {transaction!r})")
    if chunk < 1:
        raise UsageError(f"chunk must be at least 1 (got {chunk})")
    options = arguments.run_options(workers, executor, start_method, retries, on_error)
    options = dataclasses.replace(
        options, rejects=rejects, max_rejects=max_rejects, dry_run=dry_run
    )
    setup_ref = arguments.func_ref(setup, options) if setup is not None else None
    if isinstance(setup_ref, str):
        import_callable(setup_ref, what="--setup")

    if rows is not None:
        if not arguments.is_model_class(source):
            raise UsageError("with rows, the first argument must be a model class")
        if func is not None or fields:
            raise UsageError("func and fields go with a queryset source, not with rows")
        model = source
        alias = database or router.db_for_write(model)
        input_source = as_source(rows, format, delimiter)
        records = iter(input_source)
        first = next(records, None)
        arguments.refuse_empty_file(input_source, first)
        text_cells = input_source.format == "csv"
        columns = ColumnPlan(text_cells=text_cells)
        if first is not None:
            columns = plan_columns(
                model, first.values.keys(), rename=map, consts=const,
                ignore_unknown=ignore_unknown, text_cells=text_cells, source=input_source.name,
            )  # fmt: skip
        match_names = arguments.field_names(model, arguments.names(match), "--match")
        if match_names and not any(set(s) == set(match_names) for s in unique_field_sets(model)):
            raise UsageError(
                f"--match {','.join(match_names)} is not covered by a unique constraint of "
                f"{model._meta.label}, so it may find several objects; use one of: "
                + " or ".join(",".join(s) for s in unique_field_sets(model))
            )
        check_database(alias, model)
        job = SaveJob(
            model=model_label(model), database=alias, columns=columns, match=match_names,
            transaction=transaction, validate=validate,
        )  # fmt: skip
        partition = _partitioner(model, columns, match_names, options, alias)
        journal = arguments.open_checkpoint(
            checkpoint,
            _partitioned(arguments.load_description(job, input_source, chunk), partition),
            dry_run,
            input_source.name,
        )
        stream = itertools.chain([first] if first is not None else [], records)
        plan: Plan[SaveChunk] = Plan(
            chunks=plan_batches(stream, chunk, input_source.bytes_read, partition=partition),
            total=input_source.total_bytes,
            unit="bytes" if input_source.total_bytes is not None else "rows",
            counts_input=True,
            checkpoint=journal,
        )
    else:
        queryset = arguments.as_queryset(source)
        model = queryset.model
        if match:
            raise UsageError("match goes with rows (an input), not with a queryset")
        if delimiter is not None:
            raise UsageError("delimiter goes with rows (a CSV input), not with a queryset")
        alias = database or queryset._db or router.db_for_write(model)
        update_fields = arguments.field_names(model, arguments.names(fields), "--fields")
        job = SaveJob(
            model=model_label(model),
            database=alias,
            query=pickle.dumps(queryset.order_by().query),
            func=arguments.func_ref(func, options) if func is not None else None,
            fields=update_fields,
            transaction=transaction,
            validate=validate,
        )
        update_job = UpdateJob(model=job.model, database=alias, query=job.query or b"", chunk=chunk)
        check_database(alias, model)  # before counting the rows
        description = {**update_job.describe(), "operation": "save", "func": repr(job.func),
                       "fields": list(update_fields), "transaction": transaction}  # fmt: skip
        journal = arguments.open_checkpoint(checkpoint, description, dry_run)
        skip, first_index = arguments.resume_point(journal)
        matched = update_job.total_rows(skip)
        plan = Plan(
            chunks=update_job.plan(skip, first_index),
            total=matched,
            matched=matched,
            checkpoint=journal,
        )
    notes: tuple[str, ...] = ()
    if dry_run:
        notes = (
            "dry run: save() overrides and signal receivers ran; whatever they did outside "
            "this database (e-mails, API calls, caches) was not rolled back.",
        )
    return run(
        job,
        plan,
        options,
        arguments.target(options, alias, setup_ref),
        progress=arguments.progress_sink(progress),
        notes=notes,
    )
