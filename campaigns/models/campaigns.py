"""Campaigns: a planned send to an audience, its template variants (A/B/n), its runs (one per occurrence:
a once-only campaign has one, a recurring one one per occurrence) and each run's recipients (one row per
customer, holdout included: the intention-to-treat population the report counts).

A run's messages are outbox rows (campaigns/models/outbox.py) under the key
(customer, "campaign", str(campaign.id), str(run.id)), so a second start or a retried task finds the
message already there and adds nothing (campaigns/services/campaigns.py)."""

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from simple_history.models import HistoricalRecords

from campaigns.models.channels import Channel
from campaigns.models.outbox import OnCap


class CampaignStatus(models.TextChoices):
    DRAFT = "draft", _("Draft")
    AWAITING_APPROVAL = "awaiting_approval", _("Awaiting approval")
    SCHEDULED = "scheduled", _("Scheduled")
    SENDING = "sending", _("Sending")
    PAUSED = "paused", _("Paused")
    SENT = "sent", _("Sent")
    # Over, with some messages failed or unknown: never shown as sent (the counts say how many).
    PARTIAL = "partial", _("Partly delivered")
    CANCELLED = "cancelled", _("Cancelled")


class AudienceKind(models.TextChoices):
    SEGMENT = "segment", _("A segment")
    STATIC_LIST = "static_list", _("A static list")
    EVERYONE = "everyone", _("Everyone with consent on the channel")


class WinnerMetric(models.TextChoices):
    OPENED = "opened", _("Opened")
    CLICKED = "clicked", _("Clicked")
    CONVERTED = "converted", _("Converted")
    REVENUE = "revenue", _("Revenue")


class ScheduleKind(models.TextChoices):
    NOW = "now", _("Send now")
    AT = "at", _("At a date and time")
    RECURRING = "recurring", _("Recurring")


class RecurrenceKind(models.TextChoices):
    CRON = "cron", _("Crontab")
    INTERVAL = "interval", _("Interval")
    CALENDAR = "calendar", _("Calendar date")


class RunStatus(models.TextChoices):
    SCHEDULED = "scheduled", _("Scheduled")
    STARTING = "starting", _("Starting")
    SENDING = "sending", _("Sending")
    PAUSED = "paused", _("Paused")
    SENT = "sent", _("Sent")
    PARTIAL = "partial", _("Partly delivered")
    CANCELLED = "cancelled", _("Cancelled")


class RunPhase(models.TextChoices):
    ALL = "all", _("Everyone at once")
    TEST = "test", _("Test fraction")
    REST = "rest", _("The rest (the winner)")


HOLDOUT_ARM = "holdout"


class Campaign(models.Model):
    name = models.CharField(_("name"), max_length=200)
    goal = models.TextField(_("goal"), blank=True)
    channel = models.CharField(_("channel"), max_length=16, choices=Channel.choices)
    status = models.CharField(
        _("status"), max_length=20, choices=CampaignStatus.choices, default=CampaignStatus.DRAFT
    )

    audience_kind = models.CharField(
        _("audience"), max_length=16, choices=AudienceKind.choices, default=AudienceKind.SEGMENT
    )
    segment = models.ForeignKey(
        "crm.Segment",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        verbose_name=_("segment"),
    )
    static_list = models.ForeignKey(
        "crm.StaticList",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        verbose_name=_("static list"),
    )
    exclude_segments = models.ManyToManyField(
        "crm.Segment", blank=True, related_name="+", verbose_name=_("excluded segments")
    )
    exclude_campaign = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        verbose_name=_("exclude customers messaged by campaign"),
    )
    exclude_campaign_days = models.PositiveIntegerField(_("in the last (days)"), null=True, blank=True)

    priority = models.SmallIntegerField(_("priority"), default=50)
    on_cap = models.CharField(_("when capped"), max_length=8, choices=OnCap.choices, default=OnCap.DEFER)
    cost_per_message = models.DecimalField(
        _("cost per message"),
        max_digits=10,
        decimal_places=4,
        default=0,
        help_text=_("For ROI, on every channel without its own cost below."),
    )
    currency = models.CharField(_("currency"), max_length=3, default="CNY")

    holdout_percent = models.DecimalField(
        _("holdout (%)"),
        max_digits=5,
        decimal_places=2,
        default=0,
        validators=[MinValueValidator(0), MaxValueValidator(50)],
    )
    test_percent = models.DecimalField(
        _("test fraction (%)"),
        max_digits=5,
        decimal_places=2,
        default=0,
        validators=[MinValueValidator(0), MaxValueValidator(100)],
    )
    winner_metric = models.CharField(
        _("winner metric"), max_length=16, choices=WinnerMetric.choices, default=WinnerMetric.CLICKED
    )
    winner_wait = models.DurationField(_("wait before choosing the winner"), null=True, blank=True)
    winner_min_sample = models.PositiveIntegerField(_("minimum sample per arm"), default=100)
    attribution_days = models.PositiveIntegerField(_("attribution window (days)"), default=7)

    schedule_kind = models.CharField(
        _("schedule"), max_length=16, choices=ScheduleKind.choices, default=ScheduleKind.NOW
    )
    send_at = models.DateTimeField(_("send at"), null=True, blank=True)
    recurrence_kind = models.CharField(
        _("recurrence"), max_length=16, choices=RecurrenceKind.choices, blank=True
    )
    cron = models.CharField(_("crontab"), max_length=100, blank=True)
    interval = models.DurationField(_("interval"), null=True, blank=True)
    calendar_code = models.CharField(_("calendar date"), max_length=64, blank=True)
    calendar_offset_days = models.IntegerField(_("days from the calendar date"), default=0)
    send_time = models.TimeField(_("time of day"), null=True, blank=True)
    local_time = models.BooleanField(_("in each customer's own time zone"), default=False)
    ends_at = models.DateTimeField(_("ends at"), null=True, blank=True)

    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        verbose_name=_("created by"),
    )
    approved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        verbose_name=_("approved by"),
    )
    approved_at = models.DateTimeField(_("approved at"), null=True, blank=True)
    created_at = models.DateTimeField(_("created at"), default=timezone.now)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    history = HistoricalRecords(excluded_fields=["updated_at"])

    class Meta:
        verbose_name = _("campaign")
        verbose_name_plural = _("campaigns")
        ordering = ["-id"]
        permissions = [("approve_campaign", _("Can approve and schedule campaigns"))]

    def __str__(self) -> str:
        return self.name


class CampaignVariant(models.Model):
    campaign = models.ForeignKey(
        Campaign, on_delete=models.CASCADE, related_name="variants", verbose_name=_("campaign")
    )
    key = models.CharField(_("key"), max_length=8)
    template = models.ForeignKey(
        "campaigns.MessageTemplate", on_delete=models.PROTECT, related_name="+", verbose_name=_("template")
    )
    channel = models.CharField(
        _("channel (if not the campaign's)"), max_length=16, choices=Channel.choices, blank=True
    )
    weight = models.PositiveSmallIntegerField(_("split (%)"), default=50)
    send_delay = models.DurationField(_("send later by"), null=True, blank=True)

    history = HistoricalRecords()

    class Meta:
        verbose_name = _("variant")
        verbose_name_plural = _("variants")
        ordering = ["campaign", "key"]
        constraints = [
            models.UniqueConstraint(fields=["campaign", "key"], name="campaigns_variant_campaign_key")
        ]

    def __str__(self) -> str:
        return self.key


class CampaignChannelCost(models.Model):
    """What one message costs on a channel, for this campaign's ROI: an SMS is paid per message, a WeChat
    template message or an email far less, and variants may go out on different channels. A channel
    without a row costs the campaign's own cost per message."""

    campaign = models.ForeignKey(
        Campaign, on_delete=models.CASCADE, related_name="channel_costs", verbose_name=_("campaign")
    )
    channel = models.CharField(_("channel"), max_length=16, choices=Channel.choices)
    cost_per_message = models.DecimalField(
        _("cost per message"), max_digits=10, decimal_places=4, validators=[MinValueValidator(0)]
    )

    history = HistoricalRecords()

    class Meta:
        verbose_name = _("cost per message on a channel")
        verbose_name_plural = _("costs per message per channel")
        ordering = ["campaign", "channel"]
        constraints = [
            models.UniqueConstraint(fields=["campaign", "channel"], name="campaigns_channelcost_key"),
            models.CheckConstraint(
                condition=models.Q(cost_per_message__gte=0), name="campaigns_channelcost_nonneg"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.channel}: {self.cost_per_message}"


class CampaignRun(models.Model):
    campaign = models.ForeignKey(
        Campaign, on_delete=models.CASCADE, related_name="runs", verbose_name=_("campaign")
    )
    occurrence = models.CharField(_("occurrence"), max_length=64)
    due_at = models.DateTimeField(_("due at"))
    local_date = models.DateField(_("local date"), null=True, blank=True)
    # The wall time each zone sends at for a local run (a cron's "0 9 * * *" has no
    # Campaign.send_time); a local message is due at (local_date + local_time) in the customer's zone,
    # falling back to Campaign.send_time when this is empty.
    local_time = models.TimeField(_("local time"), null=True, blank=True)
    status = models.CharField(
        _("status"), max_length=16, choices=RunStatus.choices, default=RunStatus.SCHEDULED
    )

    snapshot = models.ForeignKey(
        "crm.SegmentSnapshot",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        verbose_name=_("audience snapshot"),
    )
    audience_size = models.PositiveIntegerField(_("audience size"), default=0)
    holdout_size = models.PositiveIntegerField(_("holdout size"), default=0)
    treated_size = models.PositiveIntegerField(_("treated size"), default=0)
    excluded_size = models.PositiveIntegerField(_("excluded"), default=0)

    phase = models.CharField(_("phase"), max_length=8, choices=RunPhase.choices, default=RunPhase.ALL)
    winner_key = models.CharField(_("winner"), max_length=8, blank=True)
    winner_decided_at = models.DateTimeField(_("winner decided at"), null=True, blank=True)
    winner_due_at = models.DateTimeField(_("winner due at"), null=True, blank=True)
    winner_decision = models.JSONField(_("winner decision"), null=True, blank=True)

    # A lease over the start: a worker killed midway leaves it to expire and the next one resumes.
    claim_token = models.UUIDField(_("claim token"), null=True, blank=True, editable=False)
    claimed_until = models.DateTimeField(_("claimed until"), null=True, blank=True, editable=False)
    heartbeat_at = models.DateTimeField(_("heartbeat at"), null=True, blank=True, editable=False)

    enqueued_size = models.PositiveIntegerField(_("messages enqueued"), default=0)

    started_at = models.DateTimeField(_("started at"), null=True, blank=True)
    finished_at = models.DateTimeField(_("finished at"), null=True, blank=True)
    created_at = models.DateTimeField(_("created at"), default=timezone.now)
    error_code = models.CharField(_("error code"), max_length=64, blank=True)
    error_params = models.JSONField(_("error parameters"), default=dict, blank=True)

    class Meta:
        verbose_name = _("campaign run")
        verbose_name_plural = _("campaign runs")
        ordering = ["-due_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["campaign", "occurrence"], name="campaigns_run_occurrence")
        ]
        indexes = [
            models.Index(
                fields=["due_at"],
                condition=models.Q(status__in=["scheduled", "starting"]),
                name="campaigns_run_due",
            )
        ]

    def __str__(self) -> str:
        return f"{self.campaign_id} / {self.occurrence}"


class CampaignRecipient(models.Model):
    # No database foreign keys: a start inserts a million rows chosen from existing runs and customers by
    # the same statement, and PostgreSQL would check each row's two keys one by one at commit (Django's
    # constraints are deferred), a large part of the start's time (see BENCHMARKS.md, campaign start).
    # Deletes still cascade, done by Django.
    run = models.ForeignKey(
        CampaignRun,
        on_delete=models.CASCADE,
        related_name="recipients",
        db_index=False,
        db_constraint=False,
        verbose_name=_("run"),
    )
    customer = models.ForeignKey(
        "crm.Customer",
        on_delete=models.CASCADE,
        related_name="+",
        db_index=False,
        db_constraint=False,
        verbose_name=_("customer"),
    )
    arm = models.CharField(_("arm"), max_length=8)
    phase = models.CharField(_("phase"), max_length=8, choices=RunPhase.choices, default=RunPhase.ALL)
    enqueued = models.BooleanField(_("enqueued"), default=False)

    class Meta:
        verbose_name = _("campaign recipient")
        verbose_name_plural = _("campaign recipients")
        constraints = [
            models.UniqueConstraint(fields=["run", "customer"], name="campaigns_recipient_run_customer")
        ]
        indexes = [models.Index(fields=["run", "arm"], name="campaigns_recipient_run_arm")]

    def __str__(self) -> str:
        return f"{self.run_id} / {self.customer_id} ({self.arm})"


class CampaignRunCount(models.Model):
    """How many of a run's messages are in each status (and reason), so the progress bar reads a few rows
    per poll instead of counting a million messages. One row per (run, status, reason). The start adds
    what it queued; every later change of status is added by statement-level triggers on the outbox
    (migrations campaigns_run_counts, run_counts_by_the_start), one net change per statement."""

    run = models.ForeignKey(
        CampaignRun, on_delete=models.CASCADE, related_name="counts", db_index=False, verbose_name=_("run")
    )
    status = models.CharField(_("status"), max_length=16)
    reason = models.CharField(_("reason"), max_length=40, blank=True)
    n = models.BigIntegerField(_("messages"), default=0)

    class Meta:
        verbose_name = _("campaign run count")
        verbose_name_plural = _("campaign run counts")
        constraints = [
            models.UniqueConstraint(fields=["run", "status", "reason"], name="campaigns_runcount_key")
        ]

    def __str__(self) -> str:
        return f"{self.run_id} {self.status} {self.reason}: {self.n}"
