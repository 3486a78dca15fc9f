"""Building the queryset a command selects from ``--filter`` and ``--exclude`` strings."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from bulkpar.errors import FieldNotFoundError
from bulkpar.inputs.selection_strings import parse_lookup


def select(
    model: type[Any],
    *,
    filters: Iterable[str] = (),
    excludes: Iterable[str] = (),
    database: str = "default",
) -> Any:
    """The model's default-manager queryset narrowed by lookups given as strings.

    Every ``--filter`` must match; each ``--exclude`` removes the rows it
    matches on its own (repeated excludes are not combined with AND).

    Raises:
        FieldNotFoundError: a field or lookup in a spec does not exist.
        bulkpar.errors.UsageError: a value cannot be converted for its field.
    """
    from django.core.exceptions import FieldError

    queryset = model._default_manager.db_manager(database).all()
    for option, specs in (("--filter", filters), ("--exclude", excludes)):
        for spec in specs:
            lookup, value = parse_lookup(model, spec, option=option)
            try:
                if option == "--filter":
                    queryset = queryset.filter(**{lookup: value})
                else:
                    queryset = queryset.exclude(**{lookup: value})
            except FieldError as exc:
                raise FieldNotFoundError(
                    f"invalid {option} {spec!r} for model {model._meta.label}: {exc}"
                ) from None
    return queryset
