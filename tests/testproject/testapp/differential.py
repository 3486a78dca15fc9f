"""Transforms used by the differential tests (``tests/test_differential.py``).

Each is applied twice on the same data: once in a plain serial Django loop,
once by bulkpar's workers; the tables must end up equal. They decide from the
row's own values, so both runs make the same decisions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .models import Restaurant, Sample, Signalled


def reshape_sample(obj: Sample) -> bool | None:
    """Change different fields on different rows; leave some rows alone; skip others."""
    if obj.version % 7 == 0:
        return False
    if obj.version % 3 == 0:
        obj.label = (obj.label + "!")[-40:]
    elif obj.version % 3 == 1 and obj.price:
        obj.price = -obj.price
    if obj.version % 5 == 0:
        obj.data = {"rewritten": obj.key, "was": obj.data}
    if obj.version % 11 == 0:
        obj.note = None
    return None


def bump_signalled(obj: Signalled) -> None:
    """Add 10 to ``value`` (its ``save()`` derives ``derived`` from it)."""
    obj.value += 10


def move_restaurant(obj: Restaurant) -> None:
    """Change a parent field and a child field of a multi-table-inheritance child."""
    obj.city = f"{obj.city}-moved"
    obj.seats += 1
