import os
import sys

from django.apps import apps
from django.core.management.base import BaseCommand, CommandError

from pgoutpost_django import sidecar, sidecar_yaml
from pgoutpost_django.markers import MarkerError


class Command(BaseCommand):
    help = (
        "Write the models, relations and generic_relations sections of pgoutpost's sidecar.yaml "
        "from the Django models: to stdout, to --output FILE, or into an existing sidecar.yaml "
        "with --update FILE (the rest of the file is kept). --check FILE compares a sidecar.yaml "
        "with the models and exits 1 with the differences."
    )

    def add_arguments(self, parser):
        group = parser.add_mutually_exclusive_group()
        group.add_argument("--output", "-o", metavar="FILE", help="write the three sections to FILE instead of stdout")
        group.add_argument("--update", metavar="FILE", help="replace the three sections of an existing sidecar.yaml")
        group.add_argument("--check", metavar="FILE", help="exit 1 when FILE's sections disagree with the models")

    def handle(self, *args, output=None, update=None, check=None, **options):
        try:
            sections = sidecar.build(apps)
        except MarkerError as e:
            raise CommandError(str(e))
        for p in sections.problems:
            self.stderr.write(f"pgoutpost_config: {p}")

        if check:
            text = read(check)
            try:
                have = sidecar_yaml.read_sections(text, check)
            except sidecar_yaml.ReadError as e:
                raise CommandError(f"read {check}: {e}")
            differences = sidecar_yaml.diff(sections, have, check)
            if differences:
                self.stdout.write(f"{check} disagrees with the models ({len(differences)} differences):")
                for d in differences:
                    self.stdout.write(f"  {d}")
                self.stdout.write("Run `manage.py pgoutpost_config --update %s` to rewrite its sections." % check)
                sys.exit(1)
        elif update:
            write(update, sidecar_yaml.replace_sections(read(update), sections))
        elif output:
            write(output, sidecar_yaml.write(sections))
        else:
            self.stdout.write(sidecar_yaml.write(sections), ending="")
        if sections.problems:
            raise CommandError(f"{len(sections.problems)} on_delete rules cannot be expressed in sidecar.yaml (listed above)")


def read(path):
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError as e:
        raise CommandError(f"read {path}: {e}")


def write(path, text):
    # Through a temporary file, so that a reader never sees half a configuration.
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except OSError as e:
        raise CommandError(f"write {path}: {e}")
