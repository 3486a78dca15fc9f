"""App configuration of the benchmark app."""

from __future__ import annotations

from django.apps import AppConfig


class BenchappConfig(AppConfig):
    """The ``benchapp`` application."""

    name = "benchapp"
    default_auto_field = "django.db.models.BigAutoField"
