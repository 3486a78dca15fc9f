"""Input records for ``create``, ``upsert`` and ``save``: files, stdin, iterables.

Every reader is a stream: it yields :class:`Record` objects one at a time and
never holds the input in memory, so a 10-million-row file costs what one chunk
costs. Formats: CSV (header row), JSON Lines, JSON (a top-level array, parsed
incrementally with ijson); gzip-compressed files by their ``.gz`` suffix.
CSV fields may be as large as the platform allows (Python's ``csv`` module
stops at 128 KiB by default). Parquet files and Arrow tables are read by
:mod:`bulkpar.inputs.arrow`, pandas DataFrames by :mod:`bulkpar.inputs.dataframes`;
:func:`as_source` picks the reader.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import re
import sys
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

from bulkpar.errors import InputError, UsageError

try:  # a wheel on every common platform; json alone where it is missing
    import orjson as _orjson
except ImportError:  # pragma: no cover - orjson is a dependency
    _orjson = None  # type: ignore[assignment]

FORMATS = ("csv", "jsonl", "json", "parquet")
#: The formats :class:`FileSource` reads (Parquet has a reader of its own).
TEXT_FORMATS = ("csv", "jsonl", "json")
_SUFFIXES = {
    ".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json",
    ".parquet": "parquet", ".pq": "parquet",
}  # fmt: skip
#: The largest CSV field read (the ``csv`` module's own default is 128 KiB).
CSV_FIELD_LIMIT = min(2**31 - 1, sys.maxsize)
_DELIMITER_NAMES = {"tab": "\t", "\\t": "\t"}


def parse_delimiter(delimiter: str) -> str:
    """The CSV delimiter ``--delimiter`` names: one character, or ``tab`` / ``\\t``.

    Raises:
        UsageError: not a single character, or a quote or line break.
    """
    char = _DELIMITER_NAMES.get(delimiter.lower(), delimiter)
    if len(char) != 1 or char in '"\r\n':
        raise UsageError(
            f"--delimiter {delimiter!r}: give one character, e.g. ';' or '|', or 'tab'"
        )
    return char


#: An integer literal orjson would turn into a float (it has 64-bit integers only).
_LONG_DIGITS = re.compile(rb"[0-9]{19}")
_MAYBE_LOSSY = (float, dict, list)


def parse_json_line(line: bytes) -> Any:
    """One JSON value, as :func:`json.loads` reads it, at orjson's speed where they agree.

    orjson parses a line about four times faster, but refuses what ``json``
    accepts (NaN and Infinity, lone surrogates, a byte-order mark, other
    encodings) and reads an integer beyond 64 bits as a float, silently. A
    line whose values hold a float (or a nested object or array) and a run
    of 19 or more digits, and any line orjson refuses, is read by ``json``
    instead, so the values are always ``json``'s.

    Raises:
        json.JSONDecodeError: the line is not JSON (``json``'s own message).
    """
    if _orjson is None:
        return json.loads(line)
    try:
        value = _orjson.loads(line)
    except _orjson.JSONDecodeError:
        return json.loads(line)
    # only a float can be a too-long integer: look at the text when there is one
    if type(value) is dict:
        if not any(type(v) in _MAYBE_LOSSY for v in value.values()):
            return value
    elif type(value) not in _MAYBE_LOSSY:
        return value
    return json.loads(line) if _LONG_DIGITS.search(line) else value


def check_delimiter(delimiter: str | None, path: str, format: str) -> None:
    """Refuse ``--delimiter`` for an input that is not read as CSV.

    Raises:
        UsageError: naming the input and the format it is read as.
    """
    if delimiter is not None and format != "csv":
        raise UsageError(
            f"--delimiter goes with CSV input; {path if path != '-' else 'stdin'} "
            f"is read as {format}"
        )


@dataclass(frozen=True)
class Record:
    """One input record: where it came from and its raw values.

    ``line`` is the record's line in a CSV or JSON Lines file, its item number
    in a JSON array, its row number in a Parquet file, table or DataFrame, or
    its position in an iterable; 1-based.
    """

    line: int
    values: dict[str, Any]


class Source(Protocol):
    """What ``create``, ``upsert`` and ``save`` read records from.

    Attributes:
        format: ``csv``, ``jsonl``, ``json``, ``parquet``, ``arrow``, ``pandas``
            or ``python``; only CSV holds text cells (see
            :class:`bulkpar.inputs.conversion.ColumnPlan`).
        total_bytes: the input's size for a progress bar in bytes (None: count rows).
    """

    format: str
    total_bytes: int | None

    @property
    def name(self) -> str:
        """How the input is named in messages."""
        ...

    def bytes_read(self) -> int | None:
        """How far the reading is, in bytes (None when not counted in bytes)."""
        ...

    def identity(self) -> dict[str, Any]:
        """What identifies the input in a checkpoint's job fingerprint."""
        ...

    def __iter__(self) -> Iterator[Record]: ...


#: Rows a columnar input (Parquet, Arrow, pandas) turns into Python values at a time:
#: what one batch of records holds in memory.
BATCH_ROWS = 10_000


def records_from_columns(
    names: Sequence[str], columns: Sequence[Sequence[Any]], first_line: int, source: str
) -> Iterator[Record]:
    """Records zipped from equally long columns of values, numbered from ``first_line``.

    Columnar inputs (Parquet, Arrow, pandas) convert a column at a time,
    which is far cheaper than a value at a time.

    Raises:
        InputError: a column name repeats (Arrow and pandas allow it; a record cannot).
    """
    if len(set(names)) != len(names):
        repeated = sorted({n for n in names if names.count(n) > 1})
        raise InputError(
            f"{source} has more than one column named {', '.join(map(repr, repeated))}; "
            "rename or drop the extra columns"
        )
    if not names:
        raise InputError(f"{source} has no columns: nothing to load")
    for line, values in enumerate(zip(*columns, strict=True), start=first_line):
        yield Record(line, dict(zip(names, values, strict=True)))


def guess_format(path: str) -> str:
    """The format a file name implies (``data.jsonl.gz`` → ``jsonl``).

    Raises:
        UsageError: the suffix names no known format (pass ``--format``).
    """
    try:
        return _SUFFIXES[_suffix(path)]
    except KeyError:
        raise UsageError(
            f"cannot tell the format of {path!r} from its name; pass --format {'|'.join(FORMATS)}"
        ) from None


class FileSource:
    """Records read from a file (or ``-`` for stdin) in one of :data:`TEXT_FORMATS`.

    Attributes:
        path: the file name, or ``"-"`` for standard input.
        format: ``csv``, ``jsonl`` or ``json``.
        delimiter: the CSV field separator (``,`` unless given).
        total_bytes: the file's size on disk (None for stdin), for progress.
    """

    def __init__(self, path: str, format: str | None = None, delimiter: str | None = None) -> None:
        if path != "-" and not os.path.exists(path):
            raise UsageError(
                f"input file {path!r} does not exist; "
                "give a path to a CSV, JSON Lines, JSON or Parquet file, or - for stdin"
            )
        if path == "-" and format is None:
            raise UsageError("reading stdin (--input -) needs --format csv|jsonl|json")
        if format is not None and format not in FORMATS:
            raise UsageError(f"unknown format {format!r}: use one of {', '.join(FORMATS)}")
        self.path = path
        self.format = format or guess_format(path)
        if self.format not in TEXT_FORMATS:
            raise UsageError(
                f"{path!r} is read as {self.format}: pass the path itself, or a "
                "bulkpar.inputs.arrow.ParquetSource"
            )
        check_delimiter(delimiter, path, self.format)
        self.delimiter = "," if delimiter is None else parse_delimiter(delimiter)
        self.total_bytes: int | None = None
        self._raw: IO[bytes] | None = None
        if path != "-":
            try:
                self.total_bytes = os.path.getsize(path)
                with open(path, "rb"):
                    pass
            except OSError as exc:
                raise InputError(
                    f"cannot read input file {path!r}: {exc.strerror or exc}; "
                    "check the path and its permissions"
                ) from None

    @property
    def name(self) -> str:
        """How the input is named in messages."""
        return "stdin" if self.path == "-" else self.path

    def bytes_read(self) -> int | None:
        """Bytes of the file consumed so far (compressed bytes for .gz)."""
        if self._raw is None or self.path == "-":
            return None
        try:
            return self._raw.tell()
        except (OSError, ValueError):
            return None

    def identity(self) -> dict[str, Any]:
        """What identifies this input for a job fingerprint.

        Not the file's size or modification time: a checkpoint checks the
        records it skips against their digests, so a file rewritten with the
        same content still resumes, and one changed in place is refused.
        """
        identity: dict[str, Any] = {
            "path": "-" if self.path == "-" else os.path.abspath(self.path),
            "format": self.format,
        }
        if self.delimiter != ",":
            identity["delimiter"] = self.delimiter
        return identity

    def __iter__(self) -> Iterator[Record]:
        raw: IO[bytes] = sys.stdin.buffer if self.path == "-" else open(self.path, "rb")  # noqa: SIM115
        self._raw = raw
        stream: IO[bytes] = (
            gzip.GzipFile(fileobj=raw)  # type: ignore[assignment]
            if self.path.endswith(".gz")
            else raw
        )
        try:
            yield from self._records(stream)
        except (OSError, EOFError, zlib.error) as exc:
            raise InputError(
                f"cannot read {self.name}: {exc} (a truncated or corrupt gzip file?)"
            ) from None
        except UnicodeDecodeError as exc:
            raise InputError(
                f"{self.name} is not valid UTF-8 ({exc.reason} at byte {exc.start}); "
                "convert it to UTF-8 first"
            ) from None
        finally:
            if raw is not sys.stdin.buffer:
                raw.close()

    def _records(self, stream: IO[bytes]) -> Iterator[Record]:
        if self.format == "csv":
            yield from self._csv(stream)
        elif self.format == "jsonl":
            yield from self._jsonl(stream)
        else:
            yield from self._json(stream)

    def _csv(self, stream: IO[bytes]) -> Iterator[Record]:
        text = io.TextIOWrapper(stream, encoding="utf-8-sig", newline="")
        csv.field_size_limit(CSV_FIELD_LIMIT)
        reader = csv.reader(text, delimiter=self.delimiter)
        try:
            yield from self._csv_rows(reader)
        except csv.Error as exc:
            hint = (
                f" (the limit is {CSV_FIELD_LIMIT} characters: a quote left open?)"
                if "field limit" in str(exc)
                else ""
            )
            raise InputError(f"{self.name}, line {reader.line_num}: {exc}{hint}") from None

    def _csv_rows(self, reader: Any) -> Iterator[Record]:
        try:
            header = next(reader)
        except StopIteration:
            return
        header = [h.strip() for h in header]
        if len(set(header)) != len(header):
            raise InputError(f"{self.name}: the CSV header repeats a column name: {header}")
        width = len(header)
        line = reader.line_num
        for row in reader:
            start, line = line + 1, reader.line_num
            if not row:
                continue
            if len(row) != width:
                separator = "commas" if self.delimiter == "," else repr(self.delimiter)
                raise InputError(
                    f"{self.name}, line {start}: {len(row)} fields where the header has "
                    f"{width}; fix the row or quote fields containing {separator}"
                )
            yield Record(start, dict(zip(header, row, strict=True)))

    def _jsonl(self, stream: IO[bytes]) -> Iterator[Record]:
        for number, raw_line in enumerate(stream, start=1):
            line = raw_line.strip()
            if not line:
                continue
            try:
                value = parse_json_line(line)
            except json.JSONDecodeError as exc:
                raise InputError(
                    f"{self.name}, line {number}: not valid JSON ({exc.msg}); "
                    "each line of a JSON Lines file must be one object"
                ) from None
            if not isinstance(value, dict):
                raise InputError(
                    f"{self.name}, line {number}: expected a JSON object, "
                    f"got {type(value).__name__}"
                )
            yield Record(number, value)

    def _json(self, stream: IO[bytes]) -> Iterator[Record]:
        import ijson

        head = stream.read(1)
        while head.isspace() or head in (b"\xef", b"\xbb", b"\xbf"):  # a UTF-8 BOM too
            head = stream.read(1)
        if head == b"{":
            raise InputError(
                f"{self.name}: expected a JSON array of objects, found an object; "
                "for one object per line use --format jsonl"
            )
        try:
            items = ijson.items(_Prefixed(head, stream), "item", use_float=True)
            for number, value in enumerate(items, 1):
                if not isinstance(value, dict):
                    raise InputError(
                        f"{self.name}, item {number}: expected a JSON object, "
                        f"got {type(value).__name__}"
                    )
                yield Record(number, value)
        except ijson.JSONError as exc:
            raise InputError(
                f"{self.name}: not a valid JSON array of objects ({exc}); "
                "for one object per line use --format jsonl"
            ) from None


class _Prefixed:
    """A binary stream with bytes already read put back in front of it."""

    def __init__(self, head: bytes, rest: IO[bytes]) -> None:
        self.head = head
        self.rest = rest

    def read(self, size: int = -1) -> bytes:
        if not self.head:
            return self.rest.read(size)
        if size < 0:
            data, self.head = self.head + self.rest.read(), b""
            return data
        data, self.head = self.head[:size], self.head[size:]
        return data


class IterableSource:
    """Records from any iterable of mappings (a generator stays lazy)."""

    def __init__(self, rows: Iterable[Mapping[str, Any]]) -> None:
        self.rows = rows
        self.total_bytes: int | None = None
        self.format = "python"
        self.name = "the rows iterable"

    def bytes_read(self) -> int | None:
        return None

    def identity(self) -> dict[str, Any]:
        return {"path": None, "format": "python"}

    def __iter__(self) -> Iterator[Record]:
        for number, row in enumerate(self.rows, start=1):
            if not isinstance(row, Mapping):
                raise InputError(
                    f"row {number} of the rows iterable is a {type(row).__name__}, "
                    "not a mapping of field names to values"
                )
            yield Record(number, dict(row))


def as_source(rows: Any, format: str | None = None, delimiter: str | None = None) -> Source:
    """A Source for a path, ``"-"``, an existing Source, an Arrow table or reader,
    a pandas DataFrame, or an iterable of dicts.

    pyarrow and pandas are imported only to read their inputs: an object is
    taken for a table or a DataFrame only when its library is loaded already.

    Raises:
        UsageError: ``delimiter`` given for anything but a CSV path, an unknown
            format, a path that does not exist.
        MissingDependencyError: a Parquet file without pyarrow installed.
    """
    from bulkpar.inputs.arrow import ArrowSource, ParquetSource
    from bulkpar.inputs.dataframes import DataFrameSource

    if isinstance(rows, str | Path):
        path = str(rows)
        if format == "parquet" or (format is None and _SUFFIXES.get(_suffix(path)) == "parquet"):
            return ParquetSource(path, delimiter)
        return FileSource(path, format, delimiter)
    if delimiter is not None:
        raise UsageError("delimiter goes with a CSV file or stdin, not with an iterable of rows")
    if isinstance(rows, FileSource | IterableSource | ParquetSource | ArrowSource):
        return rows
    if isinstance(rows, DataFrameSource):
        return rows
    pyarrow = sys.modules.get("pyarrow")
    if pyarrow is not None and isinstance(
        rows, pyarrow.Table | pyarrow.RecordBatch | pyarrow.RecordBatchReader
    ):
        return ArrowSource(rows)
    pandas = sys.modules.get("pandas")
    if pandas is not None and isinstance(rows, pandas.DataFrame):
        return DataFrameSource(rows)
    if isinstance(rows, Mapping):
        raise UsageError("rows must be an iterable of dicts, not a single dict")
    return IterableSource(rows)


def _suffix(path: str) -> str:
    """The suffix naming a file's format (``data.jsonl.gz`` → ``.jsonl``)."""
    return os.path.splitext(path.removesuffix(".gz"))[1].lower()
