"""Sanity checks for the test infrastructure itself (conftest + testproject)."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable

import pytest
from django.core.management import call_command
from django.db import connection
from django.db.migrations.recorder import MigrationRecorder
from testproject.probe import describe_and_write
from testproject.testapp import transforms
from testproject.testapp.models import (
    Article,
    Author,
    Item,
    Person,
    Place,
    Restaurant,
    SaveLog,
    Signalled,
)

EXPECTED_VENDOR = {"sqlite": "sqlite", "postgres": "postgresql", "mysql": "mysql"}


def test_database_is_the_chosen_backend(backend: str) -> None:
    chosen = os.environ.get("BULKPAR_TEST_DB", "").strip().lower() or "sqlite"
    assert backend == EXPECTED_VENDOR[chosen]
    name = str(connection.settings_dict["NAME"])
    assert name == os.environ["BULKPAR_TEST_DB_NAME"]
    assert f"bulkpar_test_{os.getpid()}" in name


def test_migrations_applied_and_current(db: None) -> None:
    applied = MigrationRecorder(connection).applied_migrations()
    assert ("testapp", "0001_initial") in applied
    tables = set(connection.introspection.table_names())
    assert {"testapp_person", "testapp_restaurant", "testapp_event"} <= tables
    # Models and migration agree (exits non-zero if a migration is missing).
    call_command("makemigrations", "testapp", "--check", "--dry-run", verbosity=0)


def test_signalled_save_derives_and_logs(db: None) -> None:
    obj = Signalled.objects.create(name="alpha", value=3)
    assert obj.derived == "alpha:3"
    obj.value = 4
    obj.save()
    obj.refresh_from_db()
    assert obj.derived == "alpha:4"
    logs = list(SaveLog.objects.order_by("pk").values_list("model_name", "object_pk", "created"))
    assert logs == [
        ("testapp.Signalled", str(obj.pk), True),
        ("testapp.Signalled", str(obj.pk), False),
    ]


def test_boom_receiver_raises_without_logging(db: None) -> None:
    with pytest.raises(ValueError, match="boom on boom1"):
        Signalled.objects.create(name="boom1")
    assert SaveLog.objects.count() == 0


@pytest.mark.parametrize("round_", [1, 2])
def test_db_fixture_empties_tables_and_resets_ids(db: None, round_: int) -> None:
    # Both rounds must start empty, with sequences restarted, whatever ran before.
    assert Person.objects.count() == Author.objects.count() == Place.objects.count() == 0
    author = Author.objects.create(name=f"author-{round_}")
    Article.objects.create(author=author, title="t", slug=f"slug-{round_}")
    Restaurant.objects.create(name="r", city="c", seats=round_)
    item = Item.objects.create(name="i")
    person = Person.objects.create(username=f"round{round_}")
    assert (author.pk, item.pk, person.pk) == (1, 1, 1)


def test_people_fixture(people: Callable[..., int]) -> None:
    assert people(4, nickname=lambda i: f"n{i}") == 4
    rows = list(Person.objects.order_by("pk"))
    assert [p.pk for p in rows] == [1, 2, 3, 4]
    assert rows[3].username == "user3"
    assert rows[3].email == "User3@Example.COM"
    assert [p.score for p in rows] == [0, 1, 2, 3]
    assert [p.active for p in rows] == [True, False, True, False]
    assert rows[2].nickname == "n2"
    assert rows[0].created_on is not None and rows[0].updated_on is not None


def test_transforms_behave_as_documented(people: Callable[..., int]) -> None:
    people(14)
    user13 = Person.objects.get(username="user13")
    with pytest.raises(ValueError, match="bad row user13"):
        transforms.fail_on_user_13(user13)
    odd, even = Person.objects.get(pk=1), Person.objects.get(pk=2)
    assert transforms.skip_odd(odd) is False and odd.score == 0
    assert transforms.skip_odd(even) is None and even.score == 100
    transforms.lowercase_email(even)
    assert even.email == "user1@example.com"
    assert not callable(transforms.not_callable)


def test_subprocess_sees_same_database(people: Callable[..., int]) -> None:
    people(3)
    code = textwrap.dedent(
        """
        import django
        django.setup()
        from django.db import connection
        from testproject.testapp.models import Person
        print(connection.vendor, Person.objects.count(), connection.settings_dict["NAME"])
        """
    )
    # Fresh interpreter, not started from tests/: relies on PYTHONPATH & env only.
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd="/"
    ).stdout.split()
    assert out == [connection.vendor, "3", os.environ["BULKPAR_TEST_DB_NAME"]]


def test_spawned_workers_share_committed_data(people: Callable[..., int]) -> None:
    people(2)
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(2) as pool:
        results = pool.map(describe_and_write, ["w1", "w2"])
    for vendor, name, before in results:
        assert vendor == connection.vendor
        assert name == os.environ["BULKPAR_TEST_DB_NAME"]
        assert before >= 2
    created = Person.objects.filter(username__startswith="w").values_list("username", flat=True)
    assert set(created) == {"w1", "w2"}
