"""The behaviour-event log, the spine other apps read, and the cursors its consumers read it by."""

from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from crm.db import CurrentTransactionId
from crm.models.customers import Channel, Customer


class Event(models.Model):
    """Append-only behaviour log, the spine other apps read (crm.services.event_log.event_log_read).

    `customer` is cleared when a customer is erased: the behaviour stays for aggregate statistics but
    no longer points at a person."""

    customer = models.ForeignKey(
        Customer,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="events",
        # The two (customer, ...) indexes below serve every lookup by customer; a customer-only index
        # as well would be one more index to write on each event for nothing.
        db_index=False,
        verbose_name=_("customer"),
    )
    type = models.CharField(_("type"), max_length=64)
    properties = models.JSONField(_("properties"), default=dict, blank=True)
    occurred_at = models.DateTimeField(_("occurred at"))
    channel = models.CharField(_("channel"), max_length=16, choices=Channel.choices, blank=True)
    # Unique where given (the constraint below): most events (orders, tier changes, lifecycle stages,
    # messages) have none, and a plain unique column would index every one of their NULLs, twice on
    # PostgreSQL (Django adds a LIKE-pattern index to a unique CharField; nothing searches these by prefix).
    external_id = models.CharField(_("external event id"), max_length=100, null=True, blank=True)
    received_at = models.DateTimeField(_("received at"), default=timezone.now)
    # Which transaction wrote the event (crm.db.CurrentTransactionId: a column default, so COPY and raw
    # INSERTs get it too). The log is read in (xact_id, id) order below the oldest transaction still
    # running, which an id alone cannot give: ids are handed out at insert, not at commit.
    xact_id = models.BigIntegerField(
        _("writing transaction"), db_default=CurrentTransactionId(), editable=False
    )

    class Meta:
        verbose_name = _("behaviour event")
        verbose_name_plural = _("behaviour events")
        indexes = [
            models.Index(fields=["customer", "-occurred_at"], name="crm_event_customer_time_idx"),
            # "Did / did not do X (N times) in the last D days" for one customer is one range of this
            # index (segments probe it customer by customer), whatever else the customer did.
            models.Index(fields=["customer", "type", "occurred_at"], name="crm_event_cust_type_time_idx"),
            models.Index(fields=["type", "occurred_at"], name="crm_event_type_time_idx"),
            models.Index(fields=["xact_id", "id"], name="crm_event_log_order_idx"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["external_id"],
                condition=models.Q(external_id__isnull=False),
                name="crm_event_external_id_uniq",
                violation_error_message=_("An event with this external id is already stored."),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.type} @ {self.occurred_at:%Y-%m-%d %H:%M}"

    def save(self, *args, **kwargs):
        # The log is append-only; only erasure (a queryset update) may detach the customer.
        if not self._state.adding:
            raise ValidationError(_("Behaviour events are append-only and cannot be edited."))
        super().save(*args, **kwargs)


class EventLogCursor(models.Model):
    """How far one consumer of the behaviour-event log (loyalty's accrual, the delivery pipeline's notices,
    journey triggers) has read: the (xact_id, id) of the last event it was given. Read and advanced only
    by crm.services.event_log.event_log_read, in the consumer's own transaction."""

    consumer = models.CharField(_("consumer"), max_length=64, primary_key=True)
    last_xact_id = models.BigIntegerField(_("last transaction id"), default=0)
    last_event_id = models.BigIntegerField(_("last event id"), default=0)
    events_read = models.BigIntegerField(_("events read"), default=0)
    updated_at = models.DateTimeField(_("updated at"), default=timezone.now)

    class Meta:
        verbose_name = _("event-log cursor")
        verbose_name_plural = _("event-log cursors")

    def __str__(self) -> str:
        return f"{self.consumer}: {self.last_xact_id}/{self.last_event_id}"
