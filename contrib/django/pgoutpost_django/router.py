"""A database router that keeps migrate off the synced contrib tables on slaves."""

from pgoutpost_django.role import SLAVE, is_synced_contrib_app, role


class PgoutpostRouter:
    """Refuses to migrate contenttypes and auth on a slave.

    Their tables and rows come from the master: a slave that ran their
    migrations would also run their post_migrate handlers and create content
    types and permissions of its own, whose ids then collide with the
    master's when they arrive. The migrations are still recorded as applied
    on the slave. Place it first in DATABASE_ROUTERS; it has no opinion on
    anything else (it returns None).
    """

    def allow_migrate(self, db, app_label, model_name=None, **hints):
        if is_synced_contrib_app(app_label) and role() == SLAVE:
            return False
        return None
