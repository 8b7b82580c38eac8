from django.apps import AppConfig


class PgoutpostConfig(AppConfig):
    name = "pgoutpost_django"
    label = "pgoutpost"
    verbose_name = "pgoutpost"
