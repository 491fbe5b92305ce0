"""Consent per customer and channel: the current state and its append-only history."""

from django.conf import settings
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from simple_history.models import HistoricalRecords

from crm.consent_sources import consent_source_text
from crm.models.customers import ConsentChannel, Customer


class ConsentStatus(models.TextChoices):
    OPTED_IN = "opted_in", _("Opted in")
    OPTED_OUT = "opted_out", _("Opted out")


class Consent(models.Model):
    """The current consent of one customer on one channel. No row means no consent."""

    # Lookups by customer use the (customer, channel) unique index; a customer-only one would be redundant.
    customer = models.ForeignKey(
        Customer,
        on_delete=models.CASCADE,
        related_name="consents",
        db_index=False,
        verbose_name=_("customer"),
    )
    channel = models.CharField(_("channel"), max_length=16, choices=ConsentChannel.choices)
    status = models.CharField(_("status"), max_length=16, choices=ConsentStatus.choices)
    changed_at = models.DateTimeField(_("changed at"))
    source = models.CharField(_("source"), max_length=100, blank=True)

    history = HistoricalRecords()

    class Meta:
        verbose_name = _("consent")
        verbose_name_plural = _("consents")
        constraints = [
            models.UniqueConstraint(fields=["customer", "channel"], name="crm_consent_customer_channel_uniq")
        ]
        indexes = [
            # "Opted in to e-mail" in a segment: the customers come from this index alone.
            models.Index(
                fields=["channel", "status"], include=["customer"], name="crm_consent_chan_status_idx"
            )
        ]

    def __str__(self) -> str:
        return f"{self.channel}: {self.get_status_display()}"

    @property
    def source_display(self) -> str:
        """The source in the reader's language (a code translated, a person's words as typed)."""
        return consent_source_text(self.source)


class ConsentChange(models.Model):
    """Append-only history of consent: every opt-in and opt-out, when, from where and by whom."""

    customer = models.ForeignKey(
        Customer, on_delete=models.CASCADE, related_name="consent_changes", verbose_name=_("customer")
    )
    channel = models.CharField(_("channel"), max_length=16, choices=ConsentChannel.choices)
    status = models.CharField(_("status"), max_length=16, choices=ConsentStatus.choices)
    previous_status = models.CharField(_("previous status"), max_length=16, blank=True)
    occurred_at = models.DateTimeField(_("occurred at"))
    source = models.CharField(_("source"), max_length=100, blank=True)
    changed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        verbose_name=_("changed by"),
    )
    recorded_at = models.DateTimeField(_("recorded at"), default=timezone.now)

    class Meta:
        verbose_name = _("consent change")
        verbose_name_plural = _("consent history")
        ordering = ["-occurred_at", "-id"]
        indexes = [models.Index(fields=["customer", "channel", "-occurred_at"], name="crm_consentchange_idx")]

    def __str__(self) -> str:
        return f"{self.channel}: {self.previous_status or '-'} → {self.status}"

    @property
    def source_display(self) -> str:
        """The source in the reader's language (a code translated, a person's words as typed)."""
        return consent_source_text(self.source)
