"""Stopping messages to an address or a customer: the suppression list, and consent withdrawn in answer to a
message (an unsubscribe link, a bounce, a spam complaint). Either takes effect at once: the customer's
queued and deferred marketing messages on that channel are cancelled in the same transaction.

A MINIMAL STAND-IN written by the tracking helper, with the rules helper's interface
(`consent_withdraw_for_message`, `address_suppress`, `WITHDRAWALS`, as on branch `rules`): the rules
helper owns this module, and the merger takes theirs (which also normalises phones and openids and
cancels for every customer sharing a suppressed address). Cancelling goes through the outbox's
`messages_cancel` when it is there, and otherwise through the same conditional UPDATE here.
"""

from __future__ import annotations

import json
from datetime import datetime

from django.db import connection, transaction
from django.utils import timezone

from campaigns.models import Message, MessagePurpose, MessageStatus, Suppression, SuppressionReason
from crm.models import Consent, ConsentStatus, Customer
from crm.services.consent import consent_set

# Why consent is withdrawn -> (the consent source kind, the suppression reason the address goes on the list
# with, or None to leave the address be).
WITHDRAWALS: dict[str, tuple[str, str | None]] = {
    "unsubscribe": ("unsubscribe", None),
    "bounce": ("bounce", SuppressionReason.BOUNCED),
    "complaint": ("complaint", SuppressionReason.COMPLAINED),
    "not_subscribed": ("not_subscribed", None),
}


def _cancel_reason(channel: str, suppression_reason: str, detail: str) -> tuple[str, dict]:
    if suppression_reason == SuppressionReason.UNSUBSCRIBED:
        return "unsubscribed", {"channel": channel}
    if suppression_reason == SuppressionReason.BOUNCED:
        return "bounced", {"detail": detail}
    if suppression_reason == SuppressionReason.COMPLAINED:
        return "complained", {}
    return "suppressed_address", {"why": suppression_reason}


def _cancel_queued_marketing(
    customer_ids: list[int], channel: str, reason: str, params: dict, now: datetime
) -> int:
    customer_ids = sorted(set(customer_ids))
    if not customer_ids:
        return 0
    try:
        from campaigns.services.outbox import messages_cancel  # the outbox's, once merged
    except ImportError:
        messages_cancel = None
    if messages_cancel is not None:
        return messages_cancel(
            customer_ids=customer_ids,
            channel=channel,
            purpose=MessagePurpose.MARKETING,
            reason=reason,
            params=params,
            now=now,
        )
    pg = connection.vendor == "postgresql"
    entry = json.dumps(
        {"status": MessageStatus.CANCELLED, "at": now.isoformat(), "reason": reason, "params": params}
    )
    append = "history || jsonb_build_array(%s::jsonb)" if pg else "json_insert(history, '$[#]', json(%s))"
    ids = ", ".join(["%s"] * len(customer_ids))
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            UPDATE {Message._meta.db_table}
               SET status = %s, reason = %s, reason_params = {"%s::jsonb" if pg else "%s"},
                   finished_at = %s, history = {append}
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


def _normalised(channel: str, address: str) -> str:
    address = (address or "").strip()
    return address.lower() if channel == "email" else address


@transaction.atomic
def address_suppress(
    *,
    channel: str,
    address: str,
    reason: str,
    customer: Customer | None = None,
    detail: str = "",
    now: datetime | None = None,
) -> Suppression:
    """Put `address` on the suppression list for `channel` (an address already there keeps its first
    reason) and cancel the queued marketing on that channel of `customer` and of every customer whose
    profile has that email or phone."""
    now = now or timezone.now()
    normalised = _normalised(channel, address)
    if not normalised:
        raise ValueError("address is empty")
    entry, _created = Suppression.objects.get_or_create(
        channel=channel,
        address=normalised,
        defaults={"reason": reason, "detail": detail[:300], "customer": customer, "created_at": now},
    )
    owners = Customer.objects.none()
    if channel == "email":
        owners = Customer.objects.filter(email__iexact=normalised)
    elif channel == "sms":
        owners = Customer.objects.filter(phone=normalised)
    customer_ids = set(owners.values_list("pk", flat=True))
    if customer is not None:
        customer_ids.add(customer.pk)
    code, params = _cancel_reason(channel, reason, detail)
    _cancel_queued_marketing(sorted(customer_ids), channel, code, params, now)
    return entry


@transaction.atomic
def consent_withdraw_for_message(
    *, message: Message, why: str, detail: str = "", now: datetime | None = None
) -> Consent:
    """Withdraw the consent of `message`'s customer to its channel because of what happened to it (`why`:
    unsubscribe, bounce, complaint, not_subscribed), with the source `<why>:<message id>`; a bounce or a
    complaint also suppresses the message's address. The customer's queued marketing on the channel is
    cancelled."""
    if why not in WITHDRAWALS:
        raise ValueError(f"unknown withdrawal {why!r}; one of {', '.join(WITHDRAWALS)}")
    now = now or timezone.now()
    source_kind, suppression_reason = WITHDRAWALS[why]
    customer = Customer.objects.get(pk=message.customer_id)
    consent = consent_set(
        customer=customer,
        channel=message.channel,
        status=ConsentStatus.OPTED_OUT,
        occurred_at=now,
        source=f"{source_kind}:{message.pk}",
    )
    if suppression_reason is not None and (message.address or "").strip():
        address_suppress(
            channel=message.channel,
            address=message.address,
            reason=suppression_reason,
            customer=customer,
            detail=detail or f"{source_kind}:{message.pk}",
            now=now,
        )
    else:
        code, params = _cancel_reason(message.channel, SuppressionReason.UNSUBSCRIBED, detail)
        _cancel_queued_marketing([customer.pk], message.channel, code, params, now)
    return consent
