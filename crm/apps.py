from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class CrmConfig(AppConfig):
    name = "crm"
    verbose_name = _("Customers (CDP)")

    def ready(self):
        # The staff roles are re-applied after migrate by config/roles.py, which knows every app.
        from crm.metrics.merge import register_merge_handler

        register_merge_handler()
        from crm.services.imports.jobs import import_jobs_reaper_register
        from crm.services.metrics import metrics_runs_reaper_register

        # The lease reaper (crm.tasks.leases_reap) resumes the long jobs whose worker died.
        import_jobs_reaper_register()
        metrics_runs_reaper_register()
