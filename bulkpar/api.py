"""The Python API: build a frozen job from the caller's arguments, run it, return a Report.

The CLI and the management command call these functions and only render the
result; nothing here prints or imports a terminal library.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from bulkpar.django_setup import callable_ref, check_database, import_callable, model_label
from bulkpar.errors import UsageError
from bulkpar.job import EXECUTORS, RunOptions, Target
from bulkpar.lookups import get_concrete_field
from bulkpar.operations.update import UpdateJob
from bulkpar.report import Report
from bulkpar.runner import Plan, ProgressSink, cpu_count, run


def _as_queryset(source: Any) -> Any:
    from django.db import models

    if isinstance(source, type) and issubclass(source, models.Model):
        return source._default_manager.all()
    if isinstance(source, models.QuerySet):
        if source.query.is_sliced:
            raise UsageError("sliced querysets cannot be chunked: filter instead of slicing")
        if source.query.values_select or source._fields is not None:
            raise UsageError("pass a queryset of model instances, not .values()/.values_list()")
        return source
    raise UsageError(f"expected a model class or a QuerySet, got {type(source).__name__}")


def _run_options(
    workers: int | None, executor: str, start_method: str | None, retries: int, on_error: str
) -> RunOptions:
    import multiprocessing

    if executor not in EXECUTORS:
        raise UsageError(f"unknown executor {executor!r}: use one of {', '.join(EXECUTORS)}")
    if workers is None:
        workers = cpu_count()
    if workers < 1:
        raise UsageError(f"workers must be at least 1 (got {workers})")
    if start_method is not None and start_method not in multiprocessing.get_all_start_methods():
        raise UsageError(
            f"unknown start method {start_method!r}: this platform offers "
            f"{', '.join(multiprocessing.get_all_start_methods())}"
        )
    if retries < 0:
        raise UsageError(f"retries must be 0 or more (got {retries})")
    if on_error not in ("abort", "skip"):
        raise UsageError(f"on_error must be 'abort' or 'skip' (got {on_error!r})")
    return RunOptions(
        workers=workers,
        executor=executor,  # type: ignore[arg-type]
        start_method=start_method,
        retries=retries,
        on_error=on_error,  # type: ignore[arg-type]
    )


def _target(options: RunOptions, database: str) -> Target:
    if options.executor == "process":
        return Target.current(database)
    return Target(settings="", pythonpath=(), database=database)


def _func_ref(func: Callable[..., Any] | str, options: RunOptions) -> Any:
    if isinstance(func, str):
        import_callable(func)  # fail in the parent, with a clear message
        return func
    if not callable(func):
        raise UsageError(f"func must be callable or 'module:callable', got {func!r}")
    if options.executor == "process":
        return callable_ref(func)
    return func


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
    retries: int = 5,
    on_error: str = "abort",
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
        set: field name → Python value.
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
        retries: retries of a chunk after transient errors (deadlock, lock
            timeout, dropped connection, SQLite busy).
        on_error: ``"abort"`` stops after a failed chunk; ``"skip"`` goes on.
        progress: True for a tqdm bar, or any ProgressSink.

    Returns:
        The run's Report; ``report.ok`` is False if any chunk failed.

    Raises:
        bulkpar.errors.BulkparError: invalid arguments, unknown fields, an
            unreachable database, or workers that cannot start.
    """
    from django.db import router

    queryset = _as_queryset(queryset)
    model = queryset.model
    if (set is None) == (func is None):
        raise UsageError("give exactly one of set (field=value) or func (a transform)")
    if chunk < 1:
        raise UsageError(f"chunk must be at least 1 (got {chunk})")
    options = _run_options(workers, executor, start_method, retries, on_error)
    alias = database or queryset._db or router.db_for_write(model)

    assignments: tuple[tuple[str, Any], ...] = ()
    if set is not None:
        if not set:
            raise UsageError("set is empty: name at least one field=value")
        pairs = []
        for name, value in set.items():
            field = get_concrete_field(model, name, option="set", spec=f"{name}=…")
            if field.primary_key:
                raise UsageError(f"set cannot change the primary key {name!r}")
            pairs.append((field.attname, value))
        assignments = tuple(pairs)
    field_names: tuple[str, ...] = ()
    for name in fields or ():
        field = get_concrete_field(model, name, option="fields", spec=name)
        field_names += (field.name,)
    func_ref = _func_ref(func, options) if func is not None else None

    query = pickle.dumps(queryset.order_by().query)
    check_database(alias)
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
    )
    matched = job.total_rows()
    plan = Plan(chunks=job.plan(), total=matched, matched=matched)
    return run(job, plan, options, _target(options, alias), progress=_progress_sink(progress))


def _progress_sink(progress: bool | ProgressSink) -> ProgressSink | None:
    if progress is True:
        from bulkpar.progress import TqdmProgress

        return TqdmProgress()
    if progress is False:
        return None
    return progress
