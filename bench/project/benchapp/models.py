"""The benchmark table."""

from __future__ import annotations

from django.db import models


class Row(models.Model):
    """Six data columns of the kinds real tables hold, plus a unique business key.

    ``external_id`` is there for the create and upsert benchmarks (the
    conflict target); the update benchmarks leave it alone.
    """

    name = models.CharField(max_length=100)
    email = models.CharField(max_length=254)
    score = models.IntegerField()
    amount = models.DecimalField(max_digits=12, decimal_places=2)
    active = models.BooleanField()
    updated_at = models.DateTimeField(null=True)
    external_id = models.CharField(max_length=64, unique=True)

    def __str__(self) -> str:
        return self.external_id


class Signalled(models.Model):
    """An order line whose ``post_save`` receiver does real work (the save benchmark).

    ``total`` is derived: :func:`benchapp.signals.audit_and_total` recomputes
    it after every save and writes an :class:`AuditEntry`, as a production
    receiver keeping a denormalised field and an audit trail would.
    """

    external_id = models.CharField(max_length=64, unique=True)
    name = models.CharField(max_length=100)
    quantity = models.IntegerField()
    unit_price = models.DecimalField(max_digits=12, decimal_places=2)
    total = models.DecimalField(max_digits=14, decimal_places=2, null=True)

    def __str__(self) -> str:
        return self.external_id


class AuditEntry(models.Model):
    """One row per save of a :class:`Signalled`, written by its ``post_save`` receiver."""

    object_id = models.BigIntegerField(db_index=True)
    action = models.CharField(max_length=10)
    payload = models.JSONField()
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.action} {self.object_id}"
