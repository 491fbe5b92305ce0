"""Folding loyalty accounts when crm merges two customers (registered with crm at start-up, see apps.py).

crm calls `customer_merge_fold` inside its merge transaction, before it re-points the remaining foreign
keys. Nothing is rewritten: the merged account's entries, lots, debts, tier history and rule usage move to
the survivor's account (the append-only trigger allows re-pointing `account_id` and nothing else), the
survivor's cached balances are rebuilt from its entries, and the merged account stays as an empty
`merged` row pointing at the survivor, so its history can still be found.
"""

from __future__ import annotations

from loyalty.models import (
    LedgerEntry,
    LoyaltyAccount,
    ManualAdjustment,
    OwedPoints,
    PointLot,
    RuleUsage,
    TierChange,
)
from loyalty.services.ledger import accounts_lock, balances_from_entries, balances_save


def customer_merge_fold(*, survivor, merged) -> dict[str, int]:
    moved: dict[str, int] = {}
    accounts = dict(
        LoyaltyAccount.objects.filter(customer_id__in=[survivor.pk, merged.pk]).values_list(
            "customer_id", "pk"
        )
    )
    if merged.pk not in accounts:
        return moved
    if survivor.pk not in accounts:
        # Only the merged customer had an account: crm's generic re-pointing hands it to the survivor.
        return moved
    locked = accounts_lock(accounts.values())
    keep, gone = locked[accounts[survivor.pk]], locked[accounts[merged.pk]]
    for model, label in (
        (LedgerEntry, "loyalty.LedgerEntry"),
        (PointLot, "loyalty.PointLot"),
        (OwedPoints, "loyalty.OwedPoints"),
        (TierChange, "loyalty.TierChange"),
        (ManualAdjustment, "loyalty.ManualAdjustment"),
    ):
        count = model.objects.filter(account_id=gone.pk).update(account_id=keep.pk)
        if count:
            moved[label] = count
    # One usage row per (account, rule, day): add the merged account's into the survivor's.
    for usage in RuleUsage.objects.filter(account_id=gone.pk):
        mine, _created = RuleUsage.objects.get_or_create(
            account_id=keep.pk, rule_id=usage.rule_id, day=usage.day, defaults={"points": 0}
        )
        RuleUsage.objects.filter(pk=mine.pk).update(points=mine.points + usage.points)
    RuleUsage.objects.filter(account_id=gone.pk).delete()

    sums = balances_from_entries(account_id=keep.pk)
    keep.available, keep.pending, keep.owed = sums["available"], sums["pending"], sums["owed"]
    balances_save(keep)
    # The better tier survives, with its dates.
    if gone.tier_id and (keep.tier_id is None or _rank(gone.tier_id) > _rank(keep.tier_id)):
        LoyaltyAccount.objects.filter(pk=keep.pk).update(
            tier_id=gone.tier_id,
            tier_since=gone.tier_since,
            tier_review_at=gone.tier_review_at,
            downgrade_at=gone.downgrade_at,
        )
        TierChange.objects.create(
            account_id=keep.pk,
            from_tier_id=keep.tier_id,
            to_tier_id=gone.tier_id,
            reason=TierChange.Reason.MERGE,
            note=f"merged account #{gone.pk}",
        )
    LoyaltyAccount.objects.filter(pk=gone.pk).update(
        customer=None,
        status=LoyaltyAccount.Status.MERGED,
        merged_into=keep,
        available=0,
        pending=0,
        owed=0,
    )
    moved["loyalty.LoyaltyAccount"] = 1
    return moved


def _rank(tier_id: int) -> int:
    from loyalty.models import Tier

    return Tier.objects.filter(pk=tier_id).values_list("rank", flat=True).first() or 0
