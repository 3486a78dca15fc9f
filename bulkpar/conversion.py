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
from collections.abc import Iterable, Mapping
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
        UsageError: two columns set the same field.
    """
    table = _lookup_table(model)
    rename = dict(rename or {})
    names = sorted({f.name for f in model._meta.concrete_fields})
    for column, target in rename.items():
        if target not in table:
            raise FieldNotFoundError(
                f"--map {column}={target}: model {model._meta.label} has no field "
                f"{target!r}{did_you_mean(target, names)}"
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
    return ColumnPlan(
        rename=tuple(rename.items()),
        consts=tuple(const_pairs),
        supplied=tuple(supplied),
        ignore_unknown=ignore_unknown,
    )


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


class RowConverter:
    """Converts records to ``{attname: python value}`` with the model's fields."""

    def __init__(self, model: type[Any], plan: ColumnPlan, *, require: bool = True) -> None:
        meta = model._meta
        self.model = model
        self.plan = plan
        table = _lookup_table(model)
        renamed = dict(plan.rename)
        self.columns = dict(table)
        for key, target in renamed.items():
            self.columns[key] = table[target]
        self.required = required_fields(model) if require else []
        self.defaulted = {
            f for f in meta.concrete_fields
            if f.has_default() or getattr(f, "auto_now", False)
            or getattr(f, "auto_now_add", False) or f.primary_key
        }  # fmt: skip
        self.consts: dict[str, Any] = {}
        for name, raw in plan.consts:
            field = meta.get_field(name)
            try:
                self.consts[field.attname] = self.convert_value(field, raw)
            except RowRejected as exc:
                raise UsageError(f"--const {name}={raw!r}: {exc.message}") from None

    def convert(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """One record's values by attname.

        Raises:
            RowRejected: an unknown key, a value the field refuses, or a
                missing required field.
        """
        out: dict[str, Any] = {}
        columns = self.columns
        for key, raw in values.items():
            field = columns.get(key)
            if field is None:
                if self.plan.ignore_unknown:
                    continue
                raise RowRejected(key, f"unexpected column {key!r}")
            if field.attname in out:
                raise RowRejected(key, f"field {field.name!r} is given twice")
            if _is_blank(field, raw) and not field.null and field in self.defaulted:
                continue  # an empty cell means "not given": the default applies
            out[field.attname] = self.convert_value(field, raw)
        out.update(self.consts)
        for field in self.required:
            value = out.get(field.attname)
            if value is None or value == "":
                raise RowRejected(field.name, f"missing required field {field.name!r}")
        return out

    @staticmethod
    def convert_value(field: Any, raw: Any) -> Any:
        """Convert one raw value (CSV text or a JSON value) for ``field``."""
        from django.core.exceptions import ValidationError
        from django.db import models

        target = field.target_field if field.is_relation else field
        if isinstance(raw, str) and raw == "" and not target.empty_strings_allowed:
            raw = None  # an empty CSV cell in a non-text column means NULL
        if raw is None:
            if not field.null:
                raise RowRejected(field.name, f"field {field.name!r} cannot be null")
            return None
        try:
            if isinstance(target, models.BooleanField) and isinstance(raw, str):
                value: Any = parse_bool(raw, what=f"field {field.name!r}")
            elif isinstance(target, models.JSONField):
                value = _json_value(raw)
            elif isinstance(target, models.IntegerField) and isinstance(raw, float):
                if not raw.is_integer():
                    raise RowRejected(field.name, f"{raw!r} is not an integer")
                value = int(raw)
            else:
                value = target.to_python(raw)
            if isinstance(value, datetime.datetime):
                value = _aware(value)
            target.run_validators(value)
        except ValidationError as exc:
            message = "; ".join(str(m) for m in exc.messages)
            raise RowRejected(field.name, f"invalid value {raw!r}: {message}") from None
        except UsageError as exc:
            raise RowRejected(field.name, str(exc)) from None
        except (TypeError, ValueError) as exc:
            raise RowRejected(field.name, f"invalid value {raw!r}: {exc}") from None
        return value


def _is_blank(field: Any, raw: Any) -> bool:
    if raw is None:
        return True
    target = field.target_field if field.is_relation else field
    return raw == "" and not target.empty_strings_allowed


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
