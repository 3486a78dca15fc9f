"""Input records for ``create``, ``upsert`` and ``save``: files, stdin, iterables.

Every reader is a stream: it yields :class:`Record` objects one at a time and
never holds the input in memory, so a 10-million-row file costs what one chunk
costs. Formats: CSV (header row), JSON Lines, JSON (a top-level array, parsed
incrementally with ijson); gzip-compressed files by their ``.gz`` suffix.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import sys
import zlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from bulkpar.errors import InputError, UsageError

FORMATS = ("csv", "jsonl", "json")
_SUFFIXES = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json"}


@dataclass(frozen=True)
class Record:
    """One input record: where it came from and its raw values."""

    line: int
    values: dict[str, Any]


def guess_format(path: str) -> str:
    """The format a file name implies (``data.jsonl.gz`` → ``jsonl``).

    Raises:
        UsageError: the suffix names no known format (pass ``--format``).
    """
    name = path.removesuffix(".gz") if path.endswith(".gz") else path
    suffix = os.path.splitext(name)[1].lower()
    try:
        return _SUFFIXES[suffix]
    except KeyError:
        raise UsageError(
            f"cannot tell the format of {path!r} from its name; pass --format {'|'.join(FORMATS)}"
        ) from None


class FileSource:
    """Records read from a file (or ``-`` for stdin) in one of :data:`FORMATS`.

    Attributes:
        path: the file name, or ``"-"`` for standard input.
        format: ``csv``, ``jsonl`` or ``json``.
        total_bytes: the file's size on disk (None for stdin), for progress.
    """

    def __init__(self, path: str, format: str | None = None) -> None:
        if path == "-" and format is None:
            raise UsageError("reading stdin (--input -) needs --format csv|jsonl|json")
        if format is not None and format not in FORMATS:
            raise UsageError(f"unknown format {format!r}: use one of {', '.join(FORMATS)}")
        self.path = path
        self.format = format or guess_format(path)
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
        """What identifies this input for a job fingerprint."""
        if self.path == "-":
            return {"path": "-", "format": self.format}
        stat = os.stat(self.path)
        return {
            "path": os.path.abspath(self.path),
            "size": stat.st_size,
            "mtime_ns": stat.st_mtime_ns,
            "format": self.format,
        }

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
        reader = csv.reader(text)
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
                raise InputError(
                    f"{self.name}, line {start}: {len(row)} fields where the header has "
                    f"{width}; fix the row or quote fields containing commas"
                )
            yield Record(start, dict(zip(header, row, strict=True)))

    def _jsonl(self, stream: IO[bytes]) -> Iterator[Record]:
        for number, raw_line in enumerate(stream, start=1):
            line = raw_line.strip()
            if not line:
                continue
            try:
                value = json.loads(line)
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

        try:
            for number, value in enumerate(ijson.items(stream, "item", use_float=True), 1):
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


Source = FileSource | IterableSource


def as_source(rows: Any, format: str | None = None) -> Source:
    """A Source for a path, ``"-"``, an existing Source, or an iterable of dicts."""
    if isinstance(rows, FileSource | IterableSource):
        return rows
    if isinstance(rows, str | Path):
        return FileSource(str(rows), format)
    if isinstance(rows, Mapping):
        raise UsageError("rows must be an iterable of dicts, not a single dict")
    return IterableSource(rows)
