"""Loading a Django project: settings, models, callables and connections.

Everything here runs both in the parent process and, through the pool
initializer, in every worker process, so it takes plain strings (a settings
module name, a list of ``sys.path`` entries) that pickle under any start
method.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from bulkpar.errors import (
    DatabaseUnreachableError,
    FunctionImportError,
    MissingTableError,
    ModelNotFoundError,
    SettingsError,
    did_you_mean,
)


def add_pythonpath(paths: Sequence[str]) -> None:
    """Prepend ``paths`` to ``sys.path`` (like ``django-admin --pythonpath``)."""
    for path in reversed([os.path.abspath(p) for p in paths]):
        if path not in sys.path:
            sys.path.insert(0, path)


def load_settings(settings: str | None = None, pythonpath: Sequence[str] = ()) -> str | None:
    """Import the settings module, without loading the project's apps yet.

    The first half of :func:`setup_django`: the command line reads the
    database engines from the settings before ``django.setup()`` (to start
    the workers' forkserver with the right driver, see
    :func:`bulkpar.engine.executors.forkserver_preload`).

    Args:
        settings: dotted settings module; falls back to ``DJANGO_SETTINGS_MODULE``.
        pythonpath: directories to put on ``sys.path`` first. The current
            directory is always importable, as it is for ``manage.py``.

    Returns:
        The settings module name, or None when Django was configured
        already and no module was named.

    Raises:
        SettingsError: no settings module was given, or it fails to import.
    """
    from django.conf import settings as django_settings

    add_pythonpath([*pythonpath, os.getcwd()])
    if settings:
        os.environ["DJANGO_SETTINGS_MODULE"] = settings
    module = os.environ.get("DJANGO_SETTINGS_MODULE")
    if django_settings.configured and not settings:
        return None
    if not module:
        raise SettingsError(
            "no Django settings module given; pass --settings mysite.settings "
            "or set DJANGO_SETTINGS_MODULE"
        )
    try:
        importlib.import_module(module)
    except Exception as exc:
        raise SettingsError(
            f"cannot import settings module {module!r}: {type(exc).__name__}: {exc}; "
            "check --settings / DJANGO_SETTINGS_MODULE and --pythonpath "
            f"(searched from {os.getcwd()})"
        ) from exc
    return module


def setup_django(settings: str | None = None, pythonpath: Sequence[str] = ()) -> str:
    """Configure Django from a settings module and call ``django.setup()``.

    Args:
        settings: dotted settings module; falls back to ``DJANGO_SETTINGS_MODULE``.
        pythonpath: directories to put on ``sys.path`` first. The current
            directory is always importable, as it is for ``manage.py``.

    Returns:
        The settings module name that was loaded.

    Raises:
        SettingsError: no settings module was given, or it fails to import.
    """
    import django
    from django.apps import apps

    module = load_settings(settings, pythonpath)
    if module is None and apps.ready:  # the caller configured and set up Django
        return os.environ.get("DJANGO_SETTINGS_MODULE") or "<configured>"
    name = module or os.environ.get("DJANGO_SETTINGS_MODULE") or "<configured>"
    try:
        django.setup()
    except Exception as exc:
        raise SettingsError(
            f"django.setup() failed for settings {name!r}: {type(exc).__name__}: {exc}"
        ) from exc
    return name


def resolve_model(label: str) -> type[Any]:
    """Return the model class for ``"app_label.ModelName"`` (case-insensitive).

    Raises:
        ModelNotFoundError: with a "did you mean" hint when a close name exists.
    """
    from django.apps import apps

    app_label, dot, model_name = label.partition(".")
    if not dot or not app_label or not model_name:
        raise ModelNotFoundError(
            f"invalid model {label!r}: use the form app_label.ModelName, e.g. auth.User"
        )
    all_labels = [m._meta.label for m in apps.get_models()]
    try:
        app_config = apps.get_app_config(app_label)
    except LookupError:
        app_labels = [a.label for a in apps.get_app_configs()]
        hint = did_you_mean(label, all_labels) or did_you_mean(app_label, app_labels)
        raise ModelNotFoundError(
            f"unknown app {app_label!r} in model {label!r}{hint} "
            f"(installed apps: {', '.join(sorted(app_labels))})"
        ) from None
    try:
        return app_config.get_model(model_name)  # case-insensitive lookup
    except LookupError:
        names = [m.__name__ for m in app_config.get_models()]
        hint = did_you_mean(label, all_labels)
        raise ModelNotFoundError(
            f"unknown model {label!r}{hint} "
            f"(models in {app_label!r}: {', '.join(sorted(names)) or 'none'})"
        ) from None


def model_label(model: type[Any]) -> str:
    """``"app_label.ModelName"`` for a model class."""
    return str(model._meta.label)


def import_callable(ref: str, *, what: str = "--func") -> Callable[..., Any]:
    """Import ``"package.module:callable"`` (``module.callable`` also accepted).

    Raises:
        FunctionImportError: the module or attribute is missing, or not callable.
    """
    module_name, colon, attr = ref.partition(":")
    if not colon:
        module_name, _, attr = ref.rpartition(".")
    if not module_name or not attr:
        raise FunctionImportError(f"invalid {what} {ref!r}: use the form package.module:function")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise FunctionImportError(
            f"cannot import module {module_name!r} for {what} {ref!r}: "
            f"{type(exc).__name__}: {exc}; is it on the Python path (--pythonpath)?"
        ) from exc
    target: Any = module
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            public = [n for n in dir(module) if not n.startswith("_")]
            hint = did_you_mean(part, public)
            raise FunctionImportError(
                f"module {module_name!r} has no attribute {attr!r} for {what} {ref!r}{hint}"
            ) from None
    if not callable(target):
        raise FunctionImportError(
            f"{what} {ref!r} is not callable (it is a {type(target).__name__}); "
            "name a function that takes one model instance"
        )
    return target  # type: ignore[no-any-return]


def callable_ref(func: Callable[..., Any]) -> str:
    """The importable ``module:qualname`` of a function, for sending to workers.

    Raises:
        FunctionImportError: the callable cannot be re-imported by name
            (a lambda, a closure, a method of a local class).
    """
    module = getattr(func, "__module__", None)
    qualname = getattr(func, "__qualname__", None)
    if not module or not qualname or "<" in qualname or module == "__main__":
        raise FunctionImportError(
            f"{func!r} cannot be sent to worker processes: define it at module level "
            "in an importable module, or use executor='thread' or 'serial'"
        )
    ref = f"{module}:{qualname}"
    try:
        found = import_callable(ref)
    except FunctionImportError as exc:
        raise FunctionImportError(
            f"{func!r} cannot be re-imported as {ref!r} in worker processes: {exc}"
        ) from exc
    if found is not func and getattr(found, "__wrapped__", None) is not func:
        raise FunctionImportError(
            f"{ref!r} does not resolve to {func!r}; define it at module level"
        )
    return ref


def describe_database(alias: str) -> str:
    """A short human description of a database alias, without secrets."""
    from django.db import connections

    conf = connections[alias].settings_dict
    vendor = connections[alias].vendor
    if vendor == "sqlite":
        return f"sqlite file {conf.get('NAME')!s}"
    host = conf.get("HOST") or "localhost"
    port = conf.get("PORT") or "default port"
    return f"{vendor} database {conf.get('NAME')!r} at {host}:{port} as {conf.get('USER')!r}"


def check_database(alias: str, model: type[Any] | None = None) -> None:
    """Open a connection so an unreachable server fails fast.

    The connection stays open for what this process asks next (the run's
    count and key probes); the runner closes it before it forks workers.

    With ``model``, also check that its table (and, for multi-table
    inheritance, its parents' tables) exist, so an unmigrated database is one
    clear line before any write, not an error in every worker.

    Raises:
        DatabaseUnreachableError: naming the alias, server and the driver's message.
        MissingTableError: naming the model, the missing table and ``migrate``.
    """
    from django.db import connections
    from django.utils.connection import ConnectionDoesNotExist

    try:
        connection = connections[alias]
    except ConnectionDoesNotExist:
        from django.conf import settings

        raise DatabaseUnreachableError(
            f"unknown database alias {alias!r}; DATABASES defines: {', '.join(settings.DATABASES)}"
        ) from None
    try:
        connection.ensure_connection()
    except Exception as exc:
        message = " ".join(str(exc).split())
        raise DatabaseUnreachableError(
            f"cannot connect to {describe_database(alias)} (alias {alias!r}): {message}; "
            "check that the server is running and DATABASES in your settings"
        ) from exc
    if model is not None:
        _check_tables(alias, model)


def _check_tables(alias: str, model: type[Any]) -> None:
    from django.db import connections

    with connections[alias].cursor() as cursor:
        names = connections[alias].introspection.table_names(cursor, include_views=True)
    present = {name.lower() for name in names}
    for owner in [model, *model._meta.get_parent_list()]:
        table = owner._meta.db_table
        if '"' in table or table.lower() in present:
            continue  # a quoted "schema"."table" name is beyond a plain lookup
        app = owner._meta.app_label
        raise MissingTableError(
            f"the table {table!r} of {owner._meta.label} does not exist in "
            f"{describe_database(alias)}; run 'python manage.py migrate {app}' "
            f"(or 'django-admin migrate {app} --settings …') first"
        )


def close_connections() -> None:
    """Close every Django connection of this process.

    Called before a process pool starts: a forked child that inherits the
    parent's open socket would share one server session with it.
    """
    from django.db import connections

    connections.close_all()
