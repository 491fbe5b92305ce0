"""Stopping messages to an address or a customer: the suppression list and consent withdrawn in answer to a
message (an unsubscribe link, a bounce, a spam complaint, a provider saying "not subscribed").

Either takes effect at once for what is still waiting: the customer's queued and deferred marketing
messages on that channel are cancelled in the same transaction (the outbox's `messages_cancel`), so that
a campaign queued for tomorrow does not reach someone who unsubscribed today. What is already claimed by
a worker is stopped by the screen (campaigns/services/rules.py), which reads consent and the suppression
list again for every batch.
"""

from __future__ import annotations

from datetime import datetime

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from campaigns.addresses import (
    EMAIL_IDENTITY,
    PHONE_IDENTITY,
    PUSH_TOKEN_IDENTITY,
    WECHAT_OPENID_IDENTITY,
    address_check,
)
from campaigns.models import Channel, Message, MessagePurpose, Suppression, SuppressionReason
from campaigns.services.outbox import messages_cancel
from crm.models import Consent, ConsentStatus, Customer, CustomerIdentity
from crm.services.consent import consent_set

# Why consent is withdrawn -> (the consent source kind, what it does to the address: the suppression
# reason it goes on the list with, or None to leave it be, and then the reason cancelled messages carry).
WITHDRAWALS: dict[str, tuple[str, str | None]] = {
    "unsubscribe": ("unsubscribe", None),
    "bounce": ("bounce", SuppressionReason.BOUNCED),
    "complaint": ("complaint", SuppressionReason.COMPLAINED),
    "not_subscribed": ("not_subscribed", None),
}

_IDENTITY_KIND = {
    Channel.EMAIL: EMAIL_IDENTITY,
    Channel.SMS: PHONE_IDENTITY,
    Channel.WECHAT: WECHAT_OPENID_IDENTITY,
    Channel.PUSH: PUSH_TOKEN_IDENTITY,
}


def _cancel_queued_marketing(
    customer_ids: list[int], channel: str, reason: str, params: dict, now: datetime
) -> int:
    if not customer_ids:
        return 0
    return messages_cancel(
        customer_ids=customer_ids,
        channel=channel,
        purpose=MessagePurpose.MARKETING,
        reason=reason,
        params=params,
        now=now,
    )


def _cancel_reason(channel: str, suppression_reason: str, detail: str) -> tuple[str, dict]:
    """The reason code (campaigns/reasons.py) and parameters a cancelled message is left with."""
    if suppression_reason == SuppressionReason.UNSUBSCRIBED:
        return "unsubscribed", {"channel": channel}
    if suppression_reason == SuppressionReason.BOUNCED:
        return "bounced", {"detail": detail}
    if suppression_reason == SuppressionReason.COMPLAINED:
        return "complained", {}
    return "suppressed_address", {"why": suppression_reason}


def _customers_with_address(channel: str, address: str) -> list[int]:
    """Every customer whose address on `channel` is `address`: one address may be shared (a family's email)
    and a suppressed address stops them all."""
    if channel == Channel.EMAIL:
        profile = Q(email__iexact=address)
    elif channel == Channel.SMS:
        profile = Q(phone=address)
    else:
        profile = Q(pk__in=[])
    owners = CustomerIdentity.objects.filter(kind=_IDENTITY_KIND[channel], value=address).values(
        "customer_id"
    )
    return list(Customer.objects.filter(profile | Q(pk__in=owners)).values_list("pk", flat=True))


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
    """Put `address` on the suppression list for `channel` (idempotent: an address already there keeps its
    first reason) and cancel the queued marketing messages on that channel of `customer` and of every
    other customer with that address."""
    if channel not in Channel.values:
        raise ValueError(f"unknown channel {channel!r}")
    if reason not in SuppressionReason.values:
        raise ValueError(f"unknown suppression reason {reason!r}")
    now = now or timezone.now()
    # Stored in its one spelling, so that the screen finds it whatever way the customer's record writes it;
    # an address that cannot be normalised (suppressed for being invalid) is stored as given.
    normalised, _problem = address_check(channel, address)
    normalised = normalised.strip()
    if not normalised:
        raise ValueError("address is empty")
    entry, created = Suppression.objects.get_or_create(
        channel=channel,
        address=normalised,
        defaults={"reason": reason, "detail": detail[:300], "customer": customer, "created_at": now},
    )
    if not created and entry.customer_id is None and customer is not None:
        entry.customer = customer
        entry.save(update_fields=["customer"])
    customer_ids = set(_customers_with_address(channel, normalised))
    if customer is not None:
        customer_ids.add(customer.pk)
    code, params = _cancel_reason(channel, reason, detail)
    _cancel_queued_marketing(sorted(customer_ids), channel, code, params, now)
    return entry


@transaction.atomic
def consent_withdraw_for_message(
    *, message: Message, why: str, detail: str = "", now: datetime | None = None
) -> Consent:
    """Withdraw the consent of `message`'s customer to its channel because of what happened to it: `why` is
    "unsubscribe", "bounce", "complaint" or "not_subscribed". Recorded through crm's consent service with
    the source `<why>:<message id>`, so the customer's consent history says which message it answered. A
    bounce or a complaint also puts the message's address on the suppression list. The customer's queued
    marketing messages on the channel are cancelled."""
    if why not in WITHDRAWALS:
        raise ValueError(f"unknown withdrawal {why!r}; one of {', '.join(WITHDRAWALS)}")
    now = now or timezone.now()
    source_kind, suppression_reason = WITHDRAWALS[why]
    customer = Customer.objects.get(pk=message.customer_id)
    source = f"{source_kind}:{message.pk}"
    consent = consent_set(
        customer=customer,
        channel=message.channel,
        status=ConsentStatus.OPTED_OUT,
        occurred_at=now,
        source=source,
    )
    if suppression_reason is not None and (message.address or "").strip():
        # Cancels the queued messages of every customer sharing the address, this one's included.
        address_suppress(
            channel=message.channel,
            address=message.address,
            reason=suppression_reason,
            customer=customer,
            detail=detail or source,
            now=now,
        )
    else:
        code, params = _cancel_reason(message.channel, SuppressionReason.UNSUBSCRIBED, detail)
        _cancel_queued_marketing([customer.pk], message.channel, code, params, now)
    return consent


def address_problems_record(*, problems, now: datetime) -> None:
    """What permanent provider failures said about addresses (the outbox calls this in its recording
    transaction): an invalid address goes on the suppression list, "not subscribed" (WeChat 43004 / 43101)
    withdraws the consent. A failure with no address problem (a bad template) marks nothing."""
    for message, result in problems:
        problem = getattr(result, "address_problem", "")
        if problem == "invalid" and (message.address or "").strip():
            address_suppress(
                channel=message.channel,
                address=message.address,
                reason=SuppressionReason.INVALID,
                customer=None,
                detail=f"{result.error_code}: {result.error_detail}"[:300],
                now=now,
            )
        elif problem == "unsubscribed":
            consent_withdraw_for_message(
                message=message, why="not_subscribed", detail=result.error_code, now=now
            )
