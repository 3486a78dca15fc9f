"""Transforms passed to ``bulkpar update --func`` and to the peer approaches."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from benchapp.models import Row


def bump(obj: Row) -> None:
    """Add one to ``score`` and upper-case ``email``: two fields, every row changes."""
    obj.score += 1
    obj.email = obj.email.upper()


def bump_score(obj: Row) -> None:
    """Add one to ``score`` only: a narrow change (the planner's estimate of the chunk's
    temp table then makes PostgreSQL hash-join an unanalyzed target table, issue 12)."""
    obj.score += 1
