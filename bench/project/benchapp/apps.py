"""App configuration of the benchmark app."""

from __future__ import annotations

from django.apps import AppConfig


class BenchappConfig(AppConfig):
    """The ``benchapp`` application; connects the ``Signalled`` receiver when ready."""

    name = "benchapp"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from benchapp import signals  # noqa: F401  (connects the post_save receiver)
