"""Django settings for the bulkpar test project.

Everything is read from environment variables so that the settings import
identically in the pytest process, in ``python -m bulkpar`` subprocesses and in
worker processes started with the ``spawn`` method. Nothing here may depend on
pytest.

Environment variables:

``BULKPAR_TEST_DB``
    ``sqlite`` (default), ``postgres`` or ``mysql``.
``BULKPAR_TEST_DB_NAME``
    Database name; for sqlite a file path. Defaults to ``bulkpar_test``
    (sqlite: ``bulkpar_test.sqlite3`` in the system temp dir).
``BULKPAR_TEST_DB_HOST`` / ``BULKPAR_TEST_DB_PORT`` / ``BULKPAR_TEST_DB_USER`` /
``BULKPAR_TEST_DB_PASSWORD``
    Server connection overrides (postgres/mysql only).
``BULKPAR_TEST_SQLITE_TRANSACTION_MODE``
    Optional sqlite ``transaction_mode`` (``DEFERRED``/``IMMEDIATE``/``EXCLUSIVE``).
    Unset means Django's default (deferred), under which concurrent processes
    that read and then write inside one ``atomic()`` block fail fast with
    "database is locked" instead of waiting for ``timeout``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

SECRET_KEY = "bulkpar-tests-not-secret"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "testproject.testapp",
    "bulkpar",
]

#: Which database server the tests run against: "sqlite", "postgres" or "mysql".
TEST_DB_BACKEND = os.environ.get("BULKPAR_TEST_DB", "").strip().lower() or "sqlite"
if TEST_DB_BACKEND not in ("sqlite", "postgres", "mysql"):
    raise RuntimeError(
        f"BULKPAR_TEST_DB={TEST_DB_BACKEND!r} is not supported; use one of: sqlite, postgres, mysql"
    )


def _database() -> dict[str, Any]:
    """Build ``DATABASES["default"]`` for the backend chosen by the environment."""
    name = os.environ.get("BULKPAR_TEST_DB_NAME", "")
    if TEST_DB_BACKEND == "sqlite":
        options: dict[str, Any] = {"timeout": 30}
        transaction_mode = os.environ.get("BULKPAR_TEST_SQLITE_TRANSACTION_MODE", "").strip()
        if transaction_mode:
            options["transaction_mode"] = transaction_mode.upper()
        return {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": name or str(Path(tempfile.gettempdir()) / "bulkpar_test.sqlite3"),
            "OPTIONS": options,
        }
    if TEST_DB_BACKEND == "postgres":
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": name or "bulkpar_test",
            "HOST": os.environ.get("BULKPAR_TEST_DB_HOST", "127.0.0.1"),
            "PORT": os.environ.get("BULKPAR_TEST_DB_PORT", "5432"),
            "USER": os.environ.get("BULKPAR_TEST_DB_USER", "postgres"),
            "PASSWORD": os.environ.get("BULKPAR_TEST_DB_PASSWORD", ""),
        }
    return {
        "ENGINE": "django.db.backends.mysql",
        "NAME": name or "bulkpar_test",
        "HOST": os.environ.get("BULKPAR_TEST_DB_HOST", "127.0.0.1"),
        "PORT": os.environ.get("BULKPAR_TEST_DB_PORT", "3306"),
        "USER": os.environ.get("BULKPAR_TEST_DB_USER", "root"),
        "PASSWORD": os.environ.get("BULKPAR_TEST_DB_PASSWORD", ""),
        "OPTIONS": {"charset": "utf8mb4"},
    }


DATABASES = {"default": _database()}
