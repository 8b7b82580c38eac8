"""Tests of pgoutpost's Django companion, on SQLite (no PostgreSQL needed)."""

import io
import os
import tempfile

from django.apps import apps
from django.contrib import admin
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.db import models
from django.test import SimpleTestCase, TestCase, override_settings
from django.test.utils import isolate_apps

import pgoutpost_django
from catalog.models import Category, Gene, Unit
from pgoutpost_django import sidecar, sidecar_yaml
from pgoutpost_django.admin import SyncedModelAdminMixin
from pgoutpost_django.markers import Markers, parse_publication_suffix
from pgoutpost_django.router import PgoutpostRouter
from userapp.models import Report

NO_SEED_SETTINGS = dict(ADDITIONAL_DELETE_MODELS=[], ADDITIONAL_SYSTEM_MODELS=[], PGOUTPOST_MODELS={})


class RouterTests(SimpleTestCase):
    router = PgoutpostRouter()

    @override_settings(PGOUTPOST_ROLE="slave")
    def test_slave_does_not_migrate_synced_contrib_apps(self):
        self.assertIs(self.router.allow_migrate("default", "contenttypes", "contenttype"), False)
        self.assertIs(self.router.allow_migrate("default", "auth", "permission"), False)
        self.assertIsNone(self.router.allow_migrate("default", "catalog", "unit"))

    @override_settings(PGOUTPOST_ROLE="master")
    def test_master_migrates_everything(self):
        self.assertIsNone(self.router.allow_migrate("default", "contenttypes", "contenttype"))

    @override_settings(PGOUTPOST_ROLE="slave", PGOUTPOST_CONTRIB_SYSTEM_TABLES=False)
    def test_unsynced_contrib_apps_migrate_on_slaves(self):
        self.assertIsNone(self.router.allow_migrate("default", "auth", "permission"))

    @override_settings(PGOUTPOST_ROLE=None, IS_MASTER_ENV=False)
    def test_seed_setting_gives_the_role(self):
        self.assertIs(self.router.allow_migrate("default", "auth"), False)

    @override_settings(PGOUTPOST_ROLE=None)
    def test_unknown_role_is_an_error(self):
        env = os.environ.pop("PGOUTPOST_ROLE", None)
        try:
            with self.assertRaises(ImproperlyConfigured):
                self.router.allow_migrate("default", "auth")
        finally:
            if env is not None:
                os.environ["PGOUTPOST_ROLE"] = env

    @override_settings(PGOUTPOST_ROLE="replica")
    def test_bad_role_is_an_error(self):
        with self.assertRaises(ImproperlyConfigured):
            self.router.allow_migrate("default", "auth")


class PopulateContentTypesTests(TestCase):
    def all_models(self):
        return {(m._meta.app_label, m._meta.model_name) for m in apps.get_models(include_auto_created=True)}

    @override_settings(PGOUTPOST_ROLE="master")
    def test_master_creates_every_content_type(self):
        ContentType.objects.all().delete()
        call_command("populate_content_types", stdout=io.StringIO())
        have = set(ContentType.objects.values_list("app_label", "model"))
        self.assertEqual(have, self.all_models())
        self.assertIn(("catalog", "outcome_sub_outcomes"), have)  # auto-created m2m
        call_command("populate_content_types", stdout=io.StringIO())  # twice is harmless
        self.assertEqual(ContentType.objects.count(), len(have))

    @override_settings(PGOUTPOST_ROLE="slave")
    def test_slave_creates_none(self):
        ContentType.objects.all().delete()
        call_command("populate_content_types", stdout=io.StringIO(), stderr=io.StringIO())
        self.assertEqual(ContentType.objects.count(), 0)


class FakeUser:
    is_active = is_staff = is_superuser = True

    def has_perm(self, perm, obj=None):
        return True


class FakeRequest:
    user = FakeUser()


class AdminMixinTests(SimpleTestCase):
    def admin_for(self, model):
        cls = type("A", (SyncedModelAdminMixin, admin.ModelAdmin), {})
        return cls(model, admin.AdminSite())

    def permissions(self, model):
        a, r = self.admin_for(model), FakeRequest()
        return a.has_add_permission(r), a.has_change_permission(r), a.has_delete_permission(r)

    @override_settings(PGOUTPOST_ROLE="slave")
    def test_synced_models_are_read_only_on_slaves(self):
        self.assertEqual(self.permissions(Unit), (False, False, False))  # pgoutpost's decorator
        self.assertEqual(self.permissions(Gene), (False, False, False))  # seed's setting
        self.assertEqual(self.permissions(ContentType), (False, False, False))  # synced contrib

    @override_settings(PGOUTPOST_ROLE="slave")
    def test_user_models_stay_writable_on_slaves(self):
        self.assertEqual(self.permissions(Report), (True, True, True))

    @override_settings(PGOUTPOST_ROLE="master")
    def test_master_is_unchanged(self):
        self.assertEqual(self.permissions(Category), (True, True, True))


def build():
    return sidecar.build(apps)


class MarkerTests(SimpleTestCase):
    def kinds(self):
        m = Markers(apps)
        return {label: (m.sync(apps.get_model(label)) or sidecar.Sync("system")).kind for label in
                ("catalog.Category", "catalog.Unit", "catalog.Marker", "catalog.Outcome", "catalog.Gene", "catalog.Artist")}

    def test_every_marker_is_read(self):
        self.assertEqual(self.kinds(), {
            "catalog.Category": "system",  # @pgoutpost_django.system_model
            "catalog.Unit": "delete",  # @pgoutpost_django.delete_model
            "catalog.Marker": "delete",  # the seed's @delete_model
            "catalog.Outcome": "denormalize",  # the seed's @denormalize_model
            "catalog.Gene": "delete",  # ADDITIONAL_DELETE_MODELS
            "catalog.Artist": "delete",  # PGOUTPOST_MODELS over ADDITIONAL_SYSTEM_MODELS
        })
        self.assertIsNone(Markers(apps).sync(Report))

    @override_settings(ADDITIONAL_DENORMALIZE_MODELS=["catalog.Gene"])
    def test_strongest_seed_kind_wins(self):
        self.assertEqual(self.kinds()["catalog.Gene"], "denormalize")

    @override_settings(SKIP_VALIDATION_MODELS=["catalog.Marker"],
                       ADDITIONAL_PUBLICATION_SETTINGS={"catalog.Marker": "(id, unit_id) WHERE (unit_id > 0)"})
    def test_seed_publication_settings(self):
        sync = Markers(apps).sync(apps.get_model("catalog.Marker"))
        self.assertTrue(sync.skip_validation)
        self.assertEqual((sync.row_filter, sync.columns), ("unit_id > 0", ["id", "unit_id"]))

    def test_publication_suffix(self):
        for text, want in [
            ("WHERE (name != 'test')", ("name != 'test'", [])),
            ('("id", "name")', ("", ["id", "name"])),
            ("WHERE (a > 0) AND (b > 0)", ("(a > 0) AND (b > 0)", [])),
        ]:
            with self.subTest(text=text):
                self.assertEqual(parse_publication_suffix(text), want)

    @override_settings(ADDITIONAL_DELETE_MODELS=["catalog.Nope"])
    def test_unknown_label_is_named(self):
        with self.assertRaisesRegex(Exception, "ADDITIONAL_DELETE_MODELS.*catalog.Nope"):
            build()


def later():
    return 1


def custom_rule(collector, field, sub_objs, using):
    pass


@override_settings(**NO_SEED_SETTINGS)
class OnDeleteTests(SimpleTestCase):
    @isolate_apps("userapp")
    def test_rules_pgoutpost_cannot_express_are_reported(self):
        @pgoutpost_django.delete_model
        class Thing(models.Model):
            class Meta:
                app_label = "userapp"

        class Holder(models.Model):
            by_callable = models.ForeignKey(Thing, on_delete=models.SET(later), related_name="+")
            by_function = models.ForeignKey(Thing, on_delete=custom_rule, related_name="+")
            by_literal = models.ForeignKey(Thing, on_delete=models.SET(5), related_name="+")
            by_string = models.ForeignKey(Thing, to_field="id", on_delete=models.SET("it's"), related_name="+")
            by_none = models.ForeignKey(Thing, on_delete=models.SET(None), null=True, related_name="+")
            by_default = models.ForeignKey(Thing, on_delete=models.SET_DEFAULT, default=later, related_name="+")

            class Meta:
                app_label = "userapp"

        s = sidecar.build(Thing._meta.apps)
        problems = {p.where: p.message for p in s.problems}
        self.assertEqual(set(problems), {"userapp.Holder.by_callable", "userapp.Holder.by_function", "userapp.Holder.by_default"})
        self.assertIn("SET(later)", problems["userapp.Holder.by_callable"])
        self.assertIn("custom_rule (a custom function)", problems["userapp.Holder.by_function"])
        self.assertEqual(s.relations["userapp_holder.by_literal_id"].rule, "SET(5)")
        self.assertEqual(s.relations["userapp_holder.by_string_id"].rule, "SET('it''s')")
        self.assertEqual(s.relations["userapp_holder.by_none_id"].rule, "SET_NULL")

    @isolate_apps("userapp")
    def test_a_setting_gives_the_rule_of_a_callable(self):
        @pgoutpost_django.delete_model
        class Thing(models.Model):
            class Meta:
                app_label = "userapp"

        class Holder(models.Model):
            thing = models.ForeignKey(Thing, on_delete=models.SET(later))

            class Meta:
                app_label = "userapp"

        with self.settings(PGOUTPOST_ON_DELETE={"userapp.Holder.thing": "SET_NULL"}):
            s = sidecar.build(Thing._meta.apps)
        self.assertEqual(s.problems, [])
        self.assertEqual(s.relations["userapp_holder.thing_id"].rule, "SET_NULL")


class CheckTests(SimpleTestCase):
    def generate(self):
        path = os.path.join(tempfile.mkdtemp(), "sidecar.yaml")
        call_command("pgoutpost_config", "--output", path)
        with open(path) as f:
            return path, f.read()

    def check(self, path):
        out = io.StringIO()
        try:
            call_command("pgoutpost_config", "--check", path, stdout=out)
        except SystemExit as e:
            return e.code, out.getvalue()
        return 0, out.getvalue()

    def test_generated_file_passes(self):
        path, _ = self.generate()
        self.assertEqual(self.check(path), (0, ""))

    def test_a_changed_on_delete_is_caught(self):
        path, text = self.generate()
        with open(path, "w") as f:
            f.write(text.replace("userapp_song.album_id: RESTRICT", "userapp_song.album_id: CASCADE"))
        code, out = self.check(path)
        self.assertEqual(code, 1)
        self.assertIn("userapp_song.album_id", out)
        self.assertIn("says CASCADE, the models say RESTRICT", out)

    def test_a_missing_model_and_relation_are_caught(self):
        path, text = self.generate()
        text = text.replace("  - name: catalog.Gene\n    kind: delete\n", "")
        text = text.replace("  userapp_comment.parent_id: CASCADE\n", "")
        with open(path, "w") as f:
            f.write(text)
        code, out = self.check(path)
        self.assertEqual(code, 1)
        self.assertIn("catalog_gene is a delete model (catalog.Gene), missing", out)
        self.assertIn("userapp_comment.parent_id: CASCADE is missing", out)

    def test_hand_written_forms_are_equal(self):
        text = (
            "environment: x  # not read\n"
            "models:\n"
            "- {name: catalog.Category, kind: system, row_filter: 'id > 0', columns: [id, name]}\n"
            "- name: public.catalog_unit\n  kind: delete\n  on_truncate: log\n"
            "relations:\n"
            "  public.catalog_unit.category_id: {on_delete: PROTECT}\n"
            "  'userapp_song.album_id': \"RESTRICT\"  # quoted\n"
            "generic_relations:\n"
            "  - {target: userapp_report, table: userapp.TaggedItem, content_type: userapp.report}\n"
        )
        have = sidecar_yaml.read_sections(text)
        want = sidecar_yaml.read_sections(sidecar_yaml.write(build()))
        # Every entry of the hand-written file equals the generated one;
        # only the entries it leaves out differ.
        diffs = sidecar_yaml.diff(want, have, "f")
        self.assertEqual([d for d in diffs if "missing from f" not in d], [])
        self.assertEqual(len(diffs), len(want.models) - 2 + len(want.relations) - 2 + len(want.generic_relations) - 1)


class UpdateTests(SimpleTestCase):
    def test_update_keeps_the_rest_of_the_file(self):
        path = os.path.join(tempfile.mkdtemp(), "sidecar.yaml")
        with open(path, "w") as f:
            f.write("environment: staging\n\n# the models\nmodels:\n  - name: old.Thing\n    kind: system\n\n# NATS\nnats:\n  url: nats://x\n")
        call_command("pgoutpost_config", "--update", path)
        with open(path) as f:
            text = f.read()
        self.assertTrue(text.startswith("environment: staging\n\n# the models\nmodels:\n  - name: catalog.Category\n"))
        self.assertIn("\n\n# NATS\nnats:\n  url: nats://x\n", text)
        self.assertNotIn("old.Thing", text)
        self.assertIn("\nrelations:\n", text)
        self.assertIn("\ngeneric_relations:\n", text)
