"""Turning ``field__lookup=value`` strings from the command line into typed values.

Values are converted with the model field itself (``to_python``), so
``--filter created__lt=2024-01-01`` compares with a timezone-aware datetime
and ``--set active=false`` stores a boolean. The literal ``null`` means NULL.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterable, Sequence
from typing import Any

from bulkpar.errors import FieldNotFoundError, UsageError, did_you_mean

NULL = "null"
_TRUE = {"1", "t", "true", "y", "yes", "on"}
_FALSE = {"0", "f", "false", "n", "no", "off"}
_TEXT_LOOKUPS = {
    "contains",
    "icontains",
    "startswith",
    "istartswith",
    "endswith",
    "iendswith",
    "regex",
    "iregex",
    "iexact",
}
_INT_TRANSFORMS = {
    "year",
    "iso_year",
    "month",
    "day",
    "week",
    "week_day",
    "iso_week_day",
    "quarter",
    "hour",
    "minute",
    "second",
}


def split_assignment(spec: str, option: str) -> tuple[str, str]:
    """Split ``"name=value"``; the value may itself contain ``=``."""
    name, eq, value = spec.partition("=")
    name = name.strip()
    if not eq or not name:
        raise UsageError(f"invalid {option} {spec!r}: expected FIELD=VALUE, e.g. active=true")
    return name, value


def parse_bool(raw: str, *, what: str) -> bool:
    """Parse true/false/yes/no/1/0/on/off (any case)."""
    lowered = raw.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise UsageError(f"invalid boolean {raw!r} for {what}: use true or false")


def field_names(model: type[Any]) -> list[str]:
    """Names a user may refer to: field names and, for FKs, their ``_id`` attnames."""
    names: list[str] = []
    for field in model._meta.get_fields():
        if field.auto_created and not field.concrete:
            continue
        names.append(field.name)
        attname = getattr(field, "attname", None)
        if attname and attname != field.name:
            names.append(attname)
    return names


def get_concrete_field(model: type[Any], name: str, *, option: str, spec: str) -> Any:
    """The concrete field called ``name`` (or whose attname is ``name``, like ``author_id``)."""
    from django.core.exceptions import FieldDoesNotExist

    meta = model._meta
    if name == "pk":
        return meta.pk
    try:
        field = meta.get_field(name)
    except FieldDoesNotExist:
        field = next((f for f in meta.concrete_fields if f.attname == name), None)
        if field is None:
            raise _unknown_field(model, name, option, spec) from None
    if not getattr(field, "concrete", False) or field.many_to_many:
        raise FieldNotFoundError(
            f"field {name!r} in {option} {spec!r} is not a column of "
            f"{meta.label} (it is a {type(field).__name__}); name a concrete field"
        )
    return field


def _unknown_field(model: type[Any], name: str, option: str, spec: str) -> FieldNotFoundError:
    names = field_names(model)
    return FieldNotFoundError(
        f"unknown field {name!r} in {option} {spec!r} for model {model._meta.label}"
        f"{did_you_mean(name, names)} (fields: {', '.join(names)})"
    )


def convert_value(field: Any, raw: str, *, what: str) -> Any:
    """Convert a command-line string to the Python value ``field`` stores.

    Raises:
        UsageError: the value is not valid for the field, naming both.
    """
    from django.core.exceptions import ValidationError
    from django.db import models

    if raw == NULL:
        if not field.null:
            raise UsageError(f"{what}: field {field.name!r} is NOT NULL and cannot be null")
        return None
    target = field.target_field if field.is_relation else field
    try:
        if isinstance(target, models.BooleanField):
            return parse_bool(raw, what=what)
        if isinstance(target, models.JSONField):
            try:
                return json.loads(raw)
            except json.JSONDecodeError:
                return raw  # a bare word is stored as a JSON string
        value = target.to_python(raw)
    except ValidationError as exc:
        message = "; ".join(str(m) for m in exc.messages)
        raise UsageError(f"invalid value {raw!r} for {what}: {message}") from None
    if isinstance(value, datetime.datetime):
        value = _aware(value)
    return value


def _aware(value: datetime.datetime) -> datetime.datetime:
    from django.conf import settings
    from django.utils import timezone

    if settings.USE_TZ and timezone.is_naive(value):
        return timezone.make_aware(value)
    return value


def parse_lookup(model: type[Any], spec: str, *, option: str = "--filter") -> tuple[str, Any]:
    """Parse ``"path__lookup=value"`` into a ``(lookup, typed value)`` pair for ``.filter()``.

    The path may follow relations (``author__name=x``); a trailing lookup or
    transform (``__lt``, ``__in``, ``__isnull``, ``__year``) decides how the
    value is converted.
    """
    from django.core.exceptions import FieldDoesNotExist

    path, raw = split_assignment(spec, option)
    parts = path.split("__")
    current = model
    field: Any = None
    index = 0
    while index < len(parts):
        part = parts[index]
        try:
            candidate = current._meta.pk if part == "pk" else current._meta.get_field(part)
        except FieldDoesNotExist:
            attname_match = next(
                (f for f in current._meta.concrete_fields if f.attname == part), None
            )
            if attname_match is None:
                if field is None:
                    raise _unknown_field(current, part, option, spec) from None
                break  # the rest is a lookup
            candidate = attname_match
        field = candidate
        index += 1
        if getattr(field, "is_relation", False) and index < len(parts):
            related = field.related_model
            if related is not None and _is_field_of(related, parts[index]):
                current = related
                continue
    lookups = parts[index:]
    if raw == NULL and lookups in ([], ["exact"]):
        # field=null means IS NULL, as a SQL user expects (``= NULL`` matches nothing)
        return f"{'__'.join(parts[:index])}__isnull", True
    return path, _convert_for_lookup(field, lookups, raw, what=f"{option} {spec!r}")


def _is_field_of(model: type[Any], name: str) -> bool:
    from django.core.exceptions import FieldDoesNotExist

    try:
        model._meta.get_field(name)
    except FieldDoesNotExist:
        return name == "pk" or any(f.attname == name for f in model._meta.concrete_fields)
    return True


def _convert_for_lookup(field: Any, lookups: Sequence[str], raw: str, *, what: str) -> Any:
    from django.db import models

    lookup = lookups[-1] if lookups else "exact"
    if lookup == "isnull":
        return parse_bool(raw, what=what)
    if lookup in _TEXT_LOOKUPS:
        return raw
    if lookup in ("in", "range"):
        items = [convert_value(field, item.strip(), what=what) for item in raw.split(",")]
        if lookup == "range" and len(items) != 2:
            raise UsageError(f"{what}: __range takes two comma-separated values, lo,hi")
        return items
    if lookups and lookups[0] in _INT_TRANSFORMS:
        try:
            return int(raw)
        except ValueError:
            raise UsageError(f"invalid value {raw!r} for {what}: expected an integer") from None
    if lookups and lookups[0] == "date":
        return convert_value(models.DateField(name=field.name), raw, what=what)
    return convert_value(field, raw, what=what)


def parse_assignments(
    model: type[Any], specs: Iterable[str], *, option: str = "--set"
) -> dict[str, Any]:
    """Parse repeated ``FIELD=VALUE`` specs into ``{field name: typed value}``."""
    values: dict[str, Any] = {}
    for spec in specs:
        name, raw = split_assignment(spec, option)
        field = get_concrete_field(model, name, option=option, spec=spec)
        values[field.name] = convert_value(field, raw, what=f"{option} {spec!r}")
    return values
