"""``bulkpar.update``: the database afterwards, the report's counts, the queries issued."""

from __future__ import annotations

import datetime
import uuid
from decimal import Decimal

import pytest
from django.db import connection
from django.db.models import F
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from testproject.testapp.models import Article, Author, Item, Person, Product, Restaurant, Token

import bulkpar
from bulkpar.operations.update import plan_pk_ranges

T = "testproject.testapp.transforms"
# people() gives row i the pk i + 1 and the score i: a bumped row has score == pk.


@pytest.mark.parametrize("workers", [1, 2])
def test_set_updates_selected_rows_and_counts_match(people, workers):
    people(50)  # even i active; pk = i + 1
    report = bulkpar.update(
        Person.objects.filter(active=True), set={"nickname": "x"}, chunk=7, workers=workers
    )
    assert report.ok
    assert Person.objects.filter(nickname="x").count() == 25
    assert not Person.objects.filter(active=False, nickname="x").exists()
    assert (report.matched, report.written, report.unchanged) == (25, 25, 0)
    assert report.chunks == 4  # ceil(25 / 7)
    assert report.workers == workers and report.executor == "process"


@pytest.mark.parametrize("workers", [1, 2])
def test_func_updates_every_row_once(people, workers, update_method):
    people(120)
    report = bulkpar.update(
        Person, func=f"{T}:bump_score", chunk=25, workers=workers, method=update_method
    )
    assert report.method == update_method
    assert report.ok
    assert report.matched == report.written == 120
    assert report.chunks == 5
    scores = dict(Person.objects.values_list("username", "score"))
    assert scores == {f"user{i}": i + 1 for i in range(120)}


def test_set_skips_rows_already_holding_the_values(people):
    people(30, nickname=lambda i: "x" if i < 10 else None)
    report = bulkpar.update(Person, set={"nickname": "x"}, chunk=8, workers=2)
    assert (report.written, report.unchanged) == (20, 10)
    assert Person.objects.filter(nickname="x").count() == 30


def test_set_null_and_touch_refreshes_auto_now_only_on_written_rows(people):
    people(10, nickname=lambda i: "n" if i < 5 else None)
    old = timezone.now() - datetime.timedelta(days=3)
    Person.objects.update(updated_on=old)
    report = bulkpar.update(Person, set={"nickname": None}, chunk=4, workers=1)
    assert (report.written, report.unchanged) == (5, 5)
    assert not Person.objects.exclude(nickname=None).exists()
    assert Person.objects.filter(updated_on=old).count() == 5  # untouched rows kept their time
    assert Person.objects.filter(updated_on__gt=old).count() == 5


def test_no_touch_leaves_auto_now_alone(people):
    people(6)
    old = timezone.now() - datetime.timedelta(days=3)
    Person.objects.update(updated_on=old)
    bulkpar.update(Person, func=f"{T}:bump_score", touch=False, workers=1)
    assert Person.objects.filter(updated_on=old).count() == 6


def test_func_writes_only_rows_that_changed(people, update_method):
    people(20, email=lambda i: f"user{i}@example.com" if i % 4 else f"USER{i}@EXAMPLE.COM")
    old = timezone.now() - datetime.timedelta(days=3)
    Person.objects.update(updated_on=old)
    report = bulkpar.update(
        Person, func=f"{T}:lowercase_email", chunk=6, workers=2, method=update_method
    )
    assert (report.written, report.unchanged) == (5, 15)
    assert all(e == e.lower() for e in Person.objects.values_list("email", flat=True))
    # rows that did not change were not rewritten: their auto_now value is as before
    assert Person.objects.filter(updated_on=old).count() == 15


def test_unchanged_chunks_issue_no_update_statement(people):
    people(10)
    with CaptureQueriesContext(connection) as queries:
        report = bulkpar.update(Person, func=f"{T}:noop", chunk=5, executor="serial")
    assert (report.written, report.unchanged) == (0, 10)
    statements = [q["sql"].lstrip().upper() for q in queries.captured_queries]
    assert not [s for s in statements if s.startswith("UPDATE")]
    selects = [s for s in statements if "FROM" in s and s.startswith("SELECT")]
    # the check that the table exists; a count; probes finding pk 5 and 10, then one
    # finding nothing and the end probe that confirms the table ends at 10; two chunk loads
    assert len(selects) == 8


def test_set_issues_one_update_per_chunk(people):
    people(12)
    with CaptureQueriesContext(connection) as queries:
        bulkpar.update(Person, set={"score": 0}, chunk=4, executor="serial")
    updates = [q for q in queries.captured_queries if q["sql"].lstrip().startswith("UPDATE")]
    assert len(updates) == 3


def test_func_returning_false_leaves_row(people):
    people(10)
    report = bulkpar.update(Person, func=f"{T}:skip_odd", chunk=3, workers=2)
    assert (report.written, report.skipped, report.unchanged) == (5, 5, 0)
    assert sorted(Person.objects.filter(score=100).values_list("pk", flat=True)) == [2, 4, 6, 8, 10]


def test_fields_limits_what_is_written(people):
    people(5)
    report = bulkpar.update(Person, func=f"{T}:bump_score", fields=["email"], workers=1)
    assert (report.written, report.unchanged) == (0, 5)  # score changes are ignored
    assert list(Person.objects.order_by("pk").values_list("score", flat=True)) == [0, 1, 2, 3, 4]


def test_typed_filters_select_the_right_rows(people):
    people(40)
    cutoff = timezone.now() + datetime.timedelta(days=1)
    Person.objects.filter(score__lt=10).update(created_on=cutoff + datetime.timedelta(days=1))
    qs = Person.objects.filter(created_on__lt=cutoff, score__gte=30, active=True)
    report = bulkpar.update(qs, set={"nickname": "picked"}, chunk=3, workers=2)
    assert report.written == 5  # 30, 32, 34, 36, 38
    assert sorted(Person.objects.filter(nickname="picked").values_list("score", flat=True)) == [
        30,
        32,
        34,
        36,
        38,
    ]


def test_empty_selection_is_a_clean_zero_report(people):
    people(3)
    report = bulkpar.update(Person.objects.filter(score__gt=100), set={"score": 1}, workers=2)
    assert report.ok
    assert (report.matched, report.written, report.chunks, report.failed_chunks) == (0, 0, 0, 0)
    assert report.rows_per_second == 0 and report.chunk_seconds == {
        "p50": 0.0,
        "p95": 0.0,
        "max": 0.0,
    }


def test_failing_row_rolls_back_its_chunk_and_others_commit(people):
    people(40)  # user13 has pk 14, in chunk 1 = pk (10, 20]
    report = bulkpar.update(
        Person, func=f"{T}:fail_on_user_13", chunk=10, workers=1, executor="serial"
    )
    assert not report.ok
    assert report.failed_chunks == 1 and report.chunks == 1  # abort: chunk 0 done, then stop
    error = report.errors[0]
    assert error.chunk == 1 and "bad row user13" in error.error and error.row == 14
    assert "ValueError" in (error.traceback or "")
    bumped = Person.objects.filter(score=F("id")).values_list("pk", flat=True)
    assert set(bumped) == set(range(1, 11))  # only chunk 0 committed
    assert report.written == 10 and report.failed_rows == 10 and report.not_attempted == 20


def test_on_error_skip_goes_on_after_a_failed_chunk(people):
    people(40)
    report = bulkpar.update(
        Person, func=f"{T}:fail_on_user_13", chunk=10, workers=2, on_error="skip"
    )
    assert report.failed_chunks == 1 and report.chunks == 3
    assert report.written == 30 and report.failed_rows == 10
    assert Person.objects.filter(score=F("id")).count() == 30


def test_spawn_start_method(people):
    people(30)
    report = bulkpar.update(
        Person, func=f"{T}:bump_score", chunk=10, workers=2, start_method="spawn"
    )
    assert report.ok and report.start_method == "spawn" and report.written == 30
    assert Person.objects.filter(score=F("id")).count() == 30


@pytest.mark.parametrize("executor", ["thread", "serial"])
def test_other_executors(people, executor):
    people(25)
    report = bulkpar.update(Person, func=f"{T}:bump_score", chunk=4, workers=2, executor=executor)
    assert report.ok and report.written == 25 and report.executor == executor


def test_uuid_primary_keys(db, update_method):
    Token.objects.bulk_create(Token(id=uuid.UUID(int=i * 7919), label=f"t{i}") for i in range(23))
    report = bulkpar.update(Token, func=f"{T}:use_token", chunk=5, workers=2, method=update_method)
    assert report.written == 23 and report.chunks == 5
    assert Token.objects.filter(used=True).count() == 23


def test_string_primary_keys_and_json(db, update_method):
    Product.objects.bulk_create(
        Product(sku=f"SKU-{i:03d}", price=Decimal("1.50"), data={"n": i}) for i in range(17)
    )
    report = bulkpar.update(
        Product, func=f"{T}:rename_product", chunk=4, workers=2, method=update_method
    )
    assert report.written == 17
    for product in Product.objects.all():
        assert product.data == {"n": int(product.sku[-3:]), "renamed": True}
        assert product.stock == 1


def test_custom_pk_name(db, update_method):
    Item.objects.bulk_create(Item(name=f"i{i}") for i in range(11))
    report = bulkpar.update(
        Item.objects.filter(item_no__gt=3), func=f"{T}:bump_qty", chunk=3, method=update_method
    )
    assert report.written == 8
    assert sorted(Item.objects.values_list("item_no", "qty")) == [
        (n, 0 if n <= 3 else 1) for n in range(1, 12)
    ]


def test_set_fk_decimal_and_db_column(db):
    first, second = Author.objects.create(name="a"), Author.objects.create(name="b")
    Article.objects.bulk_create(
        Article(author=first, title=f"t{i}", slug=f"s{i}", word_count=i) for i in range(9)
    )
    report = bulkpar.update(
        Article.objects.filter(word_count__gte=3),
        set={"author": second.pk, "rating": Decimal("4.25"), "word_count": 99},
        chunk=2,
        workers=2,
    )
    assert report.written == 6
    assert Article.objects.filter(author=second, rating=Decimal("4.25"), word_count=99).count() == 6


def test_multi_table_inheritance(db):
    for i in range(7):
        Restaurant.objects.create(name=f"r{i}", seats=i)
    report = bulkpar.update(Restaurant, set={"serves_pizza": True, "city": "Rome"}, chunk=3)
    assert report.written == 7
    assert Restaurant.objects.filter(serves_pizza=True, city="Rome").count() == 7


def test_plan_covers_every_row_once_with_one_probe_per_chunk(people):
    people(23)
    Person.objects.filter(pk__in=[3, 4, 5, 17]).delete()  # gaps in the keys
    with CaptureQueriesContext(connection) as queries:
        ranges = list(plan_pk_ranges(Person.objects.all(), 5))
    assert len(queries) == len(ranges) + 1  # one probe per full chunk, one end probe
    covered = []
    for r in ranges:
        rows = Person.objects.filter(pk__lte=r.hi)
        if r.lo is not None:
            rows = rows.filter(pk__gt=r.lo)
        covered.extend(rows.values_list("pk", flat=True))
    assert sorted(covered) == sorted(Person.objects.values_list("pk", flat=True))
    assert len(covered) == len(set(covered)) == 19


def test_every_column_type_through_each_writer(db, update_method):
    author = Author.objects.create(name="a")
    Article.objects.bulk_create(
        Article(
            author=author,
            title=f"t{i}",
            slug=f"s{i}",
            rating=None if i % 2 else Decimal(i),
            meta={"i": i},
            word_count=i,
        )
        for i in range(9)
    )
    report = bulkpar.update(Article, func=f"{T}:rewrite_article", chunk=4, method=update_method)
    assert report.written == 9 and report.ok
    for article in Article.objects.all():
        i = int(article.slug[1:])
        assert article.title == f"T{i}" and article.word_count == i + 1000
        assert article.published_at == datetime.datetime(2025, 6, 1, 12, tzinfo=datetime.UTC)
        assert article.published_on == datetime.date(2025, 6, 1)
        assert article.rating == (Decimal("9.75") if i % 2 else Decimal(i) + 1)
        assert article.meta == {"i": i, "rewritten": True, "quote": 'it\'s "fine"'}


def test_multi_table_inheritance_with_func(db, update_method):
    for i in range(7):
        Restaurant.objects.create(name=f"r{i}", seats=i, city="Oslo")
    report = bulkpar.update(
        Restaurant, func=f"{T}:relocate_restaurant", chunk=3, method=update_method
    )
    assert report.written == 7
    assert sorted(Restaurant.objects.values_list("city", "seats")) == [
        ("Rome", i + 1) for i in range(7)
    ]


def test_a_method_the_backend_cannot_run_is_a_clear_error(people, backend):
    from bulkpar.errors import UsageError

    people(2)
    if backend != "postgresql":
        with pytest.raises(UsageError, match="--method copy needs PostgreSQL"):
            bulkpar.update(Person, func=f"{T}:bump_score", method="copy")
    with pytest.raises(UsageError, match="unknown method 'fast'"):
        bulkpar.update(Person, func=f"{T}:bump_score", method="fast")
    with pytest.raises(UsageError, match="--method django cannot count"):
        bulkpar.upsert(Person, [{"username": "user0"}], unique="username", method="django")


def test_auto_method_resolves_by_backend_and_chunk_size(db):
    """Pure resolution logic (no database is written): the writer auto picks."""
    from django.db import connection

    from bulkpar.writers import COPY_MIN_ROWS, COPY_OR_VALUES, make_writer, resolve_method
    from bulkpar.writers.postgres import PostgresCopyWriter
    from bulkpar.writers.values import ValuesWriter

    assert resolve_method("auto", "postgresql", "update") == COPY_OR_VALUES
    assert resolve_method("auto", "postgresql", "upsert") == "copy"
    assert resolve_method("auto", "mysql", "update") == "values"
    assert resolve_method("copy", "postgresql", "update") == "copy"
    small = make_writer(COPY_OR_VALUES, Person, connection, rows=COPY_MIN_ROWS - 1)
    large = make_writer(COPY_OR_VALUES, Person, connection, rows=COPY_MIN_ROWS)
    assert isinstance(small, ValuesWriter) and isinstance(large, PostgresCopyWriter)


def test_auto_writes_large_chunks_correctly_on_each_backend(people, backend):
    # on PostgreSQL these chunks are above COPY_MIN_ROWS: auto writes them with COPY
    people(1200)
    report = bulkpar.update(Person, func=f"{T}:bump_score", chunk=600, workers=2)
    expected = "copy/values" if backend == "postgresql" else "values"
    assert report.method == expected and report.written == 1200
    assert Person.objects.filter(score=F("id")).count() == 1200
