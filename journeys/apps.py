from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class JourneysConfig(AppConfig):
    name = "journeys"
    verbose_name = _("Journeys")

    def ready(self) -> None:
        from journeys.services.nodes_run import message_data_register
        from journeys.services.winback import winback_message_data, winback_runs_reaper_register

        winback_runs_reaper_register()
        message_data_register(winback_message_data)
