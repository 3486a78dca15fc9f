"""Transform functions for ``--func testproject.testapp.transforms:NAME``.

Each receives one model instance and mutates it in place. Returning ``False``
means "leave this row unchanged". Model imports are for type checking only so
that this module can be imported before ``django.setup()``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .models import Article, Item, Person, Product, Restaurant, Signalled, Token


def bump_score(obj: Person) -> None:
    """Add one to ``score``."""
    obj.score += 1


def lowercase_email(obj: Person) -> None:
    """Lowercase ``email`` (rows already lowercase are unchanged)."""
    obj.email = obj.email.lower()


def noop(obj: Person) -> None:
    """Change nothing."""


def skip_odd(obj: Person) -> bool | None:
    """Leave rows with an odd pk alone; set ``score`` to 100 on the others."""
    if obj.pk % 2:
        return False
    obj.score = 100
    return None


def fail_on_user_13(obj: Person) -> None:
    """Raise for ``user13``; bump ``score`` on every other row."""
    if obj.username == "user13":
        raise ValueError("bad row user13")
    obj.score += 1


not_callable = 42
"""A module attribute that is not callable (for error-path tests)."""


def bump_qty(obj: Item) -> None:
    """Add one to ``Item.qty``."""
    obj.qty += 1


def rename_product(obj: Product) -> None:
    """Mark a Product's ``data`` as renamed and add one to ``stock``."""
    obj.data = {**(obj.data or {}), "renamed": True}
    obj.stock += 1


def use_token(obj: Token) -> None:
    """Mark a Token as used."""
    obj.used = True


def bump_value(obj: Signalled) -> None:
    """Add one to ``Signalled.value`` (its save() then re-derives ``derived``)."""
    obj.value += 1


def record_setup() -> None:
    """A ``--setup`` callable: log one SaveLog row per worker process that runs it."""
    import os

    from .models import SaveLog

    SaveLog.objects.create(model_name="setup", object_pk=str(os.getpid()), created=True)


def failing_setup() -> None:
    """A ``--setup`` callable that fails, as an unreachable cache server would."""
    raise RuntimeError("cache server unreachable")


def rewrite_article(obj: Article) -> None:
    """Change every awkward column of an Article: datetime, date, decimal, JSON, db_column."""
    import datetime
    from decimal import Decimal

    obj.published_at = datetime.datetime(2025, 6, 1, 12, 0, tzinfo=datetime.timezone.utc)
    obj.published_on = datetime.date(2025, 6, 1)
    obj.rating = Decimal("9.75") if obj.rating is None else obj.rating + 1
    obj.meta = {**obj.meta, "rewritten": True, "quote": 'it\'s "fine"'}
    obj.word_count += 1000
    obj.title = obj.title.upper()


def relocate_restaurant(obj: Restaurant) -> None:
    """Change a parent-table field (city) and a child-table field (seats) of a Restaurant."""
    obj.city = "Rome"
    obj.seats += 1
