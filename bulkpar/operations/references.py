"""Checking what the caller names: a model or queryset, fields, a function, a writer.

Each check raises a :class:`~bulkpar.errors.UsageError` that names the
argument and the fix; the operations' specs call them from ``validate()``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from bulkpar.bootstrap import callable_ref, import_callable
from bulkpar.engine.contracts import RunOptions
from bulkpar.errors import UsageError
from bulkpar.inputs.selection_strings import get_concrete_field


def is_model_class(obj: Any) -> bool:
    """True for a Django model class (a plain bool, so ``obj`` keeps its ``Any`` type:
    Django ships no type stubs, and narrowing to ``type`` would hide ``_meta``)."""
    from django.db import models

    return isinstance(obj, type) and issubclass(obj, models.Model)


def is_queryset(obj: Any) -> bool:
    """True for a Django QuerySet."""
    from django.db import models

    return isinstance(obj, models.QuerySet)


def as_queryset(source: Any) -> Any:
    """The QuerySet a model class (all rows) or a QuerySet selects.

    Raises:
        UsageError: a sliced or ``.values()`` queryset, or anything else.
    """
    if is_model_class(source):
        return source._default_manager.all()
    if is_queryset(source):
        if source.query.is_sliced:
            raise UsageError("sliced querysets cannot be chunked: filter instead of slicing")
        if source.query.values_select or getattr(source, "_fields", None) is not None:
            raise UsageError("pass a queryset of model instances, not .values()/.values_list()")
        return source
    raise UsageError(f"expected a model class or a QuerySet, got {type(source).__name__}")


def func_ref(func: Callable[..., Any] | str, options: RunOptions, what: str = "--func") -> Any:
    """``func`` as workers receive it: a checked ``module:callable`` or the callable."""
    if isinstance(func, str):
        import_callable(func, what=what)  # fail in the parent, with a clear message
        return func
    if not callable(func):
        raise UsageError(f"func must be callable or 'module:callable', got {func!r}")
    from bulkpar.engine.executors import backend

    if backend(options.executor).needs_settings_module:  # workers import it by name
        return callable_ref(func)
    return func


def names(fields: Iterable[str] | str | None, option: str | None = None) -> list[str]:
    """Field names from ``"a,b"`` or an iterable; with ``option``, a string naming none is
    refused (``--fields ,`` is a mistake, not "all fields")."""
    if fields is None:
        return []
    text = isinstance(fields, str)
    items = fields.split(",") if isinstance(fields, str) else fields
    found = [f.strip() for f in items if f.strip()]
    if text and not found and option is not None:
        raise UsageError(f"{option} is empty: name fields separated by commas")
    return found


def field_names(model: Any, names: Iterable[str], option: str) -> tuple[str, ...]:
    """The concrete fields' names (``did you mean`` for an unknown one)."""
    resolved = []
    for name in names:
        field = get_concrete_field(model, name, option=option, spec=name)
        resolved.append(field.name)
    return tuple(resolved)


def writer(method: str, alias: str, operation: str) -> str:
    """The writer ``method`` picks for ``operation`` on the database ``alias``."""
    from django.db import connections

    from bulkpar.writers import resolve_method

    return resolve_method(method, connections[alias].vendor, operation)
