"""Models covering the awkward cases for parallel bulk writes."""

from __future__ import annotations

import uuid
from typing import Any

from django.db import models


class Person(models.Model):
    """The main workhorse model: unique field, nullable field, auto_now fields."""

    username = models.CharField(max_length=150, unique=True)
    email = models.CharField(max_length=254, blank=True, default="")
    score = models.IntegerField(default=0)
    active = models.BooleanField(default=True)
    nickname = models.CharField(max_length=50, null=True, blank=True)
    created_on = models.DateTimeField(auto_now_add=True)
    updated_on = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return self.username


class Author(models.Model):
    """Target of Article's foreign key."""

    name = models.CharField(max_length=100, unique=True)

    def __str__(self) -> str:
        return self.name


class Article(models.Model):
    """FK, tz-aware datetime, date, decimal, JSON and a column renamed by db_column."""

    author = models.ForeignKey(Author, on_delete=models.CASCADE, related_name="articles")
    title = models.CharField(max_length=200)
    slug = models.CharField(max_length=200, unique=True)
    published_at = models.DateTimeField(null=True)
    published_on = models.DateField(null=True)
    rating = models.DecimalField(max_digits=6, decimal_places=2, null=True)
    meta = models.JSONField(default=dict)
    word_count = models.IntegerField(default=0, db_column="wc")

    def __str__(self) -> str:
        return self.slug


class Product(models.Model):
    """Custom string primary key."""

    sku = models.CharField(max_length=32, primary_key=True)
    price = models.DecimalField(max_digits=10, decimal_places=2)
    stock = models.IntegerField(default=0)
    data = models.JSONField(null=True)

    def __str__(self) -> str:
        return self.sku


class Token(models.Model):
    """UUID primary key with a Python-side default."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4)
    label = models.CharField(max_length=100)
    used = models.BooleanField(default=False)

    def __str__(self) -> str:
        return self.label


class Item(models.Model):
    """Integer auto primary key with a non-default name."""

    item_no = models.AutoField(primary_key=True)
    name = models.CharField(max_length=100)
    qty = models.IntegerField(default=0)
    weight = models.FloatField(null=True)

    def __str__(self) -> str:
        return self.name


class Event(models.Model):
    """Natural key via unique_together, plus auto_now/auto_now_add fields."""

    organization_id = models.IntegerField()
    external_id = models.CharField(max_length=64)
    name = models.CharField(max_length=200)
    started = models.DateTimeField(null=True)
    updated_at = models.DateTimeField(auto_now=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        unique_together = [("organization_id", "external_id")]

    def __str__(self) -> str:
        return f"{self.organization_id}/{self.external_id}"


class Signalled(models.Model):
    """Model with an overridden save() and a post_save receiver (see signals.py)."""

    name = models.CharField(max_length=100, unique=True)
    value = models.IntegerField(default=0)
    derived = models.CharField(max_length=100, blank=True, default="")

    def save(self, *args: Any, **kwargs: Any) -> None:
        """Derive ``derived`` from name and value, then save normally."""
        self.derived = f"{self.name}:{self.value}"
        super().save(*args, **kwargs)

    def __str__(self) -> str:
        return self.name


class SaveLog(models.Model):
    """One row per post_save call of Signalled, so other processes' saves are visible."""

    model_name = models.CharField(max_length=100)
    object_pk = models.CharField(max_length=100)
    created = models.BooleanField()
    at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.model_name}:{self.object_pk} created={self.created}"


class Place(models.Model):
    """Parent of a multi-table inheritance pair."""

    name = models.CharField(max_length=100)
    city = models.CharField(max_length=100, default="")

    def __str__(self) -> str:
        return self.name


class Restaurant(Place):
    """Multi-table inheritance child of Place (fields spread over two tables)."""

    serves_pizza = models.BooleanField(default=False)
    seats = models.IntegerField(default=0)


class Org(models.Model):
    """Target of Asset's foreign key."""

    name = models.CharField(max_length=100)

    def __str__(self) -> str:
        return self.name


class Asset(models.Model):
    """UUID primary key with a callable default, a FK and a natural key over (org, external_id).

    The shape of issue 10's first defect: records never give ``id``, so every
    load must fill it the way ``Model()`` does.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4)
    org = models.ForeignKey(Org, on_delete=models.CASCADE)
    external_id = models.IntegerField()
    name = models.CharField(max_length=100)

    class Meta:
        unique_together = [("org", "external_id")]

    def __str__(self) -> str:
        return f"{self.org_id}/{self.external_id}"


def _default_tags() -> list[str]:
    return ["new"]


class Sample(models.Model):
    """The values where bulk tools go wrong, in a table and columns that need quoting.

    JSON null vs SQL NULL (``data``), a NOT NULL CharField without a default
    that ``Model()`` fills with ``''`` (``label``), a nullable CharField
    (``note``), a decimal at its precision, an aware datetime, a callable
    non-key default (``ref``, ``tags``), an ``auto_now`` field, and names with
    spaces and capitals.
    """

    key = models.CharField(max_length=40, unique=True, db_column="Sample Key")
    label = models.CharField(max_length=40)
    note = models.CharField(max_length=40, null=True, blank=True)
    price = models.DecimalField(max_digits=12, decimal_places=4, null=True)
    data = models.JSONField(null=True, blank=True)
    tags = models.JSONField(default=_default_tags)
    at = models.DateTimeField(null=True)
    ref = models.UUIDField(default=uuid.uuid4)
    version = models.IntegerField(default=0, db_column="Version")
    touched = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "testapp Odd Sample"

    def __str__(self) -> str:
        return self.key


class Tenant(models.Model):
    """The top of ``bulkpar delete``'s cascade: Tenant → Account → Entry, Note, Guard."""

    name = models.CharField(max_length=100)

    def __str__(self) -> str:
        return self.name


class Account(models.Model):
    """Deleted with its tenant (CASCADE); a post_delete receiver logs it (see signals.py)."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE)
    name = models.CharField(max_length=100)
    balance = models.DecimalField(max_digits=12, decimal_places=2, default=0)
    opened = models.DateTimeField(null=True)
    extra = models.JSONField(null=True)

    def __str__(self) -> str:
        return self.name


class Entry(models.Model):
    """Deleted with its account (CASCADE) by a fast ``DELETE … WHERE``: no receiver listens."""

    account = models.ForeignKey(Account, on_delete=models.CASCADE)
    amount = models.IntegerField()


class Note(models.Model):
    """Outlives its account: SET_NULL."""

    account = models.ForeignKey(Account, on_delete=models.SET_NULL, null=True)
    text = models.CharField(max_length=100)


class Guard(models.Model):
    """Forbids deleting its account: PROTECT."""

    account = models.ForeignKey(Account, on_delete=models.PROTECT, null=True)
    reason = models.CharField(max_length=100)


class DeleteLog(models.Model):
    """One row per post_delete of a Tenant or Account, so other processes' deletes are visible."""

    model_name = models.CharField(max_length=100)
    object_pk = models.CharField(max_length=100)


class Reading(models.Model):
    """A table the plan tests fill with many rows and never analyze (tests/test_plans.py).

    Nothing else writes to it, and on PostgreSQL autovacuum is off for it, so
    the planner has no statistics: the state of a table loaded a minute ago.
    """

    serial = models.CharField(max_length=40, unique=True)
    label = models.CharField(max_length=100)
    value = models.IntegerField()
    data = models.JSONField(null=True)

    def __str__(self) -> str:
        return self.serial


class ReadingTag(models.Model):
    """Deleted with its reading (CASCADE): the delete chunk's cascade query."""

    reading = models.ForeignKey(Reading, on_delete=models.CASCADE)
    tag = models.CharField(max_length=20)
