"""Checkpoint journals: which chunks of a job have committed, so a rerun can resume.

The journal is a JSON Lines file. Its first line names the job by a
fingerprint (model, operation, selection or input file, transform, chunk
size …); every further line is one committed chunk, appended and fsynced
before the chunk counts as done. A rerun of the same job with the same
journal skips those chunks; a different job is refused.

What "a chunk" is must not depend on what the previous run changed:

* input loads cut chunks by position in the input, so chunk *i* is the same
  records on every run of the same file;
* updates and saves over a queryset plan primary-key ranges, and the journal
  keeps each committed range ``(lo, hi]``; a resumed run plans only the gaps
  between committed ranges, so rows that stopped matching the filter after
  being updated are never planned again, and no row is written twice.

One window remains: a chunk that commits in the database while the bulkpar
process is killed (``kill -9``) before the journal line is written will run
again. An interrupt (Ctrl-C, SIGTERM) lets running chunks finish and records
them, so it never leaves that window open.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import IO, Any

from bulkpar.errors import UsageError

FORMAT_VERSION = 1


def fingerprint(description: dict[str, Any]) -> str:
    """A stable digest of what a job does."""
    text = json.dumps(description, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class DoneChunk:
    """A chunk a previous run committed."""

    index: int
    lo: Any = None
    hi: Any = None
    rows: int = 0


class Checkpoint:
    """An open journal: the chunks already done, and a way to record more."""

    def __init__(self, path: str, description: dict[str, Any]) -> None:
        self.path = path
        self.fingerprint = fingerprint(description)
        self.done: list[DoneChunk] = []
        if os.path.exists(path) and os.path.getsize(path) > 0:
            self._load(description)
        try:
            self._file: IO[str] = open(path, "a", encoding="utf-8")  # noqa: SIM115
        except OSError as exc:
            raise UsageError(
                f"cannot write the checkpoint file {path!r}: {exc.strerror or exc}"
            ) from None
        if not self.done and os.path.getsize(path) == 0:
            header = {"bulkpar_checkpoint": FORMAT_VERSION, "fingerprint": self.fingerprint,
                      "job": description}  # fmt: skip
            self._append(header)

    def _load(self, description: dict[str, Any]) -> None:
        with open(self.path, encoding="utf-8") as journal:
            lines = journal.read().splitlines()
        try:
            header = json.loads(lines[0])
        except (json.JSONDecodeError, IndexError):
            raise UsageError(
                f"{self.path!r} is not a bulkpar checkpoint; pass a new file to --checkpoint"
            ) from None
        if header.get("fingerprint") != self.fingerprint:
            raise UsageError(
                f"checkpoint {self.path!r} belongs to a different job "
                f"({_summary(header.get('job', {}))}); this job is "
                f"({_summary(description)}). Use a new checkpoint file, or delete this one "
                "to start over"
            )
        for line in lines[1:]:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line torn by a crash mid-write: that chunk runs again
            self.done.append(
                DoneChunk(
                    record["index"], record.get("lo"), record.get("hi"), record.get("rows", 0)
                )
            )

    def _append(self, record: dict[str, Any]) -> None:
        self._file.write(json.dumps(record, default=str) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def record(self, chunk: Any, rows: int) -> None:
        """Durably note that ``chunk`` committed."""
        entry: dict[str, Any] = {"index": chunk.index, "rows": rows}
        if hasattr(chunk, "hi"):
            entry["lo"], entry["hi"] = chunk.lo, chunk.hi
        self._append(entry)

    def done_indexes(self) -> set[int]:
        return {d.index for d in self.done}

    def done_ranges(self) -> list[tuple[Any, Any]]:
        """Committed ``(lo, hi]`` key ranges, merged where they touch."""
        return merge_ranges((d.lo, d.hi) for d in self.done if d.hi is not None)

    def close(self) -> None:
        self._file.close()


def merge_ranges(ranges: Iterable[tuple[Any, Any]]) -> list[tuple[Any, Any]]:
    """Merge ``(lo, hi]`` ranges (``lo`` None: from the start) that touch or overlap."""

    def start(item: tuple[Any, Any]) -> tuple[bool, Any]:
        return (item[0] is not None, item[0])

    merged: list[tuple[Any, Any]] = []
    for lo, hi in sorted(ranges, key=start):
        if merged:
            last_lo, last_hi = merged[-1]
            if lo is None or lo <= last_hi:
                merged[-1] = (last_lo, max(last_hi, hi))
                continue
        merged.append((lo, hi))
    return merged


def _summary(description: dict[str, Any]) -> str:
    keys = ("operation", "model", "input", "chunk")
    return ", ".join(f"{k}={description[k]}" for k in keys if description.get(k) is not None)
