"""Server-to-server API credentials."""

from django.conf import settings
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _


class ApiKey(models.Model):
    """A server-to-server credential. Only a SHA-256 of the secret is stored; the secret is shown
    once, when the key is created."""

    class Scope(models.TextChoices):
        CUSTOMERS_READ = "customers:read", _("Read customers")
        CUSTOMERS_WRITE = "customers:write", _("Write customers")
        EVENTS_WRITE = "events:write", _("Write behaviour events")
        ORDERS_WRITE = "orders:write", _("Write orders and refunds")
        COUPONS_REDEEM = "coupons:redeem", _("Validate and redeem coupons (store)")
        MESSAGES_SEND = "messages:send", _("Send messages (transactional and one-off)")
        MESSAGES_READ = "messages:read", _("Read the messages sent with this key and their status")
        MESSAGES_READ_ALL = "messages:read_all", _("Read every message and its status, whoever sent it")

    name = models.CharField(_("name"), max_length=100)
    prefix = models.CharField(_("prefix"), max_length=16, unique=True, editable=False)
    key_hash = models.CharField(_("key hash"), max_length=64, editable=False)
    scopes = models.JSONField(_("scopes"), default=list)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        verbose_name=_("created by"),
    )
    created_at = models.DateTimeField(_("created at"), default=timezone.now)
    last_used_at = models.DateTimeField(_("last used at"), null=True, blank=True)
    revoked_at = models.DateTimeField(_("revoked at"), null=True, blank=True)

    class Meta:
        verbose_name = _("API key")
        verbose_name_plural = _("API keys")

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"
