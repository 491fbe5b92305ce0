"""Channels, and the state each provider shares across every worker process and host."""

from django.db import models
from django.utils.translation import gettext_lazy as _

from crm.models import ConsentChannel

# A message's channel is the channel its consent is asked for: one list for both, owned by crm.
Channel = ConsentChannel


class ProviderState(models.Model):
    """One row per configured provider (settings.MESSAGING_PROVIDERS): its cool-down after the provider said
    "slow down" or failed in a way that says it is down, and, where there is no Redis, the token bucket that
    holds its global send rate across processes (campaigns/services/rate_limits.py)."""

    code = models.CharField(_("provider"), max_length=64, primary_key=True)
    cool_down_until = models.DateTimeField(_("cooling down until"), null=True, blank=True)
    cool_down_reason = models.CharField(_("why it cools down"), max_length=200, blank=True)
    consecutive_failures = models.PositiveIntegerField(_("consecutive failures"), default=0)
    tokens = models.FloatField(_("tokens"), default=0)
    tokens_at = models.DateTimeField(_("tokens counted at"), null=True, blank=True)

    class Meta:
        verbose_name = _("provider state")
        verbose_name_plural = _("provider states")

    def __str__(self) -> str:
        return self.code
