from django.apps import AppConfig
from django.db.models.signals import post_migrate


class ProjectConfig(AppConfig):
    """The project's own wiring that needs Django's app registry (no models)."""

    name = "config"
    label = "project"
    verbose_name = "Project wiring"

    def ready(self):
        from config import checks  # noqa: F401  (registers the deploy checks)
        from config.roles import sync_roles_after_migrate

        # Set-up wiring, not business flow: after every migrate, once every app's permissions exist.
        post_migrate.connect(sync_roles_after_migrate, dispatch_uid="config.sync_roles")
