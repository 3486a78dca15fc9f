"""Turning raw input records into model field values, or rejecting them.

The parent resolves the input's columns to fields once (:func:`plan_columns`,
so an unknown column is an error before any write); workers convert each
record with :class:`RowConverter`. The contract is Django's own:

* a field the record omits gets what ``Model()`` would give it (its default,
  ``''`` for a text field without one, None otherwise);
* a given value goes through the field's ``to_python``, plus the limits the
  database would enforce anyway — ``max_length`` (on SQLite too), decimal
  digits and places, the integer range of the column, NOT NULL, JSON that can
  be encoded — so a bad record is rejected before it can fail a chunk;
* the field's own ``validators`` (e-mail, URL, username, custom ones), which
  ``save()`` and ``bulk_create()`` never run, only with ``validate=True``
  (:func:`validate_instance`: ``full_clean()`` without the unique checks).

A record that cannot be converted is *rejected* — counted, reported with its
line and field — and the rest of its chunk is still written.

Text cells (CSV, ``--const``) and typed values (JSON, JSON Lines, Python)
differ in two ways: an empty cell means "no value" (NULL for a nullable
field, else the default), and a JSONField cell is JSON text to be parsed
(``null`` is JSON null), while a typed ``str`` is a JSON string and a typed
None is SQL NULL, as with ``Model(data=…)``.
"""

from __future__ import annotations

import datetime
import decimal
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from bulkpar.errors import FieldNotFoundError, UsageError, did_you_mean
from bulkpar.inputs.selection_strings import aware_datetime, parse_bool

#: The key that names a record's model (``"app_label.ModelName"``), as ``bulkpar delete``
#: archives write it: records of another model are skipped, the key itself is no field.
MODEL_KEY = "_model"


class RowRejected(Exception):
    """A record cannot be written; ``field`` names the culprit when there is one."""

    def __init__(self, field: str | None, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


class OtherModel(RowRejected):
    """A record whose ``_model`` (:data:`MODEL_KEY`) names another model than the one loaded."""


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
        text_cells: the records' values are text cells (CSV): an empty cell means
            "no value" and a JSONField cell is JSON text. False for typed sources
            (JSON, JSON Lines, Python), whose values are taken as they are.
    """

    rename: tuple[tuple[str, str], ...] = ()
    consts: tuple[tuple[str, Any], ...] = ()
    supplied: tuple[str, ...] = ()
    ignore_unknown: bool = False
    text_cells: bool = False


class TextCell(str):
    """A value written as text, like a CSV cell: ``--const`` values on the command line.

    Converted by the text-cell rules (see :class:`ColumnPlan`) whatever the
    input's format.
    """

    __slots__ = ()


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
    text_cells: bool = False,
    source: str = "input",
) -> ColumnPlan:
    """Check the input's keys (CSV header or first record) against the model's fields.

    Args:
        keys: the input's column names.
        rename: ``--map column=field`` renames.
        consts: ``--const field=value`` values, raw.
        ignore_unknown: drop columns that match no field.
        text_cells: the values are CSV text cells (see :class:`ColumnPlan`).
        source: the input's name, for messages.

    Raises:
        FieldNotFoundError: a column or ``--map``/``--const`` target matches no field.
        UsageError: two columns set the same field, a ``--map`` column the
            input does not have, or a ``--const`` value its field refuses.
    """
    table = _lookup_table(model)
    rename = dict(rename or {})
    keys = list(keys)
    if MODEL_KEY in keys:
        # an archive of several models: its first record may be another model's, but
        # every record carries all the concrete fields of its own model
        keys = [f.attname for f in model._meta.concrete_fields]
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
        text_cells=text_cells,
    )
    if const_pairs:
        RowConverter(model, plan, require=False)  # a bad --const fails here, before any write
    return plan


def is_database_filled(field: Any) -> bool:
    """Whether the database gives this field its value when an INSERT omits it.

    An auto-increment primary key (the ``AutoField`` family), a ``db_default``
    or a generated column; every other field is filled in Python, as
    ``Model()`` does.
    """
    from django.db.models.fields import AutoFieldMixin

    return (
        (field.primary_key and isinstance(field, AutoFieldMixin))
        or bool(getattr(field, "has_db_default", lambda: False)())
        or bool(getattr(field, "generated", False))
    )


def _is_automatic(field: Any) -> bool:
    return (
        is_database_filled(field)
        or getattr(field, "auto_now", False)
        or getattr(field, "auto_now_add", False)
    )


def required_fields(model: type[Any]) -> list[Any]:
    """Fields a new row cannot do without: NOT NULL, and ``Model()`` would give them None.

    That is a field without a default that is not filled automatically and
    is no text field (``Model()`` gives those ``''``). A primary key that the
    database does not fill is always required: ``''`` is no key.
    """
    required = []
    for field in model._meta.concrete_fields:
        if field.null or field.has_default() or _is_automatic(field):
            continue
        if field.empty_strings_allowed and not field.primary_key:
            continue
        required.append(field)
    return required


def _uses_default(field: Any) -> bool:
    """None (or an empty value) for this field means "its default", not NULL."""
    return not field.null and (field.has_default() or _is_automatic(field))


class _Default:
    """Marker: the cell was empty and the field's default applies."""


DEFAULT = _Default()

#: Digits a float carries exactly (``repr`` round-trips any 15-digit decimal).
FLOAT_DIGITS = 15


def json_null() -> Any:
    """JSON ``null`` for a JSONField, as Django spells it: ``Value(None, JSONField())``."""
    from django.db.models import JSONField, Value

    return Value(None, JSONField())


def _is_json_null(value: Any) -> bool:
    from django.db.models import JSONField, Value

    return (
        isinstance(value, Value)
        and value.value is None
        and isinstance(value.output_field, JSONField)
    )


def compile_converter(
    field: Any, *, use_default: bool, text_cells: bool = False, connection: Any = None
) -> Callable[[Any], Any]:
    """A function converting one raw value for ``field`` (or returning :data:`DEFAULT`).

    None means NULL: the default for a NOT NULL field that has one
    (``use_default``), a reject for one that has none. An empty string is "no
    value" for a field that holds no empty strings (a number, a date) and, in
    a text cell, for every field: NULL when nullable, else the default, else
    ``''`` for a text field (what ``Model()`` gives it). Other values go
    through the field's ``to_python`` and the limits the database enforces
    (see the module docstring); ``connection`` gives the integer ranges
    (default: the default database).
    """
    target = field.target_field if field.is_relation else field
    name = field.name
    null = field.null
    # a typed '' for a number or a date means "no value"; for JSON it is the JSON string ""
    empty_allowed = target.empty_strings_allowed or target.get_internal_type() == "JSONField"
    blank_text = field.empty_strings_allowed and not field.primary_key
    typed = _typed(field, target, text_cells, connection)

    def missing(raw: Any) -> Any:
        if null:
            return None
        if use_default:
            return DEFAULT  # "not given": the default applies
        if raw is None:
            raise RowRejected(name, f"field {name!r} cannot be null (it has no default)")
        raise RowRejected(
            name, f"missing required field {name!r} (an empty value; it is NOT NULL, no default)"
        )

    def convert(raw: Any) -> Any:
        if raw is None:
            return missing(raw)
        if raw == "" and isinstance(raw, str):
            if text_cells:
                if null or use_default or not blank_text:
                    return missing(raw)
                return ""
            if not empty_allowed:
                return missing(raw)
        return typed(raw)

    return convert


def _typed(field: Any, target: Any, text_cells: bool, connection: Any) -> Callable[[Any], Any]:
    """The converter of a given (non-empty) value: a direct path for common fields."""
    from django.db import models

    name = field.name
    plain = type(target).to_python
    if isinstance(target, models.JSONField):
        return _json(name, target, text_cells)
    if isinstance(target, models.DecimalField):
        return _decimal(name, target)
    if isinstance(target, models.BooleanField) and plain is models.BooleanField.to_python:
        return _boolean(name)
    if isinstance(target, models.IntegerField):
        lo, hi = integer_range(target, connection)
        if plain is models.IntegerField.to_python:
            return _integer(name, lo, hi)
        return _generic(name, target, lambda value: _check_range(name, value, lo, hi))
    if isinstance(target, models.CharField):
        max_length = target.max_length
        if plain is models.CharField.to_python:
            return _text(name, max_length)
        return _generic(name, target, lambda value: _check_length(name, value, max_length))
    if isinstance(target, models.TextField) and plain is models.TextField.to_python:
        return _text(name, None)
    return _generic(name, target)


def integer_range(target: Any, connection: Any) -> tuple[int | None, int | None]:
    """The column's range, as Django's own integer validators take it from the backend.

    SQLite stores every integer in 64 bits (a larger one silently becomes a
    float); Django before 5.0 reports no range for it, so the 64-bit range is
    used there.
    """
    if connection is None:
        from django.db import connection as default

        connection = default
    internal = target.get_internal_type()
    try:
        lo, hi = connection.ops.integer_field_range(internal)
    except KeyError:  # a custom internal type the backend has no range for
        return None, None
    if connection.vendor == "sqlite" and lo is None and hi is None:
        lo = 0 if internal.startswith("Positive") else -(2**63)
        hi = 2**63 - 1
    return lo, hi


def _check_range(name: str, value: Any, lo: int | None, hi: int | None) -> None:
    if value is not None and ((lo is not None and value < lo) or (hi is not None and value > hi)):
        raise RowRejected(name, f"invalid value {value!r}: out of range [{lo}, {hi}]")


def _check_length(name: str, value: Any, max_length: int | None) -> None:
    if max_length is not None and isinstance(value, str) and len(value) > max_length:
        raise RowRejected(
            name,
            f"invalid value {value!r}: Ensure this value has at most {max_length} "
            f"characters (it has {len(value)}).",
        )


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


def _decimal(name: str, target: Any) -> Callable[[Any], Any]:
    """Exact decimals: a float is read by its shortest repr (JSON ``0.1`` is 0.1), never rounded.

    A value with more digits or places than the column holds is rejected, as
    Django's DecimalValidator would (trailing zeros do not count: ``1.50``
    fits two places and one). A float with more than :data:`FLOAT_DIGITS`
    significant digits may not be the number its source wrote, so it is
    rejected too: give such numbers as strings.
    """
    from django.core.exceptions import ValidationError
    from django.core.validators import DecimalValidator

    check = DecimalValidator(target.max_digits, target.decimal_places)

    def convert(raw: Any) -> decimal.Decimal:
        try:
            # Django's to_python rounds a float to max_digits: 0.1 → 0.1000000000000
            value = decimal.Decimal(repr(raw)) if isinstance(raw, float) else target.to_python(raw)
            if not value.is_finite():
                raise RowRejected(name, f"invalid value {raw!r}: not a finite number")
            check(_significant(value))
        except ValidationError as exc:
            message = "; ".join(str(m) for m in exc.messages)
            raise RowRejected(name, f"invalid value {raw!r}: {message}") from None
        except (TypeError, ValueError, decimal.InvalidOperation) as exc:
            raise RowRejected(name, f"invalid value {raw!r}: {exc}") from None
        if isinstance(raw, float) and len(_significant(value).as_tuple().digits) > FLOAT_DIGITS:
            raise RowRejected(
                name,
                f"invalid value {raw!r}: a float carries at most {FLOAT_DIGITS} exact digits; "
                "give the number as a string",
            )
        return value

    return convert


def _significant(value: decimal.Decimal) -> decimal.Decimal:
    """``value`` without trailing fractional zeros (``1.2300`` → ``1.23``), for digit counts."""
    if value.is_zero():
        return decimal.Decimal(0)
    sign, digits, exponent = value.as_tuple()
    kept = list(digits)
    assert isinstance(exponent, int)  # finite
    while exponent < 0 and kept[-1] == 0:
        kept.pop()
        exponent += 1
    return decimal.Decimal((sign, tuple(kept), exponent))


def _json(name: str, target: Any, text_cells: bool) -> Callable[[Any], Any]:
    """A JSONField's value: a text cell is JSON text; a typed value is the JSON value itself.

    In a text cell ``null`` is JSON null (``Value(None, JSONField())``) and
    text that is not JSON is rejected. A typed ``str`` is a JSON string, as
    ``Model(data="…")`` stores it; a typed value must be JSON-encodable
    (without NaN or infinities, which PostgreSQL and MariaDB refuse).
    """
    encoder = target.encoder
    decoder = target.decoder

    def convert(raw: Any) -> Any:
        if text_cells and isinstance(raw, str):
            try:
                value = json.loads(raw, cls=decoder)
            except json.JSONDecodeError as exc:
                raise RowRejected(
                    name,
                    f"invalid value {raw!r}: not valid JSON ({exc.msg}); "
                    'a JSON string needs double quotes, e.g. "text"',
                ) from None
            return json_null() if value is None else value
        if type(raw) in (str, int, bool) or _is_json_null(raw):
            return raw
        try:
            json.dumps(raw, cls=encoder, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise RowRejected(name, f"invalid value {raw!r}: not JSON-encodable ({exc})") from None
        return raw

    return convert


def _generic(
    name: str, target: Any, check: Callable[[Any], None] | None = None
) -> Callable[[Any], Any]:
    from django.core.exceptions import ValidationError

    def convert(raw: Any) -> Any:
        try:
            value = target.to_python(raw)
            if isinstance(value, datetime.datetime):
                value = aware_datetime(value)
        except ValidationError as exc:
            message = "; ".join(str(m) for m in exc.messages)
            raise RowRejected(name, f"invalid value {raw!r}: {message}") from None
        except UsageError as exc:
            raise RowRejected(name, str(exc)) from None
        except (TypeError, ValueError) as exc:
            raise RowRejected(name, f"invalid value {raw!r}: {exc}") from None
        if check is not None:
            check(value)
        return value

    return convert


class RowConverter:
    """Converts records to ``{attname: python value}`` with the model's fields.

    Args:
        require: reject a record that omits a field a new row cannot do
            without (:func:`required_fields`).
        connection: the database written to (its integer ranges); default:
            the default database.
    """

    def __init__(
        self, model: type[Any], plan: ColumnPlan, *, require: bool = True, connection: Any = None
    ) -> None:
        meta = model._meta
        self.model = model
        self.label = meta.label
        self.plan = plan
        table = _lookup_table(model)
        for key, target in plan.rename:
            table[key] = table[target]

        def compiled_for(field: Any, text_cells: bool) -> Callable[[Any], Any]:
            return compile_converter(
                field,
                use_default=_uses_default(field),
                text_cells=text_cells,
                connection=connection,
            )

        compiled = {f: compiled_for(f, plan.text_cells) for f in meta.concrete_fields}
        #: input key -> (field, attname, converter)
        self.columns = {key: (f, f.attname, compiled[f]) for key, f in table.items()}
        self.required = [(f.name, f.attname) for f in required_fields(model)] if require else []
        self.consts: dict[str, Any] = {}
        for name, raw in plan.consts:
            field = meta.get_field(name)
            convert = compiled[field]
            if isinstance(raw, TextCell) and not plan.text_cells:
                convert = compiled_for(field, True)
            try:
                value = convert(raw)
            except RowRejected as exc:
                raise UsageError(f"--const {name}={raw!r}: {exc.message}") from None
            if value is not DEFAULT:
                self.consts[field.attname] = value

    def convert(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """One record's values by attname; the fields it omits are left out.

        Raises:
            OtherModel: the record's ``_model`` names another model.
            RowRejected: an unknown key, a value the field refuses, or a
                missing required field.
        """
        out: dict[str, Any] = {}
        columns = self.columns
        for key, raw in values.items():
            entry = columns.get(key)
            if entry is None and key == MODEL_KEY:
                if raw != self.label:
                    raise OtherModel(key, f"a record of {raw!r}, not {self.label}")
                continue
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
            if attname not in out:
                raise RowRejected(name, f"missing required field {name!r} (NOT NULL, no default)")
        return out


def validate_instance(obj: Any, *, exclude: Iterable[str] | None = None, database: str) -> None:
    """``full_clean()`` without the unique checks: ``clean_fields(exclude)``, then ``clean()``.

    Runs what ``save()`` and ``bulk_create()`` never run: each field's own
    validators (e-mail, URL, username, custom ones), ``choices``, ``blank``,
    that a foreign key's target exists (one query on ``database``), and the
    model's ``clean()``. Unique and other constraints are left to the database.

    Raises:
        RowRejected: naming the first invalid field (None for a ``clean()``
            error that names none), with every message.
    """
    from django.core.exceptions import NON_FIELD_ERRORS, ValidationError

    state = obj._state
    previous = state.db
    state.db = previous or database  # a foreign key's existence is checked there
    try:
        obj.clean_fields(exclude=list(exclude) if exclude is not None else None)
        obj.clean()
    except ValidationError as exc:
        if not hasattr(exc, "error_dict"):
            raise RowRejected(None, "; ".join(exc.messages)) from None
        errors = exc.message_dict
        first = next(iter(errors))
        message = "; ".join(
            f"{'record' if name == NON_FIELD_ERRORS else name}: {' '.join(messages)}"
            for name, messages in errors.items()
        )
        raise RowRejected(None if first == NON_FIELD_ERRORS else first, message) from None
    finally:
        state.db = previous


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
