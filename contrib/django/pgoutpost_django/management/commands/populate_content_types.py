from django.apps import apps
from django.contrib.contenttypes.models import ContentType
from django.core.management.base import BaseCommand
from django.db import DEFAULT_DB_ALIAS, transaction

from pgoutpost_django.role import is_master


class Command(BaseCommand):
    help = (
        "On the master, create the content type of every model (auto-created many-to-many "
        "tables included) that has none, so that slaves receive them and never create their own. "
        "Run it after migrate on the master. On a slave it does nothing."
    )

    def add_arguments(self, parser):
        parser.add_argument("--database", default=DEFAULT_DB_ALIAS, help="database alias (default %(default)s)")

    def handle(self, *args, database=DEFAULT_DB_ALIAS, **options):
        if not is_master():
            self.stderr.write("populate_content_types: this is a slave: its content types come from the master")
            return
        created = []
        with transaction.atomic(using=database):
            manager = ContentType.objects.db_manager(database)
            have = set(manager.values_list("app_label", "model"))
            for model in apps.get_models(include_auto_created=True):
                key = (model._meta.app_label, model._meta.model_name)
                if key not in have:
                    manager.create(app_label=key[0], model=key[1])
                    have.add(key)
                    created.append(".".join(key))
        ContentType.objects.clear_cache()
        if options["verbosity"] >= 1:
            self.stdout.write(f"populate_content_types: created {len(created)} content types")
        if options["verbosity"] >= 2:
            for name in created:
                self.stdout.write(f"  {name}")
