from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class CampaignsConfig(AppConfig):
    name = "campaigns"
    verbose_name = _("Campaigns")

    def ready(self):
        from campaigns import checks  # noqa: F401  (registers the messaging settings checks)
        from campaigns.event_types import register as event_types_register

        event_types_register()
        from anymail.signals import tracking

        from campaigns.webhooks import tracking_received

        # anymail's own extension point: its webhook views send every ESP's normalised events here.
        tracking.connect(tracking_received, dispatch_uid="campaigns.tracking_received")
        # The transactional-notice task (campaigns.tasks is the outbox's module): registered with Celery
        # wherever Django is set up, the worker included.
        import campaigns.notice_tasks  # noqa: F401
