"""Seeding the demo table with messy rows."""

from people.models import Person


def seed(rows: int, *, batch: int = 5000) -> int:
    """Insert ``rows`` people (half with upper-case e-mails) and return the count."""
    Person.objects.all().delete()
    for start in range(0, rows, batch):
        Person.objects.bulk_create(
            Person(
                username=f"user{i:07d}",
                email=f"User{i}@Example.COM" if i % 2 else f"user{i}@example.com",
                score=i % 100,
                active=i % 3 != 0,
            )
            for i in range(start, min(start + batch, rows))
        )
    return rows
