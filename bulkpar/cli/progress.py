"""Progress for Python API callers: a tqdm bar counted in rows.

The runner only emits data (:class:`bulkpar.engine.runner.ProgressSink`); this module
renders it with ``tqdm.auto``, which draws a text bar in a terminal and a
widget in a notebook. The CLI renders with rich instead (bulkpar.cli).
"""

from __future__ import annotations

import sys
from typing import Any

from bulkpar.report import ChunkResult


class TqdmProgress:
    """A :class:`~bulkpar.engine.runner.ProgressSink` drawing one tqdm bar in rows."""

    def __init__(self, **tqdm_kwargs: Any) -> None:
        self._kwargs = tqdm_kwargs
        self._bar: Any = None
        self._unit = "rows"

    def start(self, total: int | None, description: str, unit: str) -> None:
        from tqdm.auto import tqdm

        self._unit = unit
        self._bar = tqdm(
            total=total,
            desc=description,
            unit="B" if unit == "bytes" else "rows",
            unit_scale=True,
            **self._kwargs,
        )

    def advance(self, result: ChunkResult, position: int | None) -> None:
        if self._bar is not None:
            if self._unit == "bytes" and position is not None:
                self._bar.update(position - self._bar.n)
            else:
                self._bar.update(result.rows)
            if result.failed:
                self._bar.set_postfix_str(f"chunk {result.index} failed", refresh=False)

    def notice(self, message: str) -> None:
        from tqdm.auto import tqdm

        tqdm.write(f"\n{message}", file=sys.stderr)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
