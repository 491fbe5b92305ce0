"""PIPL/GDPR requests carried out on a customer."""

from django.conf import settings
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from crm.models.customers import Customer


class PrivacyRequest(models.Model):
    """A PIPL/GDPR request carried out on one customer: export everything, or erase."""

    class Kind(models.TextChoices):
        EXPORT = "export", _("Export")
        ERASE = "erase", _("Erase")

    customer = models.ForeignKey(
        Customer, on_delete=models.PROTECT, related_name="privacy_requests", verbose_name=_("customer")
    )
    kind = models.CharField(_("kind"), max_length=8, choices=Kind.choices)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        verbose_name=_("requested by"),
    )
    via = models.CharField(_("via"), max_length=16, default="admin")
    reason = models.CharField(_("reason"), max_length=300, blank=True)
    created_at = models.DateTimeField(_("created at"), default=timezone.now)
    summary = models.JSONField(_("summary"), default=dict, blank=True)

    class Meta:
        verbose_name = _("privacy request")
        verbose_name_plural = _("privacy requests")
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.kind} #{self.customer_id}"
