"""The models, relations and generic_relations sections of sidecar.yaml, from the models.

build() walks an app registry and returns a Sections: the synced models with
their kinds, the on_delete rule of every foreign key and one-to-one field that
points at a synced table or at one that deletes of a delete model reach by
CASCADE (what pgoutpost's registry asks a rule for), and the GenericRelations
of those tables. A rule pgoutpost cannot express (SET with a callable, a
custom on_delete function) is a Problem naming the model and field; the
setting PGOUTPOST_ON_DELETE gives the rule to use instead.
"""

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Dict, List, Optional, Tuple

from django.conf import settings
from django.db import models
from django.db.models.fields import NOT_PROVIDED

from pgoutpost_django.markers import DELETE, DENORMALIZE, KINDS, Markers, Sync
from pgoutpost_django.role import is_synced_contrib_app

DEFAULT_SCHEMA = "public"


@dataclass
class Model:
    """An entry of models:. table is schema.table."""

    table: str
    sync: Sync
    label: str = ""  # the Django label, when the entry names the model by it
    comment: str = ""


@dataclass(frozen=True)
class Relation:
    """A value of relations:. rule is CASCADE, SET(1), ...; "" for a parent link alone."""

    rule: str = ""
    references: str = ""
    parent_link: bool = False
    default: str = ""

    def normalized(self):
        """The relation as pgoutpost reads it: a parent link is CASCADE."""
        rule = self.rule or ("CASCADE" if self.parent_link else "")
        return Relation(rule=rule, references=qualify(self.references), parent_link=self.parent_link, default=self.default)


@dataclass(frozen=True)
class GenericRelation:
    target: str  # label or table, as written
    table: str
    content_type_column: str
    object_id_column: str
    content_type: str
    on_delete: str = "CASCADE"


@dataclass
class Problem:
    """A model or field pgoutpost cannot describe."""

    where: str  # app_label.Model.field
    message: str

    def __str__(self):
        return f"{self.where}: {self.message}"


@dataclass
class Sections:
    models: List[Model] = field(default_factory=list)
    # relations keyed by table.column (schema public) or schema.table.column
    relations: Dict[str, Relation] = field(default_factory=dict)
    generic_relations: List[GenericRelation] = field(default_factory=list)
    problems: List[Problem] = field(default_factory=list)


def qualify(name):
    """schema.table[.column] from table[.column] or schema.table[.column]; "" stays ""."""
    if not name:
        return ""
    parts = name.split(".")
    return ".".join([DEFAULT_SCHEMA] + parts) if len(parts) == 2 else name


def table_name(model):
    """The model's table as schema.table (Django puts it in the search path's first schema)."""
    return qualify(model._meta.db_table + ".x")[: -len(".x")]


def default_table(label):
    app, _, name = label.partition(".")
    return f"{DEFAULT_SCHEMA}.{app}_{name.lower()}"


def is_label(name):
    """pgoutpost's rule: a name whose part after the dot has an upper-case letter is a Django label."""
    _, dot, rest = name.partition(".")
    return bool(dot) and rest != rest.lower()


def model_ref(model):
    """How sidecar.yaml names a model: its label when that resolves to its table, else its table."""
    label = model._meta.label
    if is_label(label) and default_table(label) == table_name(model):
        return label
    return short(table_name(model))


def short(qualified):
    """Drops the public schema: public.t -> t."""
    prefix = DEFAULT_SCHEMA + "."
    return qualified[len(prefix) :] if qualified.startswith(prefix) else qualified


def concrete_models(apps):
    for model in apps.get_models(include_auto_created=True):
        opts = model._meta
        if opts.proxy or opts.swapped:
            continue
        yield model


def relation_fields(model):
    """The model's own foreign keys and one-to-one fields (parent links included)."""
    for f in model._meta.local_fields:
        if f.is_relation and f.concrete and (f.many_to_one or f.one_to_one) and f.remote_field.model:
            yield f


def generic_relation_fields(model):
    try:
        from django.contrib.contenttypes.fields import GenericRelation as GR
    except ImportError:  # contenttypes is not installed
        return
    for f in model._meta.private_fields:
        if isinstance(f, GR):
            yield f


def build(apps) -> Sections:
    """Describes the app registry apps as sidecar.yaml sections."""
    markers = Markers(apps)
    out = Sections()
    all_models = list(concrete_models(apps))
    kinds: Dict[type, Sync] = {}
    for model in all_models:
        if model._meta.auto_created:
            continue  # many-to-many tables take their owner's kind, below
        sync = markers.sync(model)
        if sync is not None:
            kinds[model] = sync
    for model in all_models:
        if model._meta.auto_created and model not in kinds:
            sync = markers.sync(model) or m2m_kind(model, kinds)
            if sync is not None:
                kinds[model] = sync

    def synced(model):
        return model in kinds or is_synced_contrib_app(model._meta.app_label)

    # Each auto-created many-to-many table right after its owner.
    ordered = []
    for model in all_models:
        if not model._meta.auto_created:
            ordered.append(model)
            ordered.extend(m for m in all_models if m._meta.auto_created is model)
    for model in ordered:
        if model not in kinds:
            continue
        sync = kinds[model]
        entry = Model(table=table_name(model), sync=sync)
        if model._meta.auto_created:
            owner = model._meta.auto_created
            m2m = next((f.name for f in owner._meta.local_many_to_many if f.remote_field.through is model), "?")
            entry.comment = f"auto-created many-to-many table of {owner._meta.label}.{m2m}"
        else:
            entry.label = model._meta.label
        out.models.append(entry)

    reach = delete_reach(all_models, kinds, synced)
    overrides = on_delete_overrides(apps, out)
    for model in all_models:
        if is_synced_contrib_app(model._meta.app_label) and model not in kinds:
            continue  # Django's own foreign keys: pgoutpost knows their rules
        for f in relation_fields(model):
            target = f.remote_field.model
            if not (synced(target) or target in reach):
                continue
            key = f"{short(table_name(model))}.{f.column}"
            where = f"{model._meta.label}.{f.name}"
            rel = overrides.get(where) or field_relation(f, model, out.problems)
            if rel is not None:
                out.relations[key] = rel
        for g in generic_relation_fields(model):
            if model not in reach:
                continue
            related = g.related_model
            out.generic_relations.append(
                GenericRelation(
                    target=model_ref(model),
                    table=model_ref(related),
                    content_type_column=related._meta.get_field(g.content_type_field_name).column,
                    object_id_column=related._meta.get_field(g.object_id_field_name).column,
                    content_type=f"{model._meta.app_label}.{model._meta.model_name}",
                )
            )
    out.relations = dict(sorted(out.relations.items()))
    return out


def m2m_kind(through, kinds) -> Optional[Sync]:
    """An auto-created many-to-many table between synced models takes its owner's kind."""
    owner = through._meta.auto_created
    if owner not in kinds:
        return None
    ends = [f.remote_field.model for f in relation_fields(through)]
    if all(e in kinds or is_synced_contrib_app(e._meta.app_label) for e in ends):
        return Sync(kind=kinds[owner].kind, origin=f"many-to-many of {owner._meta.label}")
    return None


def delete_reach(all_models, kinds, synced):
    """The models whose rows deletes of a delete model reach: the delete models,
    the synced contrib models a user model points at (pgoutpost makes those
    delete models), and whatever CASCADE, a parent link or a GenericRelation
    leads to from them."""
    reach = {m for m, s in kinds.items() if s.kind in (DELETE, DENORMALIZE)}
    for model in all_models:
        if synced(model):
            continue
        for f in relation_fields(model):
            target = f.remote_field.model
            if is_synced_contrib_app(target._meta.app_label) and target not in kinds:
                reach.add(target)
    changed = True
    while changed:
        changed = False
        for model in all_models:
            if model in reach:
                continue
            for f in relation_fields(model):
                if f.remote_field.model in reach and (f.remote_field.on_delete is models.CASCADE or f.remote_field.parent_link):
                    reach.add(model)
                    changed = True
                    break
        for model in list(reach):
            for g in generic_relation_fields(model):
                if g.related_model not in reach:
                    reach.add(g.related_model)
                    changed = True
    return reach


RULES = {
    models.CASCADE: "CASCADE",
    models.PROTECT: "PROTECT",
    models.RESTRICT: "RESTRICT",
    models.SET_NULL: "SET_NULL",
    models.SET_DEFAULT: "SET_DEFAULT",
    models.DO_NOTHING: "DO_NOTHING",
}


def field_relation(f, model, problems) -> Optional[Relation]:
    """The relation of one foreign key, or None (with a Problem) when pgoutpost cannot express it."""
    where = f"{model._meta.label}.{f.name}"
    remote = f.remote_field
    references = ""
    if not f.db_constraint:
        references = f"{short(table_name(remote.model))}.{f.target_field.column}"
    if remote.parent_link:
        return Relation(parent_link=True, references=references)
    on_delete = remote.on_delete
    rule = RULES.get(on_delete)
    default = ""
    if rule is None:
        rule, why = set_rule(on_delete)
        if rule is None:
            problems.append(Problem(where, f"on_delete={why} cannot be expressed in sidecar.yaml; "
                                           f"give the rule the slaves apply in settings.PGOUTPOST_ON_DELETE[{where!r}]"))
            return None
    # Django 5's db_default is the column's DEFAULT, which pgoutpost uses by itself.
    if rule == "SET_DEFAULT" and f.has_default() and getattr(f, "db_default", NOT_PROVIDED) is NOT_PROVIDED:
        value = f.default
        if callable(value):
            problems.append(Problem(where, "on_delete=SET_DEFAULT with a callable default cannot be expressed in sidecar.yaml; "
                                           f"give the rule the slaves apply in settings.PGOUTPOST_ON_DELETE[{where!r}]"))
            return None
        if isinstance(value, models.Model):
            value = value.pk
        text = default_text(value)
        if text is None:
            problems.append(Problem(where, f"on_delete=SET_DEFAULT with the default {value!r} cannot be expressed in sidecar.yaml"))
            return None
        default = text
    return Relation(rule=rule, references=references, default=default)


def set_rule(on_delete) -> Tuple[Optional[str], str]:
    """Reads Django's SET(value): the rule, or None and what it is."""
    deconstruct = getattr(on_delete, "deconstruct", None)
    if deconstruct is not None:
        try:
            path, args, _ = deconstruct()
        except Exception:  # noqa: BLE001 - an odd callable; reported below
            path, args = "", ()
        if path == "django.db.models.SET" and len(args) == 1:
            value = args[0]
            if callable(value):
                return None, f"SET({getattr(value, '__qualname__', repr(value))}) (a callable)"
            if value is None:
                return "SET_NULL", ""
            if isinstance(value, models.Model):
                value = value.pk
            lit = literal(value)
            if lit is None:
                return None, f"SET({value!r})"
            return f"SET({lit})", ""
    name = getattr(on_delete, "__qualname__", repr(on_delete))
    return None, f"{name} (a custom function)"


def literal(value) -> Optional[str]:
    """value as a literal of SET(...): a number, true, false or a 'quoted string'."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, Decimal)) or (isinstance(value, float) and value == value and abs(value) != float("inf")):
        return str(value)
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    return None


def default_text(value) -> Optional[str]:
    """value as relations' default: (the text pgoutpost writes), or None when it is not a scalar."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, Decimal, float, str)):
        return str(value)
    return None


def on_delete_overrides(apps, out) -> Dict[str, Relation]:
    """settings.PGOUTPOST_ON_DELETE: {"app_label.Model.field": "RULE" or {on_delete:, references:, default:}}."""
    result = {}
    for where, value in (getattr(settings, "PGOUTPOST_ON_DELETE", None) or {}).items():
        if isinstance(value, str):
            result[where] = Relation(rule=value)
        else:
            value = dict(value)
            result[where] = Relation(
                rule=value.get("on_delete", ""),
                references=value.get("references", ""),
                parent_link=bool(value.get("parent_link", False)),
                default=str(value.get("default", "")),
            )
    return result


__all__ = ["build", "Sections", "Model", "Relation", "GenericRelation", "Problem", "KINDS"]
