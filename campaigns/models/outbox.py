"""The outbox: one row per message a customer may get, under a unique key, so that no retry, restart or
second start can give a customer the same message twice.

A message's life (campaigns/services/outbox.py):

    queued/deferred --claim--> sending --provider answers--> sent --> delivered --> opened --> clicked
                                  |                            \\--> failed (bounced, complained)
                                  |--> queued/deferred (retry later, with back-off)
                                  |--> failed (permanent provider error)
                                  \\--> unknown (handed over, no answer, no idempotency key to ask with)
    queued/deferred --rules--> suppressed (no consent, capped and dropped, on the suppression list, ...)
    queued/deferred --unsubscribe, campaign cancelled--> cancelled

Due work is rows with a due time claimed in batches (FOR UPDATE SKIP LOCKED), never Celery countdowns; a
claim is a lease (`claim_token`, `claimed_until`) so a killed worker's batch is taken back by the next."""

from django.db import models
from django.db.models import F, Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from campaigns.models.channels import Channel


class MessageStatus(models.TextChoices):
    QUEUED = "queued", _("Queued")
    DEFERRED = "deferred", _("Deferred")
    SENDING = "sending", _("Sending")
    SENT = "sent", _("Sent")
    DELIVERED = "delivered", _("Delivered")
    OPENED = "opened", _("Opened")
    CLICKED = "clicked", _("Clicked")
    FAILED = "failed", _("Failed")
    SUPPRESSED = "suppressed", _("Suppressed")
    CANCELLED = "cancelled", _("Cancelled")
    UNKNOWN = "unknown", _("Unknown (to reconcile)")


# Waiting to be claimed; the claim query and its partial index use exactly these.
DUE_STATUSES = (MessageStatus.QUEUED, MessageStatus.DEFERRED)
# Once here, the pipeline never sends the message again (tracking may still move it along sent -> clicked).
FINAL_STATUSES = (
    MessageStatus.SENT,
    MessageStatus.DELIVERED,
    MessageStatus.OPENED,
    MessageStatus.CLICKED,
    MessageStatus.FAILED,
    MessageStatus.SUPPRESSED,
    MessageStatus.CANCELLED,
    MessageStatus.UNKNOWN,
)


class MessagePurpose(models.TextChoices):
    # Marketing messages obey caps, priorities and quiet hours; transactional ones (points earned, order
    # shipped) bypass those but never the customer's consent to the channel; a test send goes to a staff
    # address and touches no customer's caps.
    MARKETING = "marketing", _("Marketing")
    TRANSACTIONAL = "transactional", _("Transactional")
    TEST = "test", _("Test send")


class MessageSource(models.TextChoices):
    CAMPAIGN = "campaign", _("Campaign")
    JOURNEY = "journey", _("Journey")
    WINBACK = "winback", _("Win-back")
    NOTICE = "notice", _("Notice")
    API = "api", _("Send API")
    STAFF = "staff", _("Staff")


class OnCap(models.TextChoices):
    DEFER = "defer", _("Defer to the next free slot")
    DROP = "drop", _("Drop")


class Message(models.Model):
    customer = models.ForeignKey(
        "crm.Customer", on_delete=models.CASCADE, related_name="+", db_index=False, verbose_name=_("customer")
    )
    channel = models.CharField(_("channel"), max_length=16, choices=Channel.choices)
    purpose = models.CharField(
        _("purpose"), max_length=16, choices=MessagePurpose.choices, default=MessagePurpose.MARKETING
    )
    # The unique key: (customer, source kind, source ref, occurrence). A campaign's occurrence is one send
    # of it (a recurring campaign has one per run); a journey's ref is its node and its occurrence the
    # enrollment; a notice's ref is the event type and its occurrence the event id; the send API's ref is
    # the API key and its occurrence the caller's idempotency key.
    source_kind = models.CharField(_("source"), max_length=16, choices=MessageSource.choices)
    source_ref = models.CharField(_("source reference"), max_length=100)
    occurrence = models.CharField(_("occurrence"), max_length=100)
    source_label = models.CharField(_("source name"), max_length=200, blank=True)
    payload_fingerprint = models.CharField(_("payload fingerprint"), max_length=64, blank=True)

    template = models.ForeignKey(
        "campaigns.MessageTemplate", on_delete=models.PROTECT, related_name="+", verbose_name=_("template")
    )
    template_version = models.ForeignKey(
        "campaigns.TemplateVersion",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        verbose_name=_("rendered from version"),
    )
    language = models.CharField(_("language"), max_length=16, blank=True)
    data = models.JSONField(_("template data"), default=dict, blank=True)

    priority = models.SmallIntegerField(_("priority"), default=0)
    on_cap = models.CharField(_("when capped"), max_length=8, choices=OnCap.choices, default=OnCap.DEFER)
    status = models.CharField(_("status"), max_length=16, choices=MessageStatus.choices)
    # Why the message is deferred, suppressed, failed or cancelled: a code with parameters
    # (campaigns/reasons.py), put into words in the reader's language when shown.
    reason = models.CharField(_("reason"), max_length=40, blank=True)
    reason_params = models.JSONField(_("reason parameters"), default=dict, blank=True)
    due_at = models.DateTimeField(_("due at"))
    expires_at = models.DateTimeField(_("not after"), null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(_("attempts"), default=0)
    claim_token = models.UUIDField(_("claim token"), null=True, blank=True, editable=False)
    claimed_until = models.DateTimeField(_("claimed until"), null=True, blank=True, editable=False)
    handed_at = models.DateTimeField(_("handed to the provider at"), null=True, blank=True)
    # Set by the screen, under the customer's lock, on a marketing message it let through: while the
    # message is `sending` it holds a slot of the customer's frequency caps, so a second worker screening
    # the same customer at the same time counts it as if it were sent (campaigns/services/rules.py).
    # Cleared by the claim: a message taken back and claimed again is screened again.
    screened_at = models.DateTimeField(_("let through the screen at"), null=True, blank=True, editable=False)

    address = models.CharField(_("address"), max_length=254, blank=True)
    provider = models.CharField(_("provider"), max_length=64, blank=True)
    provider_message_id = models.CharField(_("provider message id"), max_length=200, blank=True)
    error_code = models.CharField(_("error code"), max_length=64, blank=True)
    error_detail = models.TextField(_("error detail"), blank=True)
    subject = models.CharField(_("subject"), max_length=300, blank=True)  # as rendered, for the panels
    links = models.JSONField(_("tracked links"), null=True, blank=True)  # the only URLs a click may reach

    created_at = models.DateTimeField(_("created at"), default=timezone.now)
    sent_at = models.DateTimeField(_("sent at"), null=True, blank=True)
    delivered_at = models.DateTimeField(_("delivered at"), null=True, blank=True)
    opened_at = models.DateTimeField(_("opened at"), null=True, blank=True)
    clicked_at = models.DateTimeField(_("clicked at"), null=True, blank=True)
    finished_at = models.DateTimeField(_("finished at"), null=True, blank=True)
    # Every change of status, oldest first: [{"status": ..., "at": ISO 8601, "reason": ..., "params": {...}}].
    history = models.JSONField(_("status history"), default=list, blank=True)

    class Meta:
        verbose_name = _("message")
        verbose_name_plural = _("messages")
        constraints = [
            models.UniqueConstraint(
                fields=["customer", "source_kind", "source_ref", "occurrence"], name="campaigns_message_key"
            ),
            # The send API's idempotency key is the caller's, whatever customer the payload names.
            models.UniqueConstraint(
                fields=["source_ref", "occurrence"],
                condition=Q(source_kind="api"),
                name="campaigns_message_api_key",
            ),
        ]
        indexes = [
            # The claim's order (campaigns/services/outbox.py, messages_claim): highest priority first, then
            # the longest due, read from the front of this index instead of sorting every due row. It also
            # serves every other query of due rows by due time (there was a second index on due_at alone:
            # one index less to write per enqueued row, see BENCHMARKS.md, outbox enqueue).
            models.Index(
                F("priority").desc(),
                F("due_at"),
                condition=Q(status__in=["queued", "deferred"]),
                name="campaigns_message_claim",
            ),
            models.Index(
                fields=["claimed_until"], condition=Q(status="sending"), name="campaigns_message_claimed"
            ),
            # The customer's Messages panel, newest first.
            models.Index(fields=["customer", "-created_at", "-id"], name="campaigns_message_customer"),
            # Frequency caps count what each customer was sent on each channel lately.
            models.Index(
                fields=["customer", "channel", "sent_at"],
                condition=Q(sent_at__isnull=False, purpose="marketing"),
                name="campaigns_message_caps",
            ),
            # The cap slots held by messages in flight (screened, not yet recorded): few rows at any time.
            models.Index(
                fields=["customer", "channel"],
                condition=Q(status="sending", screened_at__isnull=False, purpose="marketing"),
                name="campaigns_message_slots",
            ),
            # The delivery overview (send rate, sent today, failures, messages to reconcile) and the dead
            # letters (campaigns/selectors.py): each reads a small recent slice of a table of millions.
            models.Index(
                fields=["sent_at"], condition=Q(sent_at__isnull=False), name="campaigns_message_sent"
            ),
            # Queue depth by channel and status, counted from the index alone (the delivery overview).
            models.Index(
                fields=["status", "channel"],
                condition=Q(status__in=["queued", "deferred", "sending", "unknown"]),
                name="campaigns_message_queue",
            ),
            models.Index(
                fields=["-finished_at", "-id"],
                condition=Q(status__in=["failed", "unknown"]),
                name="campaigns_message_failed",
            ),
            # A campaign run's messages (occurrence is the run's id): pause, resume and cancel withdraw or
            # put back what is still queued in one UPDATE (campaigns/services/campaigns.py).
            models.Index(
                fields=["occurrence", "status"],
                condition=Q(source_kind="campaign"),
                name="campaigns_message_run",
            ),
            # A provider's webhook names the message by the provider's id alone when it carries none of
            # our metadata (campaigns/services/tracking.py): the id leads, so that lookup reads one entry;
            # the provider second serves a lookup that knows it too.
            models.Index(
                fields=["provider_message_id", "provider"],
                condition=~Q(provider_message_id=""),
                name="campaigns_message_esp_id",
            ),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.channel} → {self.customer_id} ({self.status})"
