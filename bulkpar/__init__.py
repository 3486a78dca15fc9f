"""bulkpar: large parallel writes on Django models.

The public API::

    import bulkpar

    report = bulkpar.update(User.objects.filter(is_active=True), set={"newsletter": False})
    report = bulkpar.update(User, func="fixes:normalize_email", workers=4, chunk=1000)

Every call plans chunks in this process, runs them on a pool of workers that
each hold their own database connection (one transaction per chunk), and
returns a :class:`~bulkpar.report.Report`.

The names are imported on first use: ``import bulkpar`` (and a worker or the
command line, which import parts of the package) does not load every operation.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bulkpar.api import create, delete, save, update, upsert
    from bulkpar.errors import BulkparError
    from bulkpar.report import ChunkResult, Report

__version__ = "0.1.0"

__all__ = [
    "BulkparError",
    "ChunkResult",
    "Report",
    "__version__",
    "create",
    "delete",
    "save",
    "update",
    "upsert",
]

#: Where each public name lives.
_HOMES = {
    "create": "bulkpar.api",
    "delete": "bulkpar.api",
    "save": "bulkpar.api",
    "update": "bulkpar.api",
    "upsert": "bulkpar.api",
    "BulkparError": "bulkpar.errors",
    "ChunkResult": "bulkpar.report",
    "Report": "bulkpar.report",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'bulkpar' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_HOMES])
