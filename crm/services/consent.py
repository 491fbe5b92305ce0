"""Consent per channel. Nothing may send to a customer on a channel without a current opt-in here."""

from datetime import datetime

from django.db import transaction
from django.utils import timezone

from crm.models import Consent, ConsentChange, ConsentChannel, ConsentStatus, Customer


@transaction.atomic
def consent_set(
    *,
    customer: Customer,
    channel: str,
    status: str,
    occurred_at: datetime | None = None,
    source: str = "",
    changed_by=None,
) -> Consent:
    """Record a consent decision. An older decision arriving late (a delayed import) goes into the history
    but does not overwrite a newer current state."""
    if channel not in ConsentChannel.values:
        raise ValueError(f"unknown consent channel {channel!r}")
    if status not in ConsentStatus.values:
        raise ValueError(f"unknown consent status {status!r}")
    occurred_at = occurred_at or timezone.now()
    current = Consent.objects.select_for_update().filter(customer=customer, channel=channel).first()
    previous = current.status if current else ""
    if current and current.status == status and current.changed_at >= occurred_at:
        return current  # a repeat of what is already known: nothing to record
    ConsentChange.objects.create(
        customer=customer,
        channel=channel,
        status=status,
        previous_status=previous,
        occurred_at=occurred_at,
        source=source,
        changed_by=changed_by,
    )
    if current is None:
        return Consent.objects.create(
            customer=customer, channel=channel, status=status, changed_at=occurred_at, source=source
        )
    if occurred_at >= current.changed_at:
        current.status, current.changed_at, current.source = status, occurred_at, source
        current.save(update_fields=["status", "changed_at", "source"])
    return current
