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


# -- fault injection for the reliability tests ------------------------------------------
# Each hook fires once per test run: it first creates a marker file in the directory
# named by $BULKPAR_TEST_MARKERS, and does nothing if the marker is already there.


def _first_time(name: str) -> bool:
    """True exactly once per marker name (atomic across processes: O_EXCL)."""
    import os

    path = os.path.join(os.environ["BULKPAR_TEST_MARKERS"], name)
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL))
    except FileExistsError:
        return False
    return True


def bump_and_interrupt(obj: Person) -> None:
    """Bump the score; at user500, send SIGINT to the bulkpar process (the group leader)."""
    import os
    import signal

    obj.score += 1
    if obj.username == "user500" and _first_time("interrupt"):
        os.kill(os.getpgid(0), signal.SIGINT)


def bump_and_die(obj: Person) -> None:
    """Bump the score; at user1500, the worker process kills itself with SIGKILL."""
    import os
    import signal

    obj.score += 1
    if obj.username == "user1500" and _first_time("die"):
        os.kill(os.getpid(), signal.SIGKILL)


def bump_and_lose_connection(obj: Person) -> None:
    """Bump the score; at user700, PostgreSQL terminates this worker's own backend."""
    from django.db import connection

    obj.score += 1
    if obj.username == "user700" and _first_time("terminate"):
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(pg_backend_pid())")


def bump_and_deadlock(obj: Person) -> None:
    """Bump the score; the first rows of the two chunks lock each other's rows.

    Chunk A (pk 1..N) locks the first row of chunk B and B locks pk 1; each
    waits until the other holds its lock, then asks for its own first row: a
    real deadlock, which the database breaks by failing one transaction.
    """
    import os
    import time

    from django.db import connection

    obj.score += 1
    first_of_b = int(os.environ["BULKPAR_TEST_DEADLOCK_PK"])
    if obj.pk not in (1, first_of_b):
        return
    me, other = ("a", "b") if obj.pk == 1 else ("b", "a")
    if not _first_time(f"deadlock-{me}"):
        return
    table = connection.ops.quote_name(obj._meta.db_table)
    theirs = first_of_b if me == "a" else 1
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT id FROM {table} WHERE id = %s FOR UPDATE", [theirs])
        _first_time(f"locked-{me}")
        ready = os.path.join(os.environ["BULKPAR_TEST_MARKERS"], f"locked-{other}")
        deadline = time.monotonic() + 30
        while not os.path.exists(ready) and time.monotonic() < deadline:
            time.sleep(0.01)  # a barrier between the two workers, not a timing guess
        cursor.execute(f"SELECT id FROM {table} WHERE id = %s FOR UPDATE", [obj.pk])


def bump_unless_cursed(obj: Person) -> None:
    """Bump the score; three scattered rows raise (for --on-error bisect)."""
    if obj.username in ("user17", "user4242", "user9999"):
        raise ValueError(f"cursed row {obj.username}")
    obj.score += 1


def bump_and_terminate(obj: Person) -> None:
    """Bump the score; at user500, send SIGTERM to the bulkpar process."""
    import os
    import signal

    obj.score += 1
    if obj.username == "user500" and _first_time("terminate-parent"):
        os.kill(os.getpgid(0), signal.SIGTERM)


def bump_and_interrupt_twice(obj: Person) -> None:
    """Bump the score; at user500, interrupt twice (SIGINT, then SIGTERM), then hang.

    The hang stands for a transform stuck on a slow row: only "stop at once"
    ends it. Two signals of one kind sent back to back may merge into one
    delivery, so the second is a SIGTERM (bulkpar treats any second signal alike).
    """
    import os
    import signal
    import time

    obj.score += 1
    if obj.username == "user500" and _first_time("interrupt-twice"):
        os.kill(os.getpgid(0), signal.SIGINT)
        os.kill(os.getpgid(0), signal.SIGTERM)
        time.sleep(120)  # stuck until bulkpar kills this worker


def fail_on_pk_ending_in_5(obj: Person) -> None:
    """Raise the same error for every pk ending in 5 (one row in each chunk of 10)."""
    if obj.pk % 10 == 5:
        raise ValueError("pk ends in 5")
    obj.score += 1
