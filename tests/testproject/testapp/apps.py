"""App configuration for ``testproject.testapp``."""

from __future__ import annotations

from django.apps import AppConfig


class TestAppConfig(AppConfig):
    """Registers the cross-process ``post_save`` and ``post_delete`` receivers on startup."""

    name = "testproject.testapp"
    label = "testapp"
    verbose_name = "bulkpar test app"

    def ready(self) -> None:
        from django.db.models.signals import post_delete, post_save

        from . import signals
        from .models import Account, Signalled, Tenant

        post_save.connect(
            signals.log_signalled_save,
            sender=Signalled,
            dispatch_uid="testapp.log_signalled_save",
        )
        for model in (Tenant, Account):
            post_delete.connect(
                signals.log_delete,
                sender=model,
                dispatch_uid=f"testapp.log_delete.{model.__name__}",
            )
