"""Settings of the test project: the apps of the reference Django schema
(catalog, userapp) plus contenttypes and auth, on SQLite.

The catalog models are marked every way the companion understands, so that
the generated sidecar.yaml is the one the repository's example describes:
pgoutpost's decorators (Category, Unit), django-logical-replication's
decorators (Marker, Outcome) and settings (Gene), and PGOUTPOST_MODELS, which
wins over the seed's settings (Artist).
"""

SECRET_KEY = "test only"
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "pgoutpost_django",
    "catalog",
    "userapp",
]

DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
DATABASE_ROUTERS = ["pgoutpost_django.router.PgoutpostRouter"]

PGOUTPOST_ROLE = "master"

# django-logical-replication's settings, read unchanged.
ADDITIONAL_DELETE_MODELS = ["catalog.Gene"]
ADDITIONAL_SYSTEM_MODELS = ["catalog.Artist"]

# pgoutpost's own: a kind, or a mapping of the keys of a models: entry.
PGOUTPOST_MODELS = {"catalog.Artist": "delete"}
