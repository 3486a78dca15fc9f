"""Partitions: route input records by their unique key, so a key meets itself in input order.

When one key appears in several chunks, a serial loop's rule — the last record
in the input wins (for ``create --ignore-conflicts``, the first) — holds only
if those chunks commit in input order. The planner sends every record to one
of a few partitions by a stable hash of its key, and the runner runs at most
one chunk of a partition at a time, in input order. Two workers then never
write the same row at once either (no deadlocks between them).

The key is hashed on its *converted* value, as the database compares it:
``"01"`` and ``1`` for an IntegerField are one key; on MariaDB/MySQL, whose
default collations ignore case, accents and trailing spaces, text is folded
first. Folding more than the database does only makes two keys share a
partition, which is harmless; folding less would let one row be written from
two partitions, so the fold errs on the wide side.
"""

from __future__ import annotations

import datetime
import decimal
import json
import unicodedata
import zlib
from collections.abc import Callable, Sequence
from typing import Any

from bulkpar.inputs.conversion import ColumnPlan
from bulkpar.inputs.sources import Record


def partition_count(workers: int) -> int:
    """Partitions for a pool of ``workers``: twice as many, so a busy partition starves no one.

    The planner buffers up to one chunk per partition, so memory stays within
    ``partitions × chunk`` records.
    """
    return 2 * max(workers, 1)


def collation_key(value: Any, vendor: str) -> Any:
    """``value`` as the database's equality sees it (text folded on MariaDB/MySQL)."""
    if vendor == "mysql" and isinstance(value, str):
        decomposed = unicodedata.normalize("NFKD", value)
        plain = "".join(c for c in decomposed if not unicodedata.combining(c))
        return plain.casefold().rstrip()
    return value


def _canonical(value: Any) -> str:
    """A text form equal for values the database stores as equal."""
    if value is None:
        return "\x00null"
    if isinstance(value, decimal.Decimal):
        return str(value.normalize()) if value.is_finite() else str(value)
    if isinstance(value, datetime.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(datetime.timezone.utc).replace(tzinfo=None)
        return value.isoformat()
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True, default=str)
    return str(value)


_NULL = _canonical(None)
_MISSING = object()


def _key_text(field: Any, names: Sequence[str], vendor: str) -> Callable[[Any], str]:
    """A function from a record's values to the text of ``field``'s converted value.

    ``names`` are the input keys that may hold the field. Plain text and
    integer fields skip ``to_python`` when the value already has its type.
    """
    from django.conf import settings
    from django.utils import timezone

    target = field.target_field if field.is_relation else field
    to_python = target.to_python
    empty_allowed = target.empty_strings_allowed
    zone = timezone.get_default_timezone() if settings.USE_TZ else None
    kind = type(target).__name__ if type(target).__module__.startswith("django.db") else ""
    text_kind = kind in ("CharField", "TextField")
    int_kind = kind in _INTEGER_FIELDS
    fold = vendor == "mysql"
    hint = [names[0] if names else ""]  # the key the last record used: usually all use it

    def text(values: Any) -> str:
        raw = values.get(hint[0], _MISSING)
        if raw is _MISSING:
            raw = None
            for name in names:
                if name in values:
                    raw, hint[0] = values[name], name
                    break
        if raw is None or (raw == "" and not empty_allowed):
            return _NULL
        if text_kind and type(raw) is str:
            return collation_key(raw, vendor) if fold else raw
        if int_kind and type(raw) is int:
            return str(raw)
        try:
            if int_kind and type(raw) is str:
                return str(int(raw))
            value = to_python(raw)
            if isinstance(value, datetime.datetime) and value.tzinfo is None and zone:
                value = value.replace(tzinfo=zone)
            return _canonical(collation_key(value, vendor))
        except Exception:  # the worker rejects it; any partition will do
            return f"\x00raw {raw!r}"

    return text


_INTEGER_FIELDS = {
    "IntegerField", "BigIntegerField", "SmallIntegerField", "PositiveIntegerField",
    "PositiveSmallIntegerField", "PositiveBigIntegerField", "AutoField", "BigAutoField",
    "SmallAutoField",
}  # fmt: skip


class KeyPartitioner:
    """Maps a raw input record to a partition by a stable hash of its converted key.

    Runs in the parent, on every record, so it converts only the key fields
    (with the field's ``to_python``). A value that does not convert is hashed
    as it is: its record goes to some partition and the worker rejects it.
    The hash is CRC-32, not Python's salted ``hash()``, so the same input is
    cut into the same chunks in every process (checkpoints resume by chunk).
    """

    def __init__(
        self,
        model: type[Any],
        columns: ColumnPlan,
        fields: Sequence[str],
        partitions: int,
        *,
        vendor: str,
    ) -> None:
        meta = model._meta
        self.partitions = partitions
        self.vendor = vendor
        table = {}
        for field in meta.concrete_fields:
            for key in (field.column, field.attname, field.name):
                table[key] = field
        consts = {name for name, _ in columns.consts}
        renamed = dict(columns.rename)
        self._texts: list[Callable[[Any], str]] = []
        for name in fields:
            if name in consts:
                continue  # the same value on every record: it cannot tell records apart
            field = meta.get_field(name)
            names = {field.name, field.attname, field.column} - renamed.keys()
            names |= {key for key, to in renamed.items() if table.get(to) is field}
            self._texts.append(_key_text(field, sorted(names), vendor))

    def key(self, record: Record) -> str:
        """The record's key as text, equal for records that name the same row."""
        values = record.values
        return "\x1f".join([text(values) for text in self._texts])

    def __call__(self, record: Record) -> int:
        """The partition (``0 ≤ p < partitions``) of ``record``."""
        data = self.key(record).encode("utf-8", "surrogatepass")
        return zlib.crc32(data) % self.partitions
