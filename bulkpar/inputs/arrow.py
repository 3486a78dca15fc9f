"""Records from Parquet files and in-memory Arrow data (``pyarrow.Table``, ``RecordBatchReader``).

pyarrow is an optional dependency (``pip install 'bulkpar[parquet]'``),
imported only when one of these inputs is read. A Parquet file is read batch
by batch (:data:`BATCH_ROWS` rows at a time), so memory is bounded by a row
group and a batch, whatever the file's size; only the parent process reads
it, workers receive plain Python values.

Each column of a batch becomes Python values in one call (``to_pylist``),
then records are zipped from the columns; ``Record.line`` is the row's
1-based number in the file or table. The values are typed, as from JSON
Lines, and the fields convert them the same way (see
:mod:`bulkpar.inputs.conversion`): a null is None, a decimal is an exact
``Decimal``, a timestamp with a time zone an aware ``datetime`` and one
without a naive ``datetime`` (read in the current time zone, as a naive JSON
text is), a date a ``date``, a struct a ``dict``, a list a ``list``, a map a
``dict`` (the last of duplicate keys wins). Nanosecond timestamps, times and
durations are truncated to microseconds, as Django's own parsing truncates
finer fractions and as the databases store them.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from types import ModuleType
from typing import Any

from bulkpar.errors import InputError, MissingDependencyError, UsageError
from bulkpar.inputs.sources import BATCH_ROWS, Record, check_delimiter, records_from_columns

INSTALL_HINT = "pip install 'bulkpar[parquet]'"


def import_pyarrow(purpose: str) -> ModuleType:
    """The ``pyarrow`` module, with ``pyarrow.parquet`` and ``pyarrow.compute`` loaded.

    Raises:
        MissingDependencyError: pyarrow is not installed; the message names
            ``purpose`` and the extra to install.
    """
    try:
        import pyarrow
        import pyarrow.compute
        import pyarrow.parquet
    except ImportError:
        raise MissingDependencyError(
            f"{purpose} needs pyarrow, which is not installed; install it with: {INSTALL_HINT}"
        ) from None
    return pyarrow


class ParquetSource:
    """Records read from a Parquet file, one batch of rows at a time.

    Attributes:
        path: the file name.
        format: ``"parquet"``.
        total_bytes: the file's size, for progress (see :meth:`bytes_read`).
        rows: the rows the file holds (from its footer).
    """

    def __init__(self, path: str, delimiter: str | None = None) -> None:
        check_delimiter(delimiter, path, "parquet")
        if path == "-":
            raise UsageError(
                "Parquet cannot be read from stdin: it needs a seekable file (its index "
                "is at the end); write it to a file and pass --input FILE"
            )
        if path.endswith(".gz"):
            raise UsageError(
                f"{path!r}: Parquet compresses its own columns and cannot be read through "
                "gzip; gunzip it first"
            )
        if not os.path.exists(path):
            raise UsageError(f"input file {path!r} does not exist; give a path to a Parquet file")
        pyarrow = import_pyarrow(f"reading {path} (Parquet)")
        self.path = path
        self.format = "parquet"
        self._read = 0
        try:
            self.total_bytes: int | None = os.path.getsize(path)
            with pyarrow.parquet.ParquetFile(path) as file:
                self.rows: int = file.metadata.num_rows
        except OSError as exc:
            raise InputError(
                f"cannot read input file {path!r}: {exc.strerror or exc}; "
                "check the path and its permissions"
            ) from None
        except pyarrow.ArrowException as exc:
            raise InputError(
                f"{path} is not a readable Parquet file ({_first_line(exc)}); for another "
                "format pass --format csv|jsonl|json"
            ) from None

    @property
    def name(self) -> str:
        """How the input is named in messages: its path."""
        return self.path

    def bytes_read(self) -> int | None:
        """How far the reading is, in bytes: the file's size times the share of rows read.

        Parquet is read by column chunks, not front to back, so this is an
        estimate for the progress bar; it never goes back and ends at the size.
        """
        if self.total_bytes is None or not self.rows:
            return None
        return self.total_bytes * self._read // self.rows

    def identity(self) -> dict[str, Any]:
        """What identifies this input for a job fingerprint: its absolute path.

        As for the other files, not its size or modification time: a resumed
        run checks every chunk it skips against the digest of its records.
        """
        return {"path": os.path.abspath(self.path), "format": self.format}

    def __iter__(self) -> Iterator[Record]:
        pyarrow = import_pyarrow(f"reading {self.path} (Parquet)")
        self._read = 0
        try:
            with pyarrow.parquet.ParquetFile(self.path) as file:
                batches = file.iter_batches(batch_size=BATCH_ROWS)
                for record in arrow_records(pyarrow, batches, self.name):
                    self._read = record.line
                    yield record
        except OSError as exc:
            raise InputError(f"cannot read {self.name}: {exc}") from None
        except pyarrow.ArrowException as exc:
            raise InputError(
                f"cannot read {self.name}: {_first_line(exc)} "
                "(a truncated or corrupt Parquet file?)"
            ) from None


class ArrowSource:
    """Records from a ``pyarrow.Table``, ``RecordBatch`` or ``RecordBatchReader``.

    A reader (a stream) is read once, as a generator of dicts is; a table is
    read by slices of :data:`BATCH_ROWS` rows without copying it.
    """

    def __init__(self, data: Any) -> None:
        pyarrow = import_pyarrow("reading an Arrow table")
        if not isinstance(data, pyarrow.Table | pyarrow.RecordBatch | pyarrow.RecordBatchReader):
            raise UsageError(
                f"expected a pyarrow Table, RecordBatch or RecordBatchReader, "
                f"got {type(data).__name__}"
            )
        self.data = data
        self.format = "arrow"
        self.total_bytes: int | None = None
        kind = "record batch reader" if isinstance(data, pyarrow.RecordBatchReader) else "table"
        self.name = f"the Arrow {kind}"

    def bytes_read(self) -> int | None:
        return None

    def identity(self) -> dict[str, Any]:
        """As for an iterable of dicts: no path; a resume checks the records' digests."""
        return {"path": None, "format": self.format}

    def __iter__(self) -> Iterator[Record]:
        pyarrow = import_pyarrow("reading an Arrow table")
        data = self.data
        batches: Iterable[Any]
        if isinstance(data, pyarrow.RecordBatchReader):
            batches = data
        elif isinstance(data, pyarrow.RecordBatch):
            batches = (data.slice(i, BATCH_ROWS) for i in range(0, data.num_rows, BATCH_ROWS))
        else:
            batches = data.to_batches(max_chunksize=BATCH_ROWS)
        try:
            yield from arrow_records(pyarrow, batches, self.name)
        except pyarrow.ArrowException as exc:
            raise InputError(f"cannot read {self.name}: {_first_line(exc)}") from None


def arrow_records(pyarrow: ModuleType, batches: Iterable[Any], source: str) -> Iterator[Record]:
    """The records of a stream of record batches, numbered from 1 across the batches.

    Raises:
        InputError: a repeated column name, or a value that has no Python
            equivalent (a timestamp beyond year 9999 …), naming its row and column.
    """
    line = 1
    names: list[str] | None = None
    for batch in batches:
        if names is None:
            names = list(batch.schema.names)
        columns = [
            _python_values(pyarrow, column, source, name, line)
            for name, column in zip(names, batch.columns, strict=True)
        ]
        yield from records_from_columns(names, columns, line, source)
        line += batch.num_rows


def _python_values(
    pyarrow: ModuleType, column: Any, source: str, name: str, first_line: int
) -> list[Any]:
    """One column of a batch as Python values (see the module docstring for the types)."""
    types = pyarrow.types
    kind = column.type
    if types.is_timestamp(kind) and kind.unit == "ns":
        column = column.cast(pyarrow.timestamp("us", kind.tz), safe=False)
    elif types.is_time64(kind) and kind.unit == "ns":
        column = column.cast(pyarrow.time64("us"), safe=False)
    elif types.is_duration(kind) and kind.unit == "ns":
        column = column.cast(pyarrow.duration("us"), safe=False)
    try:
        values: list[Any] = column.to_pylist()
    except (ValueError, OverflowError, TypeError, pyarrow.ArrowException):
        for offset, scalar in enumerate(column):
            try:
                scalar.as_py()
            except (ValueError, OverflowError, TypeError, pyarrow.ArrowException) as exc:
                raise InputError(
                    f"{source}, row {first_line + offset}, column {name!r}: {column.type} value "
                    f"has no Python equivalent ({_first_line(exc)}); fix or drop the row"
                ) from None
        raise
    if _holds_map(types, column.type):
        values = [_maps_as_dicts(types, value, column.type) for value in values]
    return values


def _holds_map(types: Any, kind: Any) -> bool:
    """Whether a map type is anywhere in ``kind`` (its values come as lists of pairs)."""
    if types.is_map(kind):
        return True
    if types.is_struct(kind):
        return any(_holds_map(types, kind.field(i).type) for i in range(kind.num_fields))
    if types.is_list(kind) or types.is_large_list(kind) or types.is_fixed_size_list(kind):
        return _holds_map(types, kind.value_type)
    return False


def _maps_as_dicts(types: Any, value: Any, kind: Any) -> Any:
    """``value`` with every map (a list of key-value pairs) turned into a dict.

    pyarrow's own ``maps_as_pydicts`` came in version 20; this works on all.
    """
    if value is None or not _holds_map(types, kind):
        return value
    if types.is_map(kind):
        return {key: _maps_as_dicts(types, item, kind.item_type) for key, item in value}
    if types.is_struct(kind):
        fields = (kind.field(i) for i in range(kind.num_fields))
        return {f.name: _maps_as_dicts(types, value[f.name], f.type) for f in fields}
    return [_maps_as_dicts(types, item, kind.value_type) for item in value]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
