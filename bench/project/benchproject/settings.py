"""Settings of the benchmark project.

The database comes from ``$BENCH_DATABASE_URL`` (parsed by dj-database-url),
by default ``postgres://postgres@127.0.0.1:5432/bulkpar_bench``. The settings
read nothing else, so they import identically in the harness, in the
``bulkpar`` CLI and in every worker process, whatever the start method.
"""

from __future__ import annotations

import dj_database_url

#: The database used when ``$BENCH_DATABASE_URL`` is not set.
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/bulkpar_bench"

SECRET_KEY = "bulkpar-bench-not-secret"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
INSTALLED_APPS = ["benchapp"]
DATABASES = {
    "default": dj_database_url.config(env="BENCH_DATABASE_URL", default=DEFAULT_DATABASE_URL)
}
