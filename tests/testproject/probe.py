"""Helpers run inside freshly spawned processes by the infrastructure tests.

This module must stay importable before ``django.setup()``: a ``spawn`` child
imports it to unpickle the target function, then the function sets Django up
from the environment exactly as a bulkpar worker would.
"""

from __future__ import annotations

import os


def describe_and_write(username: str) -> tuple[str, str, int]:
    """Set Django up, create Person ``username`` and report what the process sees.

    Returns ``(vendor, database name, number of Person rows before the insert)``.
    """
    import django

    django.setup()
    from django.db import connection

    from testproject.testapp.models import Person

    try:
        before = Person.objects.count()
        Person.objects.create(username=username, email=f"{username}@pid{os.getpid()}")
        return connection.vendor, str(connection.settings_dict["NAME"]), before
    finally:
        connection.close()
