"""The delivery rules staff edit in the admin: frequency caps, quiet hours and the suppression list."""

import datetime

from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from simple_history.models import HistoricalRecords

from campaigns.models.channels import Channel


class FrequencyCap(models.Model):
    """At most `limit` marketing messages per customer in a calendar period of the customer's own time zone
    (a day from local midnight, a week from local Monday 00:00), on one channel or, with no channel, on all
    of them together. Every source counts (campaigns, journeys, win-back); transactional messages neither
    count nor are capped."""

    class Period(models.TextChoices):
        DAY = "day", _("Day")
        WEEK = "week", _("Week")
        MONTH = "month", _("Month")

    channel = models.CharField(_("channel"), max_length=16, choices=Channel.choices, blank=True)
    period = models.CharField(_("period"), max_length=8, choices=Period.choices)
    limit = models.PositiveIntegerField(_("at most"))
    active = models.BooleanField(_("active"), default=True)
    history = HistoricalRecords()

    class Meta:
        verbose_name = _("frequency cap")
        verbose_name_plural = _("frequency caps")
        ordering = ["channel", "period"]
        constraints = [
            models.UniqueConstraint(fields=["channel", "period"], name="campaigns_frequency_cap_uniq")
        ]

    def __str__(self) -> str:
        return (
            f"{self.get_channel_display() or _('All channels')}: {self.limit} / {self.get_period_display()}"
        )


class DeliverySettings(models.Model):
    """The one row of delivery settings (pk=1): quiet hours in the customer's own time zone, the channels
    they hold for, and the opt-out text every marketing SMS ends with."""

    quiet_start = models.TimeField(_("quiet hours start"), default=datetime.time(21, 0))
    quiet_end = models.TimeField(_("quiet hours end"), default=datetime.time(8, 0))
    quiet_channels = models.JSONField(
        _("channels quiet hours hold for"), default=list, blank=True
    )  # empty: every channel
    sms_opt_out_zh = models.CharField(_("SMS opt-out text (Chinese)"), max_length=40, default="回T退订")
    sms_opt_out_en = models.CharField(
        _("SMS opt-out text (English)"), max_length=40, default="Reply T to opt out"
    )
    history = HistoricalRecords()

    class Meta:
        verbose_name = _("delivery settings")
        verbose_name_plural = _("delivery settings")

    def __str__(self) -> str:
        return str(_("Delivery settings"))

    @classmethod
    def current(cls) -> "DeliverySettings":
        return cls.objects.get_or_create(pk=1)[0]


class SuppressionReason(models.TextChoices):
    UNSUBSCRIBED = "unsubscribed", _("Unsubscribed")
    BOUNCED = "bounced", _("Bounced")
    COMPLAINED = "complained", _("Complained (spam)")
    INVALID = "invalid", _("Invalid address")
    MANUAL = "manual", _("Added by staff")


class Suppression(models.Model):
    """An address no message may go to on a channel, whoever the customer: a hard bounce, a spam complaint,
    an invalid phone or openid. Addresses are stored normalised (lower-case email, E.164 phone)."""

    channel = models.CharField(_("channel"), max_length=16, choices=Channel.choices)
    address = models.CharField(_("address"), max_length=254)
    reason = models.CharField(_("reason"), max_length=16, choices=SuppressionReason.choices)
    detail = models.CharField(_("detail"), max_length=300, blank=True)
    customer = models.ForeignKey(
        "crm.Customer",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        verbose_name=_("customer"),
    )
    created_at = models.DateTimeField(_("created at"), default=timezone.now)

    class Meta:
        verbose_name = _("suppressed address")
        verbose_name_plural = _("suppression list")
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["channel", "address"], name="campaigns_suppression_uniq")
        ]

    def __str__(self) -> str:
        return f"{self.channel}: {self.address}"
