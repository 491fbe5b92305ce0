"""What an unsubscribe, a bounce or a spam complaint does, at once: the customer's consent to the channel is
withdrawn (crm's consent service, with a source saying why), the address goes on the suppression list
(bounce, complaint, invalid address) and the customer's queued and deferred marketing messages on that
channel are cancelled, so nothing already scheduled goes out after the customer said no.

A minimal version written by the tracking helper (the rules helper owns this module; until theirs is
merged, this one is what the unsubscribe page and the ESP webhooks call). Cancelling goes through the
outbox's `messages_cancel` when it exists and otherwise through the same conditional UPDATE here.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from datetime import datetime

from django.db import connection, transaction

from campaigns.models import Message, MessagePurpose, MessageStatus, Suppression
from crm.models import Consent, ConsentStatus, Customer
from crm.services.consent import consent_set

# Consent sources (crm/consent_sources.py puts them into words).
SOURCE_UNSUBSCRIBE = "unsubscribe"
SOURCE_ESP_UNSUBSCRIBE = "esp_unsubscribe"
SOURCE_BOUNCE = "email_bounce"
SOURCE_COMPLAINT = "spam_complaint"
SOURCE_INVALID = "invalid_address"


def address_normalise(channel: str, address: str) -> str:
    address = (address or "").strip()
    return address.lower() if channel == "email" else address


def address_suppress(
    *, channel: str, address: str, reason: str, detail: str = "", customer_id: int | None, now: datetime
) -> bool:
    """Put the address on the suppression list; True if it was not there yet. A second bounce of a
    suppressed address keeps the first row (its reason and date)."""
    address = address_normalise(channel, address)
    if not address:
        return False
    _row, created = Suppression.objects.get_or_create(
        channel=channel,
        address=address,
        defaults={"reason": reason, "detail": detail[:300], "customer_id": customer_id, "created_at": now},
    )
    return created


def consent_withdraw(*, customer_id: int, channel: str, source: str, now: datetime) -> None:
    """Opt the customer out of `channel`; a customer already opted out is left as is (a mailbox provider
    retrying its one-click POST must not add a consent change each time)."""
    if Consent.objects.filter(
        customer_id=customer_id, channel=channel, status=ConsentStatus.OPTED_OUT
    ).exists():
        return
    customer = Customer.objects.filter(pk=customer_id).first()
    if customer is None:  # erased meanwhile
        return
    consent_set(
        customer=customer,
        channel=channel,
        status=ConsentStatus.OPTED_OUT,
        occurred_at=now,
        source=source,
    )


def _history_sql() -> str:
    """`history = <history with one more entry>`: the entry is one JSON parameter."""
    if connection.vendor == "postgresql":
        return "history = history || jsonb_build_array(%s::jsonb)"
    return "history = json_insert(history, '$[#]', json(%s))"


def _json() -> str:
    return "%s::jsonb" if connection.vendor == "postgresql" else "%s"


def queued_marketing_cancel(
    *, customer_ids: Collection[int], channel: str, reason: str, params: dict, now: datetime
) -> int:
    """Cancel the customers' queued and deferred marketing messages on `channel`, in one statement; a
    message already claimed (sending) is in a provider's hands and is left to finish. Returns how many."""
    customer_ids = sorted(set(customer_ids))
    if not customer_ids:
        return 0
    try:
        from campaigns.services.outbox import messages_cancel  # the outbox helper's, once merged
    except ImportError:
        messages_cancel = None
    if messages_cancel is not None:
        result = messages_cancel(
            customer_ids=customer_ids, channel=channel, purpose=MessagePurpose.MARKETING, reason=reason
        )
        return result if isinstance(result, int) else 0
    entry = json.dumps(
        {"status": MessageStatus.CANCELLED, "at": now.isoformat(), "reason": reason, "params": params}
    )
    table = Message._meta.db_table
    ids = ", ".join(["%s"] * len(customer_ids))
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            UPDATE {table}
               SET status = %s, reason = %s, reason_params = {_json()}, finished_at = %s,
                   claim_token = NULL, claimed_until = NULL, {_history_sql()}
             WHERE customer_id IN ({ids}) AND channel = %s AND purpose = %s AND status IN (%s, %s)
            """,
            [
                MessageStatus.CANCELLED,
                reason,
                json.dumps(params),
                now,
                entry,
                *customer_ids,
                channel,
                MessagePurpose.MARKETING,
                MessageStatus.QUEUED,
                MessageStatus.DEFERRED,
            ],
        )
        return cursor.rowcount


@transaction.atomic
def opt_out_apply(
    *,
    customer_id: int | None,
    channel: str,
    why: str,
    source: str,
    address: str = "",
    detail: str = "",
    now: datetime,
) -> int:
    """The customer said no (or the address cannot take messages): withdraw consent, suppress the address
    when `why` is a bounce, complaint or invalid address, cancel what is queued. `why` is a
    SuppressionReason value. Returns how many queued messages were cancelled."""
    if why != "unsubscribed" and address:
        address_suppress(
            channel=channel, address=address, reason=why, detail=detail, customer_id=customer_id, now=now
        )
    if customer_id is None:
        return 0
    consent_withdraw(customer_id=customer_id, channel=channel, source=source, now=now)
    reason = {"unsubscribed": "unsubscribed", "complained": "complained"}.get(why, "suppressed_address")
    params = {"channel": channel} if reason == "unsubscribed" else {"why": why}
    return queued_marketing_cancel(
        customer_ids=[customer_id], channel=channel, reason=reason, params=params, now=now
    )
