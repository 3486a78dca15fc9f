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
