"""The demo's one model."""

from django.db import models


class Person(models.Model):
    """A user-like row to migrate."""

    username = models.CharField(max_length=150, unique=True)
    email = models.CharField(max_length=254)
    score = models.IntegerField(default=0)
    active = models.BooleanField(default=True)
    updated_on = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return self.username
