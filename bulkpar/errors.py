"""The exceptions bulkpar raises.

Every error a user can cause derives from :class:`BulkparError`; its message
says what was wrong, with which input, and what to do about it. The CLI turns
these into one-line messages (``--traceback`` shows the rest).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class BulkparError(Exception):
    """Base class of every error bulkpar raises on purpose."""


class UsageError(BulkparError):
    """An option or argument is invalid (the CLI exits with code 2).

    Its subclasses name the argument that is wrong: a model, a field, a
    function reference.
    """


class SettingsError(BulkparError):
    """No Django settings module was given, or it cannot be imported."""


class ModelNotFoundError(UsageError):
    """An ``app_label.ModelName`` does not name an installed model."""


class FieldNotFoundError(UsageError):
    """A field named in ``--filter``, ``--set``, ``--fields`` … does not exist."""


class FunctionImportError(UsageError):
    """A ``module:callable`` reference cannot be imported or is not callable."""


class InputError(BulkparError):
    """An input file cannot be read or is not in the format it claims."""


class MissingDependencyError(BulkparError):
    """An optional dependency is not installed (its message names the extra to install)."""


class CheckpointMismatchError(InputError):
    """A resumed run's input differs from what the checkpoint journal committed."""


class MissingTableError(BulkparError):
    """The model's table does not exist in the database (migrations not applied)."""


class DatabaseUnreachableError(BulkparError):
    """The database named by the job cannot be connected to."""


class DeleteRefusedError(BulkparError):
    """A PROTECT or RESTRICT foreign key forbids deleting a row of a chunk (``bulkpar.delete``)."""


class WorkerSetupError(BulkparError):
    """A worker process could not start (django.setup() or --setup failed)."""


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """Return ``"; did you mean 'x'?"`` for the closest choice, or ``""``."""
    options = list(choices)
    lowered = {c.lower(): c for c in options}
    close = difflib.get_close_matches(word.lower(), list(lowered), n=1, cutoff=0.6)
    return f"; did you mean {lowered[close[0]]!r}?" if close else ""


class RowError(BulkparError):
    """A transform or save raised on one row; carries that row's key."""

    def __init__(self, row: object, error: BaseException) -> None:
        super().__init__(f"{type(error).__name__}: {error} (row pk={row!r})")
        self.row = row
        self.error = error

    def __reduce__(self) -> tuple[object, ...]:
        return (RowError, (self.row, self.error))
