"""Signal receivers whose effects are visible across processes (rows in SaveLog)."""

from __future__ import annotations

from typing import Any

from .models import SaveLog, Signalled


def log_signalled_save(
    sender: type[Signalled], instance: Signalled, created: bool, **kwargs: Any
) -> None:
    """Record one ``SaveLog`` row per ``post_save`` of a ``Signalled`` instance.

    Instances whose name starts with ``"boom"`` make the receiver raise
    ``ValueError`` *before* anything is logged, so a failing object leaves no
    ``SaveLog`` row (its own ``Signalled`` row is already written unless the
    caller rolls it back).
    """
    if instance.name.startswith("boom"):
        raise ValueError(f"boom on {instance.name}")
    SaveLog.objects.create(
        model_name=sender._meta.label,
        object_pk=str(instance.pk),
        created=created,
    )


def log_delete(sender: type[Any], instance: Any, **kwargs: Any) -> None:
    """Record one ``DeleteLog`` row per ``post_delete`` of a Tenant or Account."""
    from .models import DeleteLog

    DeleteLog.objects.using(kwargs.get("using") or "default").create(
        model_name=sender._meta.label, object_pk=str(instance.pk)
    )
