"""App configuration for ``testproject.testapp``."""

from __future__ import annotations

from django.apps import AppConfig


class TestAppConfig(AppConfig):
    """Registers the cross-process ``post_save`` receiver on startup."""

    name = "testproject.testapp"
    label = "testapp"
    verbose_name = "bulkpar test app"

    def ready(self) -> None:
        from django.db.models.signals import post_save

        from . import signals
        from .models import Signalled

        post_save.connect(
            signals.log_signalled_save,
            sender=Signalled,
            dispatch_uid="testapp.log_signalled_save",
        )
