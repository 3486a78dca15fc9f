"""Turning the Python API's arguments into validated options, targets and plans.

Shared by :mod:`bulkpar.api`'s four operations: each check raises a
:class:`~bulkpar.errors.UsageError` that names the argument and the fix.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from bulkpar.bootstrap import callable_ref, import_callable
from bulkpar.engine.checkpoint import Checkpoint
from bulkpar.engine.contracts import EXECUTORS, RunOptions, Target
from bulkpar.engine.executors import cpu_count
from bulkpar.engine.runner import ProgressSink
from bulkpar.errors import UsageError
from bulkpar.inputs.selection_strings import get_concrete_field


def is_model_class(obj: Any) -> bool:
    """True for a Django model class (a plain bool, so ``obj`` keeps its ``Any`` type:
    Django ships no type stubs, and narrowing to ``type`` would hide ``_meta``)."""
    from django.db import models

    return isinstance(obj, type) and issubclass(obj, models.Model)


def as_queryset(source: Any) -> Any:
    from django.db import models

    if is_model_class(source):
        return source._default_manager.all()
    if isinstance(source, models.QuerySet):
        if source.query.is_sliced:
            raise UsageError("sliced querysets cannot be chunked: filter instead of slicing")
        if source.query.values_select or getattr(source, "_fields", None) is not None:
            raise UsageError("pass a queryset of model instances, not .values()/.values_list()")
        return source
    raise UsageError(f"expected a model class or a QuerySet, got {type(source).__name__}")


def run_options(
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
    if on_error not in ("abort", "skip", "bisect"):
        raise UsageError(f"on_error must be 'abort', 'skip' or 'bisect' (got {on_error!r})")
    return RunOptions(
        workers=workers,
        executor=executor,  # type: ignore[arg-type]
        start_method=start_method,
        retries=retries,
        on_error=on_error,  # type: ignore[arg-type]
    )


def target(options: RunOptions, database: str, setup: str | None = None) -> Target:
    if options.executor == "process":
        return Target.current(database, setup)
    return Target(settings="", pythonpath=(), database=database, setup=setup)


def func_ref(func: Callable[..., Any] | str, options: RunOptions) -> Any:
    if isinstance(func, str):
        import_callable(func)  # fail in the parent, with a clear message
        return func
    if not callable(func):
        raise UsageError(f"func must be callable or 'module:callable', got {func!r}")
    if options.executor == "process":
        return callable_ref(func)
    return func


def open_checkpoint(
    path: str | None, description: dict[str, Any], dry_run: bool, input_name: str = "the input"
) -> Checkpoint | None:
    if path is None:
        return None
    if dry_run:
        raise UsageError("--dry-run writes nothing, so it takes no --checkpoint")
    return Checkpoint(path, description, input_name)


def resume_point(checkpoint: Checkpoint | None) -> tuple[list[tuple[Any, Any]], int]:
    """Committed key ranges to skip, and the index of the first new chunk."""
    if checkpoint is None:
        return [], 0
    return checkpoint.done_ranges(), max(checkpoint.done_indexes(), default=-1) + 1


def writer(method: str, alias: str, operation: str) -> str:
    from django.db import connections

    from bulkpar.writers import resolve_method

    return resolve_method(method, connections[alias].vendor, operation)


def progress_sink(progress: bool | ProgressSink) -> ProgressSink | None:
    if progress is True:
        from bulkpar.cli.progress import TqdmProgress

        return TqdmProgress()
    if progress is False:
        return None
    return progress


def names(fields: Iterable[str] | str | None) -> list[str]:
    if fields is None:
        return []
    if isinstance(fields, str):
        fields = fields.split(",")
    return [f.strip() for f in fields if f.strip()]


def field_names(model: Any, names: Iterable[str], option: str) -> tuple[str, ...]:
    resolved = []
    for name in names:
        field = get_concrete_field(model, name, option=option, spec=name)
        resolved.append(field.name)
    return tuple(resolved)


def refuse_empty_file(source: Any, first: Any) -> None:
    """An input file with no records is almost always a mistake upstream: say so."""
    from bulkpar.errors import InputError
    from bulkpar.inputs.sources import FileSource

    if first is None and isinstance(source, FileSource):
        raise InputError(
            f"input {source.name} holds no records (an empty file, or a CSV header "
            "alone); nothing to load: check the export that produced it"
        )


def load_description(job: Any, source: Any, chunk: int) -> dict[str, Any]:
    """What identifies a load (or an input save) for a checkpoint fingerprint."""
    return {
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
