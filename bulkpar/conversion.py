"""Turning raw input records into model field values, or rejecting them.

The parent resolves the input's columns to fields once (:func:`plan_columns`,
so an unknown column is an error before any write); workers convert each
record with :class:`RowConverter`, which uses the model fields themselves
(``to_python`` and the field's validators: max length, decimal digits, integer
range), so values reach the database already checked. A record that cannot be
converted is *rejected* — counted, reported with its line and field — and the
rest of its chunk is still written.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bulkpar.errors import FieldNotFoundError, UsageError, did_you_mean
from bulkpar.lookups import parse_bool


class RowRejected(Exception):
    """A record cannot be written; ``field`` names the culprit when there is one."""

    def __init__(self, field: str | None, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


@dataclass(frozen=True)
class Reject:
    """A rejected record, as written to the reject file.

    ``line`` is the record's line (or item) number in the input; None for
    objects selected from the database, whose ``row`` holds their ``pk``.
    """

    line: int | None
    row: dict[str, Any]
    field: str | None
    error: str
    traceback: str | None = None


@dataclass(frozen=True)
class ColumnPlan:
    """How input keys map to fields (picklable; resolved once in the parent).

    Attributes:
        rename: ``(input key, field name)`` pairs from ``--map``.
        consts: ``(field name, raw value)`` set on every record (``--const``).
        supplied: the fields the input supplies, from its header or first record.
        ignore_unknown: drop keys that map to no field instead of rejecting the record.
    """

    rename: tuple[tuple[str, str], ...] = ()
    consts: tuple[tuple[str, Any], ...] = ()
    supplied: tuple[str, ...] = ()
    ignore_unknown: bool = False


def _lookup_table(model: type[Any]) -> dict[str, Any]:
    """Every name an input column may use for a concrete field: name, attname, db_column."""
    table: dict[str, Any] = {}
    for field in model._meta.concrete_fields:
        for key in (field.column, field.attname, field.name):
            table[key] = field
    return table


def plan_columns(
    model: type[Any],
    keys: Iterable[str],
    *,
    rename: Mapping[str, str] | None = None,
    consts: Mapping[str, Any] | None = None,
    ignore_unknown: bool = False,
    source: str = "input",
) -> ColumnPlan:
    """Check the input's keys (CSV header or first record) against the model's fields.

    Args:
        keys: the input's column names.
        rename: ``--map column=field`` renames.
        consts: ``--const field=value`` values, raw.
        ignore_unknown: drop columns that match no field.
        source: the input's name, for messages.

    Raises:
        FieldNotFoundError: a column or ``--map``/``--const`` target matches no field.
        UsageError: two columns set the same field, a ``--map`` column the
            input does not have, or a ``--const`` value its field refuses.
    """
    table = _lookup_table(model)
    rename = dict(rename or {})
    keys = list(keys)
    names = sorted({f.name for f in model._meta.concrete_fields})
    for column, target in rename.items():
        if target not in table:
            raise FieldNotFoundError(
                f"--map {column}={target}: model {model._meta.label} has no field "
                f"{target!r}{did_you_mean(target, names)}"
            )
        if column not in keys:
            raise UsageError(
                f"--map {column}={target}: {source} has no column {column!r}"
                f"{did_you_mean(column, keys)} (its columns: {', '.join(keys)})"
            )
    supplied: dict[str, str] = {}
    for key in keys:
        field = table.get(rename.get(key, key))
        if field is None:
            if ignore_unknown:
                continue
            raise FieldNotFoundError(
                f"column {key!r} of {source} matches no field of {model._meta.label}"
                f"{did_you_mean(key, names)}; rename it with --map {key}=FIELD "
                "or pass --ignore-unknown"
            )
        if field.name in supplied:
            raise UsageError(
                f"columns {supplied[field.name]!r} and {key!r} of {source} both set field "
                f"{field.name!r}; drop one or --map it elsewhere"
            )
        supplied[field.name] = key
    const_pairs: list[tuple[str, Any]] = []
    for name, value in (consts or {}).items():
        field = table.get(name)
        if field is None:
            raise FieldNotFoundError(
                f"--const {name}=…: model {model._meta.label} has no field "
                f"{name!r}{did_you_mean(name, names)}"
            )
        const_pairs.append((field.name, value))
        supplied.setdefault(field.name, name)
    plan = ColumnPlan(
        rename=tuple(rename.items()),
        consts=tuple(const_pairs),
        supplied=tuple(supplied),
        ignore_unknown=ignore_unknown,
    )
    if const_pairs:
        RowConverter(model, plan, require=False)  # a bad --const fails here, before any write
    return plan


def required_fields(model: type[Any]) -> list[Any]:
    """Fields a new row must be given: no default, not nullable, not blank, not automatic."""
    required = []
    for field in model._meta.concrete_fields:
        automatic = (
            (
                field.primary_key
                and field.get_internal_type() in ("AutoField", "BigAutoField", "SmallAutoField")
            )
            or getattr(field, "auto_now", False)
            or getattr(field, "auto_now_add", False)
        )
        if automatic or field.has_default() or field.null or field.blank:
            continue
        if hasattr(field, "db_default") and field.db_default is not _no_db_default():
            continue
        required.append(field)
    return required


def _no_db_default() -> Any:
    from django.db.models.fields import NOT_PROVIDED

    return NOT_PROVIDED


class _Default:
    """Marker: the cell was empty and the field's default applies."""


DEFAULT = _Default()
_INTEGER_FIELDS = {
    "IntegerField", "BigIntegerField", "SmallIntegerField", "PositiveIntegerField",
    "PositiveSmallIntegerField", "PositiveBigIntegerField", "AutoField", "BigAutoField",
    "SmallAutoField",
}  # fmt: skip


def _range_of(validators: Sequence[Any]) -> tuple[int | None, int | None] | None:
    """(lo, hi) when the validators are nothing but constant min/max bounds."""
    from django.core.validators import MaxValueValidator, MinValueValidator

    lo = hi = None
    for validator in validators:
        limit = getattr(validator, "limit_value", None)
        if callable(limit) or type(validator) not in (MinValueValidator, MaxValueValidator):
            return None
        if type(validator) is MinValueValidator:
            lo = limit if lo is None else max(lo, limit)
        else:
            hi = limit if hi is None else min(hi, limit)
    return lo, hi


def compile_converter(field: Any, *, use_default: bool) -> Callable[[Any], Any]:
    """A function converting one raw value for ``field`` (or returning :data:`DEFAULT`).

    Common field types get a direct path (a ``str`` for a CharField, an
    ``int`` in range for an IntegerField) with the same checks and messages
    as Django's ``to_python`` + validators; every other field goes through
    ``to_python`` and ``run_validators`` themselves.
    """
    target = field.target_field if field.is_relation else field
    name = field.name
    null = field.null
    empty_allowed = target.empty_strings_allowed
    kind = type(target).__name__ if type(target).__module__.startswith("django.db") else ""
    typed = _generic(field, target)
    if kind in ("CharField", "TextField"):
        max_length = target.max_length
        if len(target.validators) == (1 if max_length is not None else 0):
            typed = _text(name, max_length)
    elif kind in _INTEGER_FIELDS:
        bounds = _range_of(target.validators)
        if bounds is not None:
            typed = _integer(name, *bounds)
    elif kind == "BooleanField" and not target.validators:
        typed = _boolean(name)

    def convert(raw: Any) -> Any:
        if raw is None or (raw == "" and not empty_allowed and isinstance(raw, str)):
            if use_default:
                return DEFAULT  # an empty cell means "not given": the default applies
            if not null:
                raise RowRejected(name, f"field {name!r} cannot be null")
            return None
        return typed(raw)

    return convert


def _text(name: str, max_length: int | None) -> Callable[[Any], Any]:
    def convert(raw: Any) -> str:
        value = raw if type(raw) is str else str(raw)
        if max_length is not None and len(value) > max_length:
            raise RowRejected(
                name,
                f"invalid value {raw!r}: Ensure this value has at most {max_length} "
                f"characters (it has {len(value)}).",
            )
        return value

    return convert


def _integer(name: str, lo: int | None, hi: int | None) -> Callable[[Any], Any]:
    def convert(raw: Any) -> int:
        kind = type(raw)
        if kind is int:
            value = raw
        elif kind is str:
            try:
                value = int(raw)
            except ValueError:
                raise RowRejected(
                    name, f"invalid value {raw!r}: “{raw}” value must be an integer."
                ) from None
        elif kind is float and raw.is_integer():
            value = int(raw)
        else:
            raise RowRejected(name, f"invalid value {raw!r}: value must be an integer.")
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise RowRejected(name, f"invalid value {raw!r}: out of range [{lo}, {hi}]")
        return value

    return convert


def _boolean(name: str) -> Callable[[Any], Any]:
    def convert(raw: Any) -> bool:
        if type(raw) is bool:
            return raw
        if isinstance(raw, str):
            try:
                return parse_bool(raw, what=f"field {name!r}")
            except UsageError as exc:
                raise RowRejected(name, str(exc)) from None
        if raw in (0, 1):
            return bool(raw)
        raise RowRejected(name, f"invalid value {raw!r}: expected true or false")

    return convert


def _generic(field: Any, target: Any) -> Callable[[Any], Any]:
    from django.core.exceptions import ValidationError
    from django.db import models

    name = field.name
    is_json = isinstance(target, models.JSONField)
    is_integer = isinstance(target, models.IntegerField)
    is_bool = isinstance(target, models.BooleanField)

    def convert(raw: Any) -> Any:
        try:
            if is_bool and isinstance(raw, str):
                value: Any = parse_bool(raw, what=f"field {name!r}")
            elif is_json:
                value = _json_value(raw)
            elif is_integer and isinstance(raw, float):
                if not raw.is_integer():
                    raise RowRejected(name, f"{raw!r} is not an integer")
                value = int(raw)
            else:
                value = target.to_python(raw)
            if isinstance(value, datetime.datetime):
                value = _aware(value)
            target.run_validators(value)
        except ValidationError as exc:
            message = "; ".join(str(m) for m in exc.messages)
            raise RowRejected(name, f"invalid value {raw!r}: {message}") from None
        except UsageError as exc:
            raise RowRejected(name, str(exc)) from None
        except (TypeError, ValueError) as exc:
            raise RowRejected(name, f"invalid value {raw!r}: {exc}") from None
        return value

    return convert


class RowConverter:
    """Converts records to ``{attname: python value}`` with the model's fields."""

    def __init__(self, model: type[Any], plan: ColumnPlan, *, require: bool = True) -> None:
        meta = model._meta
        self.model = model
        self.plan = plan
        table = _lookup_table(model)
        for key, target in plan.rename:
            table[key] = table[target]
        defaulted = {
            f for f in meta.concrete_fields
            if f.has_default() or getattr(f, "auto_now", False)
            or getattr(f, "auto_now_add", False) or f.primary_key
        }  # fmt: skip
        compiled = {
            f: compile_converter(f, use_default=f in defaulted and not f.null)
            for f in meta.concrete_fields
        }
        #: input key -> (field, attname, converter)
        self.columns = {key: (f, f.attname, compiled[f]) for key, f in table.items()}
        self.required = [(f.name, f.attname) for f in required_fields(model)] if require else []
        self.consts: dict[str, Any] = {}
        for name, raw in plan.consts:
            field = meta.get_field(name)
            try:
                value = compiled[field](raw)
            except RowRejected as exc:
                raise UsageError(f"--const {name}={raw!r}: {exc.message}") from None
            if value is not DEFAULT:
                self.consts[field.attname] = value

    def convert(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """One record's values by attname.

        Raises:
            RowRejected: an unknown key, a value the field refuses, or a
                missing required field.
        """
        out: dict[str, Any] = {}
        columns = self.columns
        for key, raw in values.items():
            entry = columns.get(key)
            if entry is None:
                if self.plan.ignore_unknown:
                    continue
                raise RowRejected(key, f"unexpected column {key!r}")
            field, attname, converter = entry
            if attname in out:
                raise RowRejected(key, f"field {field.name!r} is given twice")
            value = converter(raw)
            if value is not DEFAULT:
                out[attname] = value
        if self.consts:
            out.update(self.consts)
        for name, attname in self.required:
            value = out.get(attname)
            if value is None or value == "":
                raise RowRejected(name, f"missing required field {name!r}")
        return out


def instance_builder(model: type[Any]) -> Callable[[dict[str, Any]], Any]:
    """A function making a model instance from ``{attname: value}``, defaults filled in.

    When nothing listens to the model's ``pre_init``/``post_init`` signals the
    instance is assembled directly (what ``Model.__init__`` does, without its
    argument parsing: a third of the cost of loading a record); otherwise
    ``Model(**values)`` runs so the receivers see every instance.
    """
    from django.db.models import signals
    from django.db.models.base import ModelState

    if signals.pre_init.has_listeners(model) or signals.post_init.has_listeners(model):
        return lambda values: model(**values)
    defaults = [(f.attname, f.get_default) for f in model._meta.concrete_fields]
    new = object.__new__

    def build(values: dict[str, Any]) -> Any:
        obj = new(model)
        obj._state = ModelState()
        state = obj.__dict__
        for attname, default in defaults:
            state[attname] = values[attname] if attname in values else default()
        return obj

    return build


def _json_value(raw: Any) -> Any:
    """A JSON column's value: CSV text holding JSON is parsed, bare text stays text."""
    if not isinstance(raw, str):
        return raw
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def _aware(value: datetime.datetime) -> datetime.datetime:
    from django.conf import settings
    from django.utils import timezone

    if settings.USE_TZ and timezone.is_naive(value):
        return timezone.make_aware(value)
    return value
