"""Shared pytest fixtures for the bulkpar test suite.

Import-time side effects (they must happen before Django is configured and
before any worker process is started, because workers and ``python -m bulkpar``
subprocesses configure themselves purely from the environment):

* ``tests/`` is put on ``sys.path`` and prepended to ``PYTHONPATH`` so that
  ``testproject`` is importable everywhere;
* ``DJANGO_SETTINGS_MODULE`` is set to ``testproject.settings``;
* a per-run database name (``bulkpar_test_<pid>``; for sqlite a file in a fresh
  temp dir) is exported as ``BULKPAR_TEST_DB_NAME``;
* ``django.setup()`` is called, so test modules may import models at top level.

The database itself is created (and migrated) by the session-scoped autouse
fixture ``_test_database`` and dropped when the session ends. Tests do not use
Django's ``TestCase`` transactions: workers are separate processes and must see
committed data, so the ``db`` fixture empties the tables before each test.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

import django
import pytest
from django.apps import apps
from django.core.management import call_command
from django.db import connection, connections, transaction

TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent


def _prepend_pythonpath(path: str) -> None:
    """Put ``path`` first on ``PYTHONPATH`` (for subprocesses), without duplicates."""
    parts = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != path]
    os.environ["PYTHONPATH"] = os.pathsep.join([path, *parts])


if str(TESTS_DIR) not in sys.path:
    sys.path.insert(0, str(TESTS_DIR))
_prepend_pythonpath(str(TESTS_DIR))
os.environ["DJANGO_SETTINGS_MODULE"] = "testproject.settings"

#: "sqlite", "postgres" or "mysql" (same parsing as testproject.settings).
TEST_DB_BACKEND = os.environ.get("BULKPAR_TEST_DB", "").strip().lower() or "sqlite"

#: Temp dir holding this run's sqlite file (None for server backends).
_SQLITE_DIR: Path | None = None
if TEST_DB_BACKEND == "sqlite":
    _SQLITE_DIR = Path(tempfile.mkdtemp(prefix="bulkpar_test_"))
    TEST_DB_NAME = str(_SQLITE_DIR / f"bulkpar_test_{os.getpid()}.sqlite3")
else:
    TEST_DB_NAME = f"bulkpar_test_{os.getpid()}"
os.environ["BULKPAR_TEST_DB_NAME"] = TEST_DB_NAME

django.setup()

_START_HINTS = {
    "postgres": (
        "start it with: pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"
    ),
    "mysql": (
        "start it with: start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd"
    ),
}


def pytest_configure(config: pytest.Config) -> None:
    """Register the custom markers used by the suite."""
    config.addinivalue_line("markers", "slow: long-running test (deselect with -m 'not slow')")


def pytest_unconfigure(config: pytest.Config) -> None:
    """Remove the sqlite temp dir even if the session never reached the DB fixture."""
    if _SQLITE_DIR is not None:
        shutil.rmtree(_SQLITE_DIR, ignore_errors=True)


def _db_settings() -> dict[str, Any]:
    """Return Django's resolved ``DATABASES["default"]``."""
    from django.conf import settings

    return dict(settings.DATABASES["default"])


def _unreachable(exc: BaseException) -> None:
    """Abort the whole run (exit code 3) because the database server is down."""
    cfg = _db_settings()
    label = {"postgres": "PostgreSQL", "mysql": "MariaDB/MySQL"}[TEST_DB_BACKEND]
    pytest.exit(
        f"BULKPAR_TEST_DB={TEST_DB_BACKEND}: cannot connect to {label} at "
        f"{cfg['HOST']}:{cfg['PORT']} as user {cfg['USER']!r}: {exc}\n"
        f"Is the server running? {_START_HINTS[TEST_DB_BACKEND]} "
        "(or point BULKPAR_TEST_DB_HOST/_PORT/_USER at a running server)",
        returncode=3,
    )


def _postgres_admin(sql_statements: list[str]) -> None:
    """Run statements on the server's ``postgres`` database in autocommit mode."""
    import psycopg

    cfg = _db_settings()
    try:
        conn = psycopg.connect(
            host=cfg["HOST"],
            port=int(cfg["PORT"]),
            user=cfg["USER"],
            password=cfg["PASSWORD"] or None,
            dbname="postgres",
            autocommit=True,
            connect_timeout=10,
        )
    except psycopg.OperationalError as exc:
        _unreachable(exc)
        raise  # pragma: no cover - pytest.exit raised already
    with conn:
        for statement in sql_statements:
            conn.execute(statement.encode())


def _mysql_admin(sql_statements: list[str], kill_connections_to: str | None = None) -> None:
    """Run statements on the MySQL server (no default database).

    If ``kill_connections_to`` is given, other sessions using that database are
    killed first (the MySQL analogue of PostgreSQL's ``DROP DATABASE ... WITH
    (FORCE)``), so a leftover worker connection cannot block the drop.
    """
    try:
        import MySQLdb
    except ImportError:
        pytest.exit(
            "BULKPAR_TEST_DB=mysql needs the MySQL driver: pip install -e '.[mysql]' "
            "(it compiles against the MariaDB client headers: apt-get install libmariadb-dev)",
            returncode=3,
        )

    cfg = _db_settings()
    try:
        conn = MySQLdb.connect(
            host=cfg["HOST"],
            port=int(cfg["PORT"]),
            user=cfg["USER"],
            password=cfg["PASSWORD"],
            charset="utf8mb4",
            connect_timeout=10,
        )
    except MySQLdb.OperationalError as exc:
        _unreachable(exc)
        raise  # pragma: no cover - pytest.exit raised already
    try:
        cur = conn.cursor()
        if kill_connections_to is not None:
            cur.execute(
                "SELECT ID FROM information_schema.PROCESSLIST "
                "WHERE DB = %s AND ID <> CONNECTION_ID()",
                (kill_connections_to,),
            )
            for (thread_id,) in cur.fetchall():
                with contextlib.suppress(MySQLdb.OperationalError):  # already gone
                    cur.execute(f"KILL {int(thread_id)}")
        for statement in sql_statements:
            cur.execute(statement)
    finally:
        conn.close()


def _create_database() -> None:
    """Create this run's (empty) database, replacing a stale one of the same name."""
    if TEST_DB_BACKEND == "postgres":
        name = connection.ops.quote_name(TEST_DB_NAME)
        _postgres_admin([f"DROP DATABASE IF EXISTS {name} WITH (FORCE)", f"CREATE DATABASE {name}"])
    elif TEST_DB_BACKEND == "mysql":
        name = connection.ops.quote_name(TEST_DB_NAME)
        _mysql_admin(
            [f"DROP DATABASE IF EXISTS {name}", f"CREATE DATABASE {name} CHARACTER SET utf8mb4"],
            kill_connections_to=TEST_DB_NAME,
        )
    # sqlite: migrate creates the file inside the fresh temp dir.


def _drop_database() -> None:
    """Drop this run's database (sqlite: delete its temp dir)."""
    if TEST_DB_BACKEND == "postgres":
        name = connection.ops.quote_name(TEST_DB_NAME)
        _postgres_admin([f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"])
    elif TEST_DB_BACKEND == "mysql":
        name = connection.ops.quote_name(TEST_DB_NAME)
        _mysql_admin([f"DROP DATABASE IF EXISTS {name}"], kill_connections_to=TEST_DB_NAME)
    elif _SQLITE_DIR is not None:
        shutil.rmtree(_SQLITE_DIR, ignore_errors=True)


@pytest.fixture(scope="session", autouse=True)
def _test_database() -> Iterator[str]:
    """Create and migrate this run's database; drop it at the end of the session.

    Yields the database name (for sqlite, the file path). An unreachable
    server aborts the run with exit code 3 instead of skipping tests.
    """
    _create_database()
    try:
        call_command("migrate", verbosity=0)
        connections.close_all()
        yield TEST_DB_NAME
    finally:
        connections.close_all()
        _drop_database()


#: Apps whose tables every test starts with empty (auth: the differential tests load auth.User).
EMPTIED_APPS = ("testapp", "auth")


def _testapp_tables() -> list[str]:
    """Return the table names of every model of EMPTIED_APPS (incl. auto-created ones)."""
    return [
        model._meta.db_table
        for label in EMPTIED_APPS
        for model in apps.get_app_config(label).get_models(include_auto_created=True)
    ]


def _empty_testapp_tables() -> None:
    """Delete all testapp rows and reset auto-increment counters."""
    tables = _testapp_tables()
    quoted = [connection.ops.quote_name(t) for t in tables]
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(f"TRUNCATE {', '.join(quoted)} RESTART IDENTITY CASCADE")
    elif connection.vendor == "mysql":
        with connection.cursor() as cursor:
            cursor.execute("SET FOREIGN_KEY_CHECKS = 0")
            try:
                for table in quoted:
                    cursor.execute(f"TRUNCATE TABLE {table}")
            finally:
                cursor.execute("SET FOREIGN_KEY_CHECKS = 1")
    else:
        # Django's sqlite FK constraints are deferred, so deleting in any order
        # inside one transaction is fine.
        with transaction.atomic(), connection.cursor() as cursor:
            for table in quoted:
                cursor.execute(f"DELETE FROM {table}")
            cursor.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'sqlite_sequence'"
            )
            if cursor.fetchone():
                placeholders = ", ".join(["%s"] * len(tables))
                cursor.execute(
                    f"DELETE FROM sqlite_sequence WHERE name IN ({placeholders})", tables
                )


@pytest.fixture
def db() -> Iterator[None]:
    """Give the test an empty testapp schema with committed-data semantics.

    Every testapp table is emptied (and its id sequence reset, so the first row
    inserted gets pk 1) before the test. No transaction wraps the test: data is
    committed and visible to worker processes. After the test all of this
    process's connections are closed so none is held open across tests.
    """
    _empty_testapp_tables()
    try:
        yield
    finally:
        connections.close_all()


#: Writers every behavioural test runs with (``copy`` only exists on PostgreSQL).
UPDATE_METHODS = ["django", "values"] + (["copy"] if TEST_DB_BACKEND == "postgres" else [])
LOAD_METHODS = ["values"] + (["copy"] if TEST_DB_BACKEND == "postgres" else [])


@pytest.fixture(params=UPDATE_METHODS)
def update_method(request: pytest.FixtureRequest) -> str:
    """Each writer of ``update --func`` available on this backend."""
    return str(request.param)


@pytest.fixture(params=LOAD_METHODS)
def load_method(request: pytest.FixtureRequest) -> str:
    """Each writer of ``create``/``upsert`` available on this backend."""
    return str(request.param)


def _equation(report: Any) -> str:
    """``total = a + b + …`` of a report, for assertion messages."""
    return f"{report.total} = " + " + ".join(f"{n} {v}" for n, v in report.reconciliation())


@pytest.fixture(autouse=True)
def _every_report_reconciles(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every report an in-process run builds must reconcile (see ``Report.reconciliation``).

    The runner folds its chunk results with ``build_report``; wrapping it here
    checks the documented equation on every report the suite produces,
    whatever the test itself asserts. (CLI runs are checked by ``run_cli``.)
    """
    import bulkpar.engine.runner
    from bulkpar.report import build_report

    def checked(*args: Any, **kwargs: Any) -> Any:
        report = build_report(*args, **kwargs)
        assert report.reconciles, f"the report does not add up: {_equation(report)}"
        return report

    monkeypatch.setattr(bulkpar.engine.runner, "build_report", checked)


def _check_cli_report(stdout: str) -> None:
    """A ``--json`` report printed by the CLI must reconcile; a human one must show ✓."""
    import json

    assert "does not add up" not in stdout, stdout
    try:
        data = json.loads(stdout)
    except ValueError:
        return
    if isinstance(data, dict) and "reconciles" in data:
        assert data["reconciles"] is True, f"the CLI report does not add up: {stdout}"
        counts = {k: v for k, v in data.items() if isinstance(v, int) and not isinstance(v, bool)}
        negative = {k: v for k, v in counts.items() if v < 0}
        assert not negative, f"negative counts in the CLI report: {negative}"


@pytest.fixture(scope="session")
def backend() -> str:
    """The Django vendor string of the database in use: sqlite, postgresql or mysql."""
    return connection.vendor


class RunCli(Protocol):
    """Signature of the callable returned by the ``run_cli`` fixture."""

    def __call__(
        self,
        *args: str | os.PathLike[str],
        input: str | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float = 120,
    ) -> subprocess.CompletedProcess[str]: ...


@pytest.fixture
def run_cli() -> RunCli:
    """Return ``run_cli(*args, input=None, env=None, timeout=120)``.

    It runs ``python -m bulkpar *args`` from the repository root with the
    current environment (which already points at this run's database) plus
    ``env``, captures stdout/stderr as text and returns the
    ``CompletedProcess`` without checking the exit code, but with the report
    checked: a ``--json`` report must reconcile (and a human one must not say
    "does not add up"), as every in-process report must. The CLI runs in its own
    process group; on timeout (``subprocess.TimeoutExpired`` is re-raised) or
    interruption the whole group, worker processes included, is killed.
    """

    def _run(
        *args: str | os.PathLike[str],
        input: str | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float = 120,
    ) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "bulkpar", *(os.fspath(a) for a in args)]
        proc = subprocess.Popen(
            cmd,
            cwd=REPO_ROOT,
            env={**os.environ, **(env or {})},
            stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            stdout, stderr = proc.communicate(input, timeout=timeout)
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise
        _check_cli_report(stdout)
        return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)

    return _run


@pytest.fixture
def people(db: None) -> Callable[..., int]:
    """Return ``make_people(n, **overrides) -> n`` that bulk-creates Person rows.

    Row ``i`` (0-based) gets username ``user{i}``, email
    ``User{i}@Example.COM``, score ``i`` and ``active = (i % 2 == 0)``; with the
    clean ``db`` its pk is ``i + 1``. ``overrides`` replace field values for
    every row; a callable override is called with ``i`` to get the value.
    """
    from testproject.testapp.models import Person

    def make_people(n: int, **overrides: Any) -> int:
        rows = []
        for i in range(n):
            values: dict[str, Any] = {
                "username": f"user{i}",
                "email": f"User{i}@Example.COM",
                "score": i,
                "active": i % 2 == 0,
            }
            for field, value in overrides.items():
                values[field] = value(i) if callable(value) else value
            rows.append(Person(**values))
        Person.objects.bulk_create(rows, batch_size=500)
        return n

    return make_people


def one_line_error(result: Any, code: int, *phrases: str) -> str:
    """The run failed with ``code`` and one ``Error:`` line holding every phrase."""
    assert result.returncode == code, (result.stdout, result.stderr)
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.stderr
    for phrase in phrases:
        assert phrase in errors[0], errors[0]
    assert "Traceback" not in result.stderr
    return errors[0]


@pytest.fixture
def markers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh directory for the fault-injection hooks' once-only markers."""
    folder = tmp_path / "markers"
    folder.mkdir()
    monkeypatch.setenv("BULKPAR_TEST_MARKERS", str(folder))
    return folder
