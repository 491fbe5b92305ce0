"""Which channel reaches a customer best: the one the customer prefers when it is open to us (consent
given and an address to send to), otherwise the first open one in CHANNEL_ORDER. Set-based: three queries
for a batch of customers, never one per customer."""

from __future__ import annotations

from collections.abc import Collection, Sequence

from crm.models import Consent, ConsentStatus, Customer, CustomerIdentity

# WeChat first: free, and where Chinese customers read; SMS reaches every phone; email and push last.
CHANNEL_ORDER = ("wechat", "sms", "email", "push")
_IDENTITY_OF = {"wechat": "wechat_openid", "push": "push_token"}


def channels_open(*, customer_ids: Collection[int]) -> dict[int, set[str]]:
    """For each customer, the channels with a current opt-in and an address."""
    ids = sorted(set(customer_ids))
    if not ids:
        return {}
    consented: dict[int, set[str]] = {}
    for customer_id, channel in Consent.objects.filter(
        customer_id__in=ids, status=ConsentStatus.OPTED_IN
    ).values_list("customer_id", "channel"):
        consented.setdefault(customer_id, set()).add(channel)
    addressed: dict[int, set[str]] = {}
    for customer_id, email, phone in Customer.objects.filter(pk__in=ids).values_list("pk", "email", "phone"):
        have = addressed.setdefault(customer_id, set())
        if email:
            have.add("email")
        if phone:
            have.add("sms")
    kinds = {kind: channel for channel, kind in _IDENTITY_OF.items()}
    for customer_id, kind in CustomerIdentity.objects.filter(
        customer_id__in=ids, kind__in=list(kinds)
    ).values_list("customer_id", "kind"):
        addressed.setdefault(customer_id, set()).add(kinds[kind])
    return {i: consented.get(i, set()) & addressed.get(i, set()) for i in ids}


def channel_best(
    *, customer_ids: Collection[int], candidates: Sequence[str], preferred: dict[int, str] | None = None
) -> dict[int, str | None]:
    """For each customer, the best of `candidates` (the channels a template exists for) open to them, or
    None when none is (the caller then sends on its first candidate and the rules record why not)."""
    open_ = channels_open(customer_ids=customer_ids)
    if preferred is None:
        preferred = dict(Customer.objects.filter(pk__in=list(open_)).values_list("pk", "preferred_channel"))
    ranked = [c for c in CHANNEL_ORDER if c in candidates] + [c for c in candidates if c not in CHANNEL_ORDER]
    best: dict[int, str | None] = {}
    for customer_id, channels in open_.items():
        first = preferred.get(customer_id)
        if first in candidates and first in channels:
            best[customer_id] = first
            continue
        best[customer_id] = next((c for c in ranked if c in channels), None)
    return best
