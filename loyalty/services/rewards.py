"""Spending points on rewards: the catalogue a member sees and the redemption that pays for one.

A redemption is one transaction: the ledger debit (`points_redeem`), one unit of stock and the coupon it
issues commit together or not at all. Locks follow the app's one order: the member's account row first
(which also serialises the per-member limit check), then the reward row, taken last by the conditional
stock update so that a popular reward is locked only for the last few statements of each redemption.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.db import transaction
from django.db.models import Count, F, Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from crm.models import Customer
from loyalty.ledger_reasons import reason_code
from loyalty.models import LoyaltyAccount, Tier
from loyalty.models.rewards import Reward, RewardRedemption
from loyalty.services.coupons import coupon_issue
from loyalty.services.ledger import (
    AccountInactive,
    IdempotencyConflict,
    InsufficientPoints,
    LoyaltyError,
    account_for_customer,
    account_lock,
    points_redeem,
)

__all__ = [
    "InsufficientPoints",
    "IdempotencyConflict",
    "RewardError",
    "RewardLimitReached",
    "RewardOutOfStock",
    "RewardTierRestricted",
    "RewardUnavailable",
    "reward_redeem",
    "rewards_catalogue",
]


class RewardError(LoyaltyError):
    code = "reward_error"
    status_code = 409
    default_message = _("This reward cannot be redeemed.")


class RewardUnavailable(RewardError):
    code = "reward_unavailable"
    status_code = 404
    default_message = _("This reward is not available.")


class RewardOutOfStock(RewardError):
    code = "out_of_stock"
    default_message = _("This reward is out of stock.")


class RewardLimitReached(RewardError):
    code = "member_limit_reached"
    default_message = _("You have already redeemed this reward as many times as allowed.")


class RewardTierRestricted(RewardError):
    code = "tier_restricted"
    status_code = 403
    default_message = _("This reward is for members of a higher tier.")


def _available(qs, now):
    return qs.filter(is_active=True).filter(
        (Q(valid_from__isnull=True) | Q(valid_from__lte=now))
        & (Q(valid_until__isnull=True) | Q(valid_until__gt=now))
    )


def _tier_rank(tier_id: int | None) -> int:
    # No tier counts as the entry rank (0): a reward restricted to the entry tier is open to everyone.
    if tier_id is None:
        return 0
    return Tier.objects.filter(pk=tier_id).values_list("rank", flat=True).first() or 0


# --- Catalogue ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RewardOffer:
    reward: Reward
    affordable: bool
    eligible: bool  # tier, stock and per-member limit allow it
    reason: str  # why not eligible, for people ("" when eligible)
    redeemed_by_member: int


def rewards_catalogue(
    *, customer: Customer, available_points: int, tier_id: int | None, now=None
) -> list[RewardOffer]:
    """The rewards on offer now, each with whether this member can afford and may redeem it (3 queries)."""
    now = now or timezone.now()
    rewards = list(_available(Reward.objects.select_related("min_tier", "coupon_programme"), now))
    counts = dict(
        RewardRedemption.objects.filter(customer=customer, reward__in=[r.pk for r in rewards])
        .values("reward")
        .annotate(n=Count("id"))
        .values_list("reward", "n")
    )
    rank = _tier_rank(tier_id)
    offers = []
    for reward in rewards:
        used = counts.get(reward.pk, 0)
        reason = ""
        if reward.min_tier is not None and rank < reward.min_tier.rank:
            reason = str(_("For %(tier)s members and above.") % {"tier": reward.min_tier.name})
        elif reward.stock is not None and reward.stock <= 0:
            reason = str(RewardOutOfStock.default_message)
        elif reward.per_member_limit is not None and used >= reward.per_member_limit:
            reason = str(RewardLimitReached.default_message)
        offers.append(
            RewardOffer(
                reward=reward,
                affordable=available_points >= reward.points_price,
                eligible=not reason,
                reason=reason,
                redeemed_by_member=used,
            )
        )
    return offers


def reward_redemption_for_member(*, customer_id: int, redemption_id: int) -> RewardRedemption | None:
    """One of the member's own redemptions (None for anyone else's)."""
    return (
        RewardRedemption.objects.select_related("reward", "coupon", "coupon__programme")
        .filter(pk=redemption_id, customer_id=customer_id)
        .first()
    )


# --- Redemption -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RedeemResult:
    redemption: RewardRedemption
    created: bool


def _replayed(key: str, *, customer: Customer, reward_id: int) -> RewardRedemption | None:
    found = RewardRedemption.objects.select_related("coupon", "reward").filter(idempotency_key=key).first()
    if found is not None and (found.customer_id != customer.pk or found.reward_id != reward_id):
        raise IdempotencyConflict(idempotency_key=key)
    return found


def reward_redeem(
    *, customer: Customer, reward_id: int, idempotency_key: str, now: datetime | None = None
) -> RedeemResult:
    """Spend the reward's points price, take one unit of stock and issue its coupon, all or nothing.

    Raises RewardUnavailable, RewardTierRestricted, RewardLimitReached, RewardOutOfStock, InsufficientPoints,
    AccountInactive or IdempotencyConflict, and then nothing has changed. The same `idempotency_key`
    (per member) returns the first redemption with created=False."""
    now = now or timezone.now()
    key = f"reward:{customer.pk}:{idempotency_key}"
    existing = _replayed(key, customer=customer, reward_id=reward_id)
    if existing is not None:
        return RedeemResult(redemption=existing, created=False)
    account = account_for_customer(customer=customer, now=now)
    with transaction.atomic():
        locked = account_lock(account.pk)
        # A retry of this very request may have committed while we waited for the account.
        existing = _replayed(key, customer=customer, reward_id=reward_id)
        if existing is not None:
            return RedeemResult(redemption=existing, created=False)
        if locked.status != LoyaltyAccount.Status.ACTIVE:
            raise AccountInactive(account=locked.pk)
        reward = (
            _available(Reward.objects.select_related("coupon_programme", "min_tier"), now)
            .filter(pk=reward_id)
            .first()
        )
        if reward is None:
            raise RewardUnavailable(reward=reward_id)
        if reward.min_tier is not None and _tier_rank(locked.tier_id) < reward.min_tier.rank:
            raise RewardTierRestricted(reward=reward_id)
        if reward.per_member_limit is not None:
            # Safe without a lock on the redemptions: every redemption of this member holds the account lock.
            used = RewardRedemption.objects.filter(customer=customer, reward=reward).count()
            if used >= reward.per_member_limit:
                raise RewardLimitReached(reward=reward_id, limit=reward.per_member_limit)
        if reward.stock is not None and reward.stock <= 0:
            raise RewardOutOfStock(reward=reward_id)  # cheap early answer; the update below decides
        entry = points_redeem(
            account=locked,
            points=reward.points_price,
            idempotency_key=key,
            reason=reason_code("reward", reward.name),
            reference=f"reward:{reward.pk}",
            now=now,
        )
        coupon = coupon_issue(programme=reward.coupon_programme, customer=customer, now=now)
        if reward.stock is not None:
            # Last, so the reward row stays locked only until the commit a few statements away.
            if not Reward.objects.filter(pk=reward.pk, stock__gt=0).update(stock=F("stock") - 1):
                raise RewardOutOfStock(reward=reward_id)
        redemption = RewardRedemption.objects.create(
            reward=reward,
            customer=customer,
            points=reward.points_price,
            coupon=coupon,
            ledger_entry=entry,
            idempotency_key=key,
            created_at=now,
        )
    return RedeemResult(redemption=redemption, created=True)
