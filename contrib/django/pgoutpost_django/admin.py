"""Read-only admin for synced models on slaves."""

from django.apps import apps as global_apps

from pgoutpost_django.markers import Markers
from pgoutpost_django.role import is_master, is_synced_contrib_app


def is_synced_model(model, apps=None):
    """Whether pgoutpost syncs the model's table (any kind, or a synced contrib app)."""
    if model._meta.proxy:
        model = model._meta.concrete_model
    if is_synced_contrib_app(model._meta.app_label):
        return True
    return Markers(apps or global_apps).sync(model) is not None


class SyncedModelAdminMixin:
    """Makes a synced model read-only in the admin of a slave.

    A row written on a slave is overwritten (or collides) when the master's
    arrives, and a slave's delete of a delete model is not replicated back.
    On the master, and for user models, the admin is unchanged.

        @admin.register(Unit)
        class UnitAdmin(SyncedModelAdminMixin, admin.ModelAdmin):
            ...
    """

    def _read_only(self):
        return not is_master() and is_synced_model(self.model)

    def has_add_permission(self, request, *args, **kwargs):
        if self._read_only():
            return False
        return super().has_add_permission(request, *args, **kwargs)

    def has_change_permission(self, request, obj=None):
        if self._read_only():
            return False
        return super().has_change_permission(request, obj)

    def has_delete_permission(self, request, obj=None):
        if self._read_only():
            return False
        return super().has_delete_permission(request, obj)
