"""Records from a pandas DataFrame, column by column.

pandas is never imported by bulkpar itself: a DataFrame is recognised only
when pandas is loaded already (see :func:`bulkpar.inputs.sources.as_source`).
The frame is read by slices of :data:`~bulkpar.inputs.sources.BATCH_ROWS`
rows; each column of a slice becomes Python values in one ``tolist()``.

The values are typed, as from Python or JSON Lines, with pandas' missing
values made None (SQL NULL, or the field's default): ``NaN`` (a float
column's, and in object, string and categorical columns), ``NaT`` and
``pd.NA``. A ``Timestamp`` becomes a ``datetime`` (aware when its column has
a time zone; nanoseconds are truncated, as the databases store
microseconds), a ``Timedelta`` a ``timedelta``, a NumPy scalar the Python
value. Objects in an object column (``Decimal``, ``dict``, ``list``) are
taken as they are, so a JSONField gets exactly the dicts the frame holds. The
index is not read (``reset_index()`` makes it a column); ``Record.line`` is
the row's 1-based position in the frame.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from bulkpar.errors import InputError
from bulkpar.inputs.sources import BATCH_ROWS, Record, records_from_columns


class DataFrameSource:
    """Records from a pandas DataFrame (read once per run, without copying it whole).

    Raises:
        InputError: a column name that is not a string, or one that repeats.
    """

    def __init__(self, frame: Any) -> None:
        self.frame = frame
        self.format = "pandas"
        self.total_bytes: int | None = None
        self.name = "the DataFrame"
        columns = list(frame.columns)
        odd = [c for c in columns if not isinstance(c, str)]
        if odd:
            raise InputError(
                f"{self.name} has column(s) {', '.join(map(repr, odd[:3]))} not named by a "
                "string; name its columns after the model's fields (df.columns = [...])"
            )
        self.columns: list[str] = columns

    def bytes_read(self) -> int | None:
        return None

    def identity(self) -> dict[str, Any]:
        """As for an iterable of dicts: no path; a resume checks the records' digests."""
        return {"path": None, "format": self.format}

    def __iter__(self) -> Iterator[Record]:
        import numpy
        import pandas

        frame = self.frame
        for start in range(0, len(frame), BATCH_ROWS):
            part = frame.iloc[start : start + BATCH_ROWS]
            columns = [_python_values(part.iloc[:, i], pandas, numpy) for i in range(part.shape[1])]
            yield from records_from_columns(self.columns, columns, start + 1, self.name)


def _python_values(series: Any, pandas: Any, numpy: Any) -> list[Any]:
    """One column as Python values, pandas' missing values as None."""
    dtype = series.dtype
    values: list[Any] = series.tolist()
    if isinstance(dtype, numpy.dtype):
        if dtype.kind in "iub":  # NumPy integers and booleans hold no missing value
            return values
        if dtype.kind == "f":
            return [None if v != v else v for v in values]
    return [_python_value(v, pandas, numpy) for v in values]


def _python_value(value: Any, pandas: Any, numpy: Any) -> Any:
    if value is None or value is pandas.NA or value is pandas.NaT:
        return None
    if type(value) is float:
        return None if value != value else value
    if isinstance(value, pandas.Timestamp):
        return value.to_pydatetime(warn=False)
    if isinstance(value, pandas.Timedelta):
        return value.to_pytimedelta()
    if isinstance(value, numpy.datetime64):
        return _python_value(pandas.Timestamp(value), pandas, numpy)
    if isinstance(value, numpy.timedelta64):
        return _python_value(pandas.Timedelta(value), pandas, numpy)
    if isinstance(value, numpy.generic):
        return _python_value(value.item(), pandas, numpy)
    return value
