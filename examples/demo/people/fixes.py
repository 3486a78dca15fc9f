"""Transforms for ``bulkpar update --func people.fixes:NAME``.

Each receives one Person and changes it in place; returning False leaves
the row as it is.
"""

from people.models import Person


def normalize_email(person: Person) -> None:
    """Lower-case and strip the e-mail address (rows already clean are not rewritten)."""
    person.email = person.email.strip().lower()


def reward_active(person: Person) -> bool | None:
    """Give active people 10 points; leave inactive ones alone."""
    if not person.active:
        return False
    person.score += 10
    return None
