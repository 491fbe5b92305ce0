from django.apps import AppConfig
from django.db.models.signals import post_migrate
from django.utils.translation import gettext_lazy as _


class CrmConfig(AppConfig):
    name = "crm"
    verbose_name = _("Customers (CDP)")

    def ready(self):
        from crm.signals import sync_roles_after_migrate

        # Runs once per migrate (dispatch_uid), after every app's permissions exist.
        post_migrate.connect(sync_roles_after_migrate, dispatch_uid="crm.sync_roles")

        from crm.metrics.merge import register_merge_handler

        register_merge_handler()
