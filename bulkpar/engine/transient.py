"""Which database errors are worth retrying.

A transient error says nothing about the data: the same chunk, run again a
moment later, can succeed. Deadlocks, serialization failures, lock timeouts,
SQLite's "database is locked" and dropped connections are transient; a
constraint violation or a bad value is not, and is never retried.
"""

from __future__ import annotations

# PostgreSQL SQLSTATEs: serialization_failure, deadlock_detected,
# lock_not_available, admin/crash shutdown, cannot_connect_now, and the
# connection_exception class.
_PG_TRANSIENT = {"40001", "40P01", "55P03", "57P01", "57P02", "57P03"}
_PG_TRANSIENT_CLASSES = ("08",)
# MySQL/MariaDB error numbers: lock wait timeout, deadlock, server gone away,
# lost connection, connection killed, server shutdown, query interrupted.
_MYSQL_TRANSIENT = {1205, 1213, 2006, 2013, 1927, 1053, 4031}
_MESSAGES = (
    "database is locked",
    "database table is locked",
    "database is busy",
    "server closed the connection",
    "terminating connection",
    "connection already closed",
    "connection is closed",
    "the connection is lost",
    "consuming input failed",
    "deadlock detected",
    "could not serialize access",
)


def is_transient(exc: BaseException) -> bool:
    """True when ``exc`` (or what caused it) is worth retrying on a fresh transaction."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        sqlstate = getattr(current, "sqlstate", None)
        if isinstance(sqlstate, str) and (
            sqlstate in _PG_TRANSIENT or sqlstate.startswith(_PG_TRANSIENT_CLASSES)
        ):
            return True
        args = getattr(current, "args", ())
        if args and isinstance(args[0], int) and args[0] in _MYSQL_TRANSIENT:
            return True
        message = str(current).lower()
        if any(text in message for text in _MESSAGES):
            return True
        current = current.__cause__ or current.__context__
    return False
