"""bulkpar: large parallel writes on Django models.

The public API::

    import bulkpar

    report = bulkpar.update(User.objects.filter(is_active=True), set={"newsletter": False})
    report = bulkpar.update(User, func="fixes:normalize_email", workers=4, chunk=1000)

Every call plans chunks in this process, runs them on a pool of workers that
each hold their own database connection (one transaction per chunk), and
returns a :class:`~bulkpar.report.Report`.
"""

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
