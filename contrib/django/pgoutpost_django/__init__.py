"""Django companion of pgoutpost.

It writes the models, relations and generic_relations of sidecar.yaml from the
app registry (``manage.py pgoutpost_config``), keeps ``migrate`` off the synced
contrib tables on slaves (``router.PgoutpostRouter``), creates every content
type on the master (``manage.py populate_content_types``) and makes synced
models read-only in the admin of a slave (``admin.SyncedModelAdminMixin``).
It does not replicate anything itself: pgoutpost does.
"""

from pgoutpost_django.markers import delete_model, denormalize_model, system_model

__all__ = ["system_model", "delete_model", "denormalize_model"]
