"""Whether this environment is the master or a slave.

settings.PGOUTPOST_ROLE ("master" or "slave") says so; without it the
environment variable PGOUTPOST_ROLE, the one pgoutpost itself reads, does; and
without either, django-logical-replication's settings.IS_MASTER_ENV. Nothing
guesses: with none of the three set, asking is an ImproperlyConfigured error,
because a slave taken for a master would create its own content types.
"""

import os

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

MASTER = "master"
SLAVE = "slave"

# The Django apps whose tables pgoutpost syncs as system tables unless
# sidecar.yaml sets contrib_system_tables: false (settings.PGOUTPOST_CONTRIB_SYSTEM_TABLES).
SYNCED_CONTRIB_APPS = ("contenttypes", "auth")


def role():
    """Returns MASTER or SLAVE."""
    value = getattr(settings, "PGOUTPOST_ROLE", None) or os.environ.get("PGOUTPOST_ROLE")
    if value:
        value = str(value).strip().lower()
        if value not in (MASTER, SLAVE):
            raise ImproperlyConfigured(f"PGOUTPOST_ROLE is {value!r}: want master or slave")
        return value
    is_master = getattr(settings, "IS_MASTER_ENV", None)
    if is_master is not None:
        return MASTER if is_master else SLAVE
    raise ImproperlyConfigured(
        "pgoutpost does not know whether this environment is the master or a slave: "
        "set PGOUTPOST_ROLE = 'master' or 'slave' in the settings (or the PGOUTPOST_ROLE environment variable)"
    )


def is_master():
    return role() == MASTER


def contrib_system_tables():
    """Whether contenttypes and auth are synced (sidecar.yaml's contrib_system_tables)."""
    return bool(getattr(settings, "PGOUTPOST_CONTRIB_SYSTEM_TABLES", True))


def is_synced_contrib_app(app_label):
    return contrib_system_tables() and app_label in SYNCED_CONTRIB_APPS
