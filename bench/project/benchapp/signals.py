"""The ``post_save`` receiver of :class:`benchapp.models.Signalled` (the save benchmark).

A realistic receiver: it recomputes a denormalised field with a queryset
``update()`` (so as not to call ``save()`` again and recurse) and writes an
audit row. Every ``save()`` of a ``Signalled`` therefore costs three
statements: the model's INSERT or UPDATE, the UPDATE of ``total`` and the
INSERT of the :class:`~benchapp.models.AuditEntry`.
"""

from __future__ import annotations

from typing import Any

from django.db.models.signals import post_save
from django.dispatch import receiver

from benchapp.models import AuditEntry, Signalled


@receiver(post_save, sender=Signalled, dispatch_uid="benchapp.audit_and_total")
def audit_and_total(
    sender: type[Signalled], instance: Signalled, created: bool, **kwargs: Any
) -> None:
    """Recompute ``total = quantity * unit_price`` and record the save in the audit log."""
    total = instance.quantity * instance.unit_price
    Signalled.objects.filter(pk=instance.pk).update(total=total)
    instance.total = total
    AuditEntry.objects.create(
        object_id=instance.pk,
        action="created" if created else "updated",
        payload={"external_id": instance.external_id, "total": str(total)},
    )
