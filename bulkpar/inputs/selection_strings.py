"""Turning ``field__lookup=value`` strings from the command line into typed values.

Values are converted with the model field itself (``to_python``), so
``--filter created__lt=2024-01-01`` compares with a timezone-aware datetime
and ``--set active=false`` stores a boolean. The literal ``null`` means SQL
NULL; for a JSONField, ``json:null`` means JSON null and ``json:TEXT`` any
JSON text, parsed strictly.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterable, Sequence
from typing import Any

from bulkpar.errors import FieldNotFoundError, UsageError, did_you_mean

NULL = "null"
#: ``json:TEXT`` is TEXT parsed strictly as JSON; ``json:null`` is JSON null (``null`` is SQL NULL).
JSON_PREFIX = "json:"
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

    target = field.target_field if field.is_relation else field
    if raw == NULL:
        if not field.null:
            hint = f"; for JSON null write {JSON_PREFIX}null" if _is_json(target) else ""
            raise UsageError(f"{what}: field {field.name!r} is NOT NULL and cannot be null{hint}")
        return None
    try:
        if isinstance(target, models.BooleanField):
            return parse_bool(raw, what=what)
        if isinstance(target, models.JSONField):
            if raw.startswith(JSON_PREFIX):
                return _strict_json(raw[len(JSON_PREFIX) :], what=what)
            try:
                return json.loads(raw)
            except json.JSONDecodeError:
                return raw  # a bare word is stored as a JSON string
        value = target.to_python(raw)
    except ValidationError as exc:
        message = "; ".join(str(m) for m in exc.messages)
        raise UsageError(f"invalid value {raw!r} for {what}: {message}") from None
    if isinstance(value, datetime.datetime):
        value = aware_datetime(value)
    return value


def _is_json(field: Any) -> bool:
    from django.db import models

    return isinstance(field, models.JSONField)


def _strict_json(text: str, *, what: str) -> Any:
    """JSON text as the value to store; JSON null as ``Value(None, JSONField())``."""
    from django.db.models import JSONField, Value

    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(
            f"invalid JSON {text!r} after {JSON_PREFIX} in {what}: {exc.msg} (column {exc.colno})"
        ) from None
    return Value(None, JSONField()) if value is None else value


def aware_datetime(value: datetime.datetime) -> datetime.datetime:
    """``value`` made aware in the current time zone when naive and ``USE_TZ`` is on."""
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


def check_assignment(field: Any, value: Any, *, connection: Any, option: str = "--set") -> Any:
    """The value ``UPDATE … SET field = value`` will store, checked as create checks a record.

    The field's ``to_python``, then the limits the database would enforce
    anyway — NOT NULL, ``max_length`` (on SQLite too), decimal digits and
    places (a value is rejected, never rounded), the integer range of the
    column — so a bad constant fails once, in the parent, before any write,
    instead of in every chunk. A float for a DecimalField is read as written
    (``1.1`` is ``Decimal("1.1")``). Django expressions pass unchecked;
    ``Value(None, JSONField())`` is JSON null.

    Raises:
        UsageError: one line naming the assignment and the rule it breaks.
    """
    import decimal

    from django.core import validators
    from django.core.exceptions import ValidationError
    from django.db import models

    what = f"{option} {field.name}={_shown(value)}"
    target = field.target_field if field.is_relation else field
    if _is_json(target) and is_json_null(value):
        return value
    if hasattr(value, "resolve_expression"):
        return value
    if value is None:
        if field.null:
            return None
        hint = f" (for JSON null write {JSON_PREFIX}null)" if _is_json(target) else ""
        raise UsageError(f"{what}: {field.name} is NOT NULL{hint}; nothing was written")
    checks: list[Any] = []
    if isinstance(target, models.DecimalField) and isinstance(value, float):
        value = decimal.Decimal(repr(value))
    try:
        value = target.to_python(value)
        if isinstance(target, models.JSONField):
            json.dumps(value, cls=target.encoder)
        if isinstance(value, str | bytes) and getattr(target, "max_length", None):
            checks.append(validators.MaxLengthValidator(target.max_length))
        if isinstance(target, models.DecimalField):
            checks.append(validators.DecimalValidator(target.max_digits, target.decimal_places))
            value_checked = _without_trailing_zeros(value)
        else:
            value_checked = value
        if isinstance(target, models.IntegerField) and isinstance(value, int):
            from bulkpar.inputs.conversion import integer_range

            low, high = integer_range(target, connection)
            if low is not None:
                checks.append(validators.MinValueValidator(low))
            if high is not None:
                checks.append(validators.MaxValueValidator(high))
        for check in checks:
            check(value_checked)
        field.get_db_prep_save(value, connection)
    except ValidationError as exc:
        message = "; ".join(str(m).rstrip(".") for m in exc.messages)
        raise UsageError(f"{what}: {message}; nothing was written") from None
    except (TypeError, ValueError, OverflowError) as exc:
        raise UsageError(f"{what}: {exc}; nothing was written") from None
    return value


def is_json_null(value: Any) -> bool:
    """Whether ``value`` is Django's spelling of JSON null, ``Value(None, JSONField())``."""
    from django.db.models import JSONField, Value

    return (
        isinstance(value, Value)
        and value.value is None
        and isinstance(value._output_field_or_none, JSONField)
    )


def _without_trailing_zeros(value: Any) -> Any:
    """``Decimal("1.2300")`` as ``Decimal("1.23")``: the same number, stored exactly at 2 places."""
    import decimal

    sign, digits, exponent = value.as_tuple()
    if not isinstance(exponent, int):
        return value
    kept = list(digits)
    while exponent < 0 and len(kept) > 1 and kept[-1] == 0:
        kept.pop()
        exponent += 1
    return decimal.Decimal((sign, tuple(kept), exponent))


def _shown(value: Any, limit: int = 24) -> str:
    import decimal

    plain = isinstance(value, str | int | float | decimal.Decimal)
    text = str(value) if plain else repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"
