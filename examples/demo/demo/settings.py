"""Settings of the bulkpar demo project.

The database is SQLite by default (a file named by $BULKPAR_DEMO_DB, else
demo.sqlite3 beside manage.py). Set DATABASE_URL to use PostgreSQL or MySQL,
e.g. postgres://postgres@127.0.0.1:5432/demo (needs dj-database-url).
"""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
SECRET_KEY = "demo-only-not-secret"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
INSTALLED_APPS = ["people"]

if os.environ.get("DATABASE_URL"):
    import dj_database_url

    DATABASES = {"default": dj_database_url.parse(os.environ["DATABASE_URL"])}
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": os.environ.get("BULKPAR_DEMO_DB", str(BASE_DIR / "demo.sqlite3")),
            "OPTIONS": {"timeout": 30},
        }
    }
