"""Which models are synced, and how.

A model's kind comes from, in this order:

1. pgoutpost's own markers: the decorators below, or the PGOUTPOST_MODELS
   setting ({"app_label.Model": "delete"} or {"app_label.Model": {"kind":
   "system", "row_filter": "...", ...}});
2. django-logical-replication's markers, read the way that package stores
   them: its decorators set ``_meta.system_model``, ``_meta.delete_model`` and
   ``_meta.denormalize_model`` to True, and its settings
   ADDITIONAL_SYSTEM_MODELS, ADDITIONAL_DELETE_MODELS and
   ADDITIONAL_DENORMALIZE_MODELS list labels. SKIP_VALIDATION_MODELS gives
   skip_validation, ADDITIONAL_PUBLICATION_SETTINGS a row filter and a column
   list. The strongest kind wins, as there (denormalize > delete > system).

A model with neither is a user model, unless it is an auto-created
many-to-many table between synced models, which takes its owner's kind.
"""

from dataclasses import dataclass, field, replace
from typing import List, Optional

from django.conf import settings

SYSTEM = "system"
DELETE = "delete"
DENORMALIZE = "denormalize"
KINDS = (SYSTEM, DELETE, DENORMALIZE)

# The attribute of Model._meta that pgoutpost's decorators set. _meta is per
# class, so a subclass (multi-table inheritance) is not marked by its parent.
META_ATTR = "pgoutpost"

# The _meta attributes and settings of django-logical-replication, strongest
# kind first.
SEED_META_ATTRS = (
    ("denormalize_model", DENORMALIZE),
    ("delete_model", DELETE),
    ("system_model", SYSTEM),
)
SEED_SETTINGS = (
    ("ADDITIONAL_DENORMALIZE_MODELS", DENORMALIZE),
    ("ADDITIONAL_DELETE_MODELS", DELETE),
    ("ADDITIONAL_SYSTEM_MODELS", SYSTEM),
)

ON_TRUNCATE = ("log", "refuse")


@dataclass(frozen=True)
class Sync:
    """How a model is synced: the keys of its entry under models: in sidecar.yaml."""

    kind: str
    row_filter: str = ""
    columns: List[str] = field(default_factory=list)
    skip_validation: bool = False
    on_truncate: str = ""
    # origin says where the kind came from, for messages.
    origin: str = ""

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"pgoutpost: unknown kind {self.kind!r}: want one of {', '.join(KINDS)}")
        if self.on_truncate and self.on_truncate not in ON_TRUNCATE:
            raise ValueError(f"pgoutpost: unknown on_truncate {self.on_truncate!r}: want log or refuse")


def _marker(kind):
    def decorate(model=None, *, row_filter="", columns=(), skip_validation=False, on_truncate=""):
        sync = Sync(
            kind=kind,
            row_filter=row_filter,
            columns=list(columns),
            skip_validation=skip_validation,
            on_truncate=on_truncate,
            origin=f"@{kind}_model",
        )

        def mark(cls):
            setattr(cls._meta, META_ATTR, sync)
            return cls

        # Bare (@delete_model) or with options (@delete_model(row_filter=...)).
        return mark(model) if model is not None else mark

    decorate.__name__ = f"{kind}_model"
    decorate.__doc__ = (
        f"Marks a model as a {kind} model of pgoutpost. Use bare or with options:\n\n"
        f"    @{kind}_model\n"
        f"    @{kind}_model(row_filter=\"id > 0\", columns=[\"id\", \"name\"],\n"
        f"                  skip_validation=False, on_truncate=\"log\")\n"
    )
    return decorate


system_model = _marker(SYSTEM)
delete_model = _marker(DELETE)
denormalize_model = _marker(DENORMALIZE)


class MarkerError(Exception):
    """A setting names a model that does not exist or says something pgoutpost cannot use."""


def _resolve(apps, label, setting):
    try:
        return apps.get_model(label)
    except (LookupError, ValueError) as e:
        raise MarkerError(f"settings.{setting}: {label!r}: {e}") from None


class Markers:
    """The markers of every model of an app registry: settings are read once."""

    def __init__(self, apps):
        self.settings = {}
        for setting, kind in reversed(SEED_SETTINGS):  # the strongest last, so it wins
            for label in getattr(settings, setting, None) or ():
                self.settings[_resolve(apps, label, setting)] = Sync(kind=kind, origin=f"settings.{setting}")
        for label, value in (getattr(settings, "PGOUTPOST_MODELS", None) or {}).items():
            model = _resolve(apps, label, "PGOUTPOST_MODELS")
            try:
                sync = Sync(kind=value) if isinstance(value, str) else Sync(**dict(value))
            except (TypeError, ValueError) as e:
                raise MarkerError(f"settings.PGOUTPOST_MODELS[{label!r}]: {e}") from None
            self.settings[model] = replace(sync, origin="settings.PGOUTPOST_MODELS")
        self.skip_validation = {
            _resolve(apps, label, "SKIP_VALIDATION_MODELS")
            for label in getattr(settings, "SKIP_VALIDATION_MODELS", None) or ()
        }
        self.publication = publication_settings(apps)

    def sync(self, model) -> Optional[Sync]:
        """The Sync of a model from its markers, or None for a user model."""
        sync = getattr(model._meta, META_ATTR, None)
        if isinstance(sync, Sync):
            return sync  # pgoutpost's decorator says everything
        sync = self.settings.get(model)
        if sync is not None and sync.origin == "settings.PGOUTPOST_MODELS":
            return sync
        seed = seed_meta_marker(model)
        if seed is not None and (sync is None or KINDS.index(seed.kind) > KINDS.index(sync.kind)):
            sync = seed
        if sync is None:
            return None
        if model in self.skip_validation:
            sync = replace(sync, skip_validation=True)
        if model in self.publication:
            row_filter, columns = self.publication[model]
            sync = replace(sync, row_filter=row_filter, columns=columns)
        return sync


def seed_meta_marker(model):
    """The kind django-logical-replication's decorators gave the model, or None."""
    for attr, kind in SEED_META_ATTRS:
        if getattr(model._meta, attr, False) is True:
            return Sync(kind=kind, origin=f"@{attr} (django-logical-replication)")
    return None


def publication_settings(apps):
    """Returns {model: (row_filter, columns)} from ADDITIONAL_PUBLICATION_SETTINGS.

    The seed appends each value to the table in CREATE PUBLICATION: an
    optional column list, then an optional WHERE clause, as SQL text or a
    psycopg sql object.
    """
    out = {}
    for label, value in (getattr(settings, "ADDITIONAL_PUBLICATION_SETTINGS", None) or {}).items():
        model = _resolve(apps, label, "ADDITIONAL_PUBLICATION_SETTINGS")
        text = _sql_text(value)
        try:
            out[model] = parse_publication_suffix(text)
        except ValueError as e:
            raise MarkerError(f"settings.ADDITIONAL_PUBLICATION_SETTINGS[{label!r}]: {e}") from None
    return out


def _sql_text(value):
    """Renders a psycopg (2 or 3) sql object without a connection."""
    if isinstance(value, str):
        return value
    name = type(value).__name__
    if name == "Composed":
        return "".join(_sql_text(part) for part in value.seq)
    if name == "SQL":
        return value.string
    if name == "Identifier":
        return ".".join('"' + s.replace('"', '""') + '"' for s in value.strings)
    if name == "Literal":
        v = value.wrapped
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return str(v)
        return "'" + str(v).replace("'", "''") + "'"
    raise ValueError(f"cannot render {name} without a database connection")


def parse_publication_suffix(text):
    """Splits "(a, b) WHERE (expr)" into the row filter and the column list."""
    rest = text.strip()
    columns = []
    if rest.startswith("("):
        end = rest.index(")")
        columns = [c.strip().strip('"') for c in rest[1:end].split(",") if c.strip()]
        rest = rest[end + 1 :].strip()
    row_filter = ""
    if rest:
        head, _, expr = rest.partition(" ")
        if head.upper() != "WHERE" or not expr.strip():
            raise ValueError(f"{text!r}: want an optional (column list) and an optional WHERE (expression)")
        row_filter = expr.strip()
        if row_filter.startswith("(") and row_filter.endswith(")") and _balanced(row_filter[1:-1]):
            row_filter = row_filter[1:-1].strip()
    return row_filter, columns


def _balanced(s):
    depth = 0
    for c in s:
        depth += {"(": 1, ")": -1}.get(c, 0)
        if depth < 0:
            return False
    return depth == 0
