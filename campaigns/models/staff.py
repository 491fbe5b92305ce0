"""Admin pages over the outbox that are not a list of every message: the delivery overview and the
dead letters. Proxy models of Message, so that each page has its own entry in the navigation
(config/admin_navigation.py) and its own permissions for the roles (campaigns/roles.py); no table."""

from django.utils.translation import gettext_lazy as _

from campaigns.models.outbox import Message


class DeliveryOverview(Message):
    class Meta:
        proxy = True
        verbose_name = _("delivery overview")
        verbose_name_plural = _("delivery overview")
        default_permissions = ("view",)


class DeadLetter(Message):
    """A message that failed for good (status failed): a provider refused it or the retries ran out."""

    class Meta:
        proxy = True
        verbose_name = _("dead letter")
        verbose_name_plural = _("dead letters")
        default_permissions = ("view",)
        # Re-queues a copy as a new attempt through the outbox (campaigns/services/dead_letters.py).
        permissions = [("retry_deadletter", _("Can retry dead letters"))]
