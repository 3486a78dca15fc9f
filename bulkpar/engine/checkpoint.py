"""Checkpoint journals: which chunks of a job have committed, so a rerun can resume.

The journal is a JSON Lines file. Its first line names the job by a
fingerprint (model, operation, selection or input file, transform, chunk
size …); every further line is one committed chunk, appended and fsynced
before the chunk counts as done. A rerun of the same job with the same
journal skips those chunks; a different job is refused.

What "a chunk" is must not depend on what the previous run changed:

* input loads cut chunks from the input in order, so chunk *i* is the same
  records on every run of the same input. The journal keeps a digest of
  each committed chunk's records (:func:`records_digest`); a resumed run
  re-reads the input and checks every chunk it skips against its digest, so
  a different stdin stream, or a file edited in place, is refused instead
  of silently skipped;
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

from bulkpar.engine.contracts import Chunk
from bulkpar.errors import CheckpointMismatchError, UsageError

#: Version 2 journals a digest of every committed input chunk; version 1 did not.
FORMAT_VERSION = 2


def records_digest(records: Iterable[Any]) -> str:
    """A digest of a chunk's input records: each record's line and raw values, in order.

    The values are serialised canonically (sorted keys; ``str`` for what JSON
    cannot hold), so the same input read twice gives the same digest, and any
    changed, added, dropped or reordered record gives another. One encoder
    call per chunk: a call per record would double the parent's reading cost.
    """
    text = _CANONICAL.encode([[record.line, record.values] for record in records])
    return hashlib.sha256(text.encode()).hexdigest()


_CANONICAL = json.JSONEncoder(sort_keys=True, default=str)


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
    digest: str | None = None
    label: str | None = None


class Checkpoint:
    """An open journal: the chunks already done, and a way to record more."""

    def __init__(
        self, path: str, description: dict[str, Any], input_name: str = "the input"
    ) -> None:
        self.path = path
        self.input_name = input_name
        self.fingerprint = fingerprint(description)
        self.done: list[DoneChunk] = []
        self._unverified: dict[int, DoneChunk] = {}
        if os.path.isdir(path):
            raise UsageError(
                f"--checkpoint {path!r} is a directory; name a file, "
                f"e.g. {os.path.join(path, 'job.checkpoint')!r}"
            )
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
        try:
            with open(self.path, encoding="utf-8") as journal:
                lines = journal.read().splitlines()
        except OSError as exc:
            raise UsageError(
                f"cannot read the checkpoint file {self.path!r}: {exc.strerror or exc}"
            ) from None
        except UnicodeDecodeError:
            lines = []
        try:
            header = json.loads(lines[0])
            version = header["bulkpar_checkpoint"]
        except (json.JSONDecodeError, IndexError, KeyError, TypeError):
            raise UsageError(
                f"{self.path!r} is not a bulkpar checkpoint; pass a new file to --checkpoint"
            ) from None
        if version != FORMAT_VERSION:
            raise UsageError(
                f"checkpoint {self.path!r} has format {version}, this bulkpar reads format "
                f"{FORMAT_VERSION}; finish the run with the bulkpar that wrote it, or use a "
                "new checkpoint file"
            )
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
            done = DoneChunk(
                record["index"],
                record.get("lo"),
                record.get("hi"),
                record.get("rows", 0),
                record.get("digest"),
                record.get("label"),
            )
            self.done.append(done)
            if done.digest is not None:
                self._unverified[done.index] = done

    def _append(self, record: dict[str, Any]) -> None:
        self._file.write(json.dumps(record, default=str) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def record(self, chunk: Chunk, rows: int) -> None:
        """Durably note that ``chunk`` committed (with its key range or records digest)."""
        entry: dict[str, Any] = {"index": chunk.index, "rows": rows}
        mark = chunk.mark()
        if mark.digest is None:
            entry["lo"], entry["hi"] = mark.lo, mark.hi
        else:
            entry["digest"] = mark.digest
            entry["label"] = chunk.label
        self._append(entry)

    def verify(self, chunk: Chunk) -> None:
        """Check that a chunk this run skips holds the records the journal committed.

        Raises:
            CheckpointMismatchError: the chunk's records differ from the committed ones:
                the input changed between the runs.
        """
        done = self._unverified.pop(chunk.index, None)
        if done is None:
            return
        digest = chunk.mark().digest
        if digest is not None and digest != done.digest:
            raise CheckpointMismatchError(
                f"checkpoint {self.path}: chunk {chunk.index} ({done.label or chunk.label}) of "
                f"{self.input_name} differs from the run that committed it; the input "
                "changed — use a new checkpoint file"
            )

    def verify_end(self) -> None:
        """At the end of the input: every committed chunk must have been met again.

        Raises:
            CheckpointMismatchError: the input ended before a chunk the journal committed.
        """
        if not self._unverified:
            return
        done = min(self._unverified.values(), key=lambda d: d.index)
        where = f" ({done.label})" if done.label else ""
        raise CheckpointMismatchError(
            f"checkpoint {self.path}: {self.input_name} ends before chunk {done.index}"
            f"{where} that the run that committed it read; the input changed — use a new "
            "checkpoint file"
        )

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
