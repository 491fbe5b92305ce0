"""What the time-based entry triggers remember between passes of their dispatcher
(journeys/services/time_triggers.py).

`TimeTriggerState` is one row per journey with a time trigger: the end of the window the last pass
covered (the next pass looks for occurrences due after it, never further back than the catch-up window)
and, for a segment trigger, when the segment is next evaluated. Its row lock is what keeps two
dispatchers (beat firing twice, a retried task) from working on one journey at once.

`SegmentTriggerMember` is who matched a segment trigger's segment at its last evaluation, so the next one
enters only those who newly match.
"""

from django.db import models
from django.utils.translation import gettext_lazy as _


class TimeTriggerState(models.Model):
    journey = models.OneToOneField(
        "journeys.Journey",
        on_delete=models.CASCADE,
        primary_key=True,
        related_name="+",
        verbose_name=_("journey"),
    )
    checked_until = models.DateTimeField(_("checked until"), null=True, blank=True)
    segment_next_at = models.DateTimeField(_("segment evaluated next at"), null=True, blank=True)

    class Meta:
        verbose_name = _("time trigger state")
        verbose_name_plural = _("time trigger states")

    def __str__(self) -> str:
        return f"{self.journey_id}: {self.checked_until}"


class SegmentTriggerMember(models.Model):
    journey = models.ForeignKey(
        "journeys.Journey",
        on_delete=models.CASCADE,
        related_name="+",
        db_index=False,
        verbose_name=_("journey"),
    )
    customer = models.ForeignKey(
        "crm.Customer", on_delete=models.CASCADE, related_name="+", db_index=False, verbose_name=_("customer")
    )

    class Meta:
        verbose_name = _("segment trigger member")
        verbose_name_plural = _("segment trigger members")
        constraints = [
            models.UniqueConstraint(fields=["journey", "customer"], name="journeys_segment_member_uniq"),
        ]

    def __str__(self) -> str:
        return f"{self.journey_id}/{self.customer_id}"
