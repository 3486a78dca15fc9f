"""``manage.py seed_people --rows N``: fill the demo table."""

from django.core.management.base import BaseCommand

from people.seed import seed


class Command(BaseCommand):
    help = "Replace the people table with N generated rows."

    def add_arguments(self, parser):
        parser.add_argument("--rows", type=int, default=50_000)

    def handle(self, *args, rows, **options):
        seed(rows)
        self.stdout.write(f"seeded {rows} people")
