"""Reward redemption: points, stock and coupon move together or not at all."""

from datetime import timedelta

import pytest
from django.utils import timezone

from loyalty.models import LedgerEntry, LoyaltyAccount
from loyalty.models.rewards import Coupon, Reward, RewardRedemption
from loyalty.services import rewards as rewards_service
from loyalty.services.ledger import IdempotencyConflict, InsufficientPoints
from loyalty.services.rewards import (
    RewardLimitReached,
    RewardOutOfStock,
    RewardTierRestricted,
    RewardUnavailable,
    reward_redeem,
    rewards_catalogue,
)
from tests.loyalty.test_member_support import (
    member_make,
    member_test_setup,  # noqa: F401
    programme_make,
    reward_make,
    tiers_make,
)
from tests.moments import FromNow, resolved

pytestmark = pytest.mark.django_db


def _state(login, reward):
    account = LoyaltyAccount.objects.get(customer=login.customer)
    reward.refresh_from_db()
    return {
        "available": account.available,
        "stock": reward.stock,
        "coupons": Coupon.objects.filter(customer=login.customer).count(),
        "redemptions": RewardRedemption.objects.filter(customer=login.customer).count(),
        "redeem_entries": LedgerEntry.objects.filter(account=account, kind="redeem").count(),
    }


def test_redeeming_a_reward_spends_points_takes_stock_and_issues_a_personal_coupon():
    login = member_make(points=1200)
    reward = reward_make(points_price=500, stock=10)
    now = timezone.now()

    result = reward_redeem(customer=login.customer, reward_id=reward.pk, idempotency_key="k-1", now=now)

    assert result.created
    assert _state(login, reward) == {
        "available": 700,
        "stock": 9,
        "coupons": 1,
        "redemptions": 1,
        "redeem_entries": 1,
    }
    coupon = result.redemption.coupon
    assert coupon.customer == login.customer and coupon.max_uses == 1
    assert coupon.valid_until == now + timedelta(days=30)
    assert result.redemption.ledger_entry.points == -500


def test_the_same_idempotency_key_returns_the_first_redemption_and_spends_nothing_more():
    login = member_make(points=1200)
    reward = reward_make(points_price=500, stock=10)
    first = reward_redeem(customer=login.customer, reward_id=reward.pk, idempotency_key="k-1")

    again = reward_redeem(customer=login.customer, reward_id=reward.pk, idempotency_key="k-1")

    assert not again.created and again.redemption.pk == first.redemption.pk
    assert _state(login, reward)["available"] == 700 and _state(login, reward)["stock"] == 9


def test_the_same_key_for_another_reward_is_refused():
    login = member_make(points=1200)
    one, two = reward_make(points_price=100), reward_make(points_price=200)
    reward_redeem(customer=login.customer, reward_id=one.pk, idempotency_key="k-1")

    with pytest.raises(IdempotencyConflict):
        reward_redeem(customer=login.customer, reward_id=two.pk, idempotency_key="k-1")


def test_out_of_stock_changes_nothing():
    login = member_make(points=1200)
    reward = reward_make(points_price=500, stock=0)
    before = _state(login, reward)

    with pytest.raises(RewardOutOfStock):
        reward_redeem(customer=login.customer, reward_id=reward.pk, idempotency_key="k-1")

    assert _state(login, reward) == before


def test_not_enough_points_changes_nothing():
    login = member_make(points=499)
    reward = reward_make(points_price=500, stock=3)
    before = _state(login, reward)

    with pytest.raises(InsufficientPoints):
        reward_redeem(customer=login.customer, reward_id=reward.pk, idempotency_key="k-1")

    assert _state(login, reward) == before == {**before, "stock": 3, "available": 499}


def test_per_member_limit_refuses_the_next_redemption_and_changes_nothing():
    login = member_make(points=5000)
    reward = reward_make(points_price=500, stock=10, per_member_limit=2)
    reward_redeem(customer=login.customer, reward_id=reward.pk, idempotency_key="k-1")
    reward_redeem(customer=login.customer, reward_id=reward.pk, idempotency_key="k-2")
    before = _state(login, reward)

    with pytest.raises(RewardLimitReached):
        reward_redeem(customer=login.customer, reward_id=reward.pk, idempotency_key="k-3")

    assert _state(login, reward) == before == {**before, "available": 4000, "stock": 8, "redemptions": 2}


def test_tier_restriction_refuses_lower_tiers_and_changes_nothing():
    tiers = tiers_make()
    silver_member = member_make(points=5000, tier=tiers["silver"])
    gold_member = member_make(points=5000, tier=tiers["gold"])
    reward = reward_make(points_price=500, stock=10, min_tier=tiers["gold"])
    before = _state(silver_member, reward)

    with pytest.raises(RewardTierRestricted):
        reward_redeem(customer=silver_member.customer, reward_id=reward.pk, idempotency_key="k-1")
    assert _state(silver_member, reward) == before

    assert reward_redeem(customer=gold_member.customer, reward_id=reward.pk, idempotency_key="k-1").created


@pytest.mark.parametrize(
    "fields",
    [
        {"is_active": False},
        {"valid_from": FromNow(days=1)},
        {"valid_until": FromNow(seconds=-1)},
    ],
    ids=["inactive", "not-yet", "ended"],
)
def test_a_reward_that_is_not_on_offer_cannot_be_redeemed(fields):
    login = member_make(points=5000)
    reward = reward_make(points_price=500, stock=10, **resolved(fields, iso=False))
    before = _state(login, reward)

    with pytest.raises(RewardUnavailable):
        reward_redeem(customer=login.customer, reward_id=reward.pk, idempotency_key="k-1")

    assert _state(login, reward) == before


def test_a_failure_after_the_debit_rolls_back_the_points_and_the_stock(monkeypatch):
    login = member_make(points=1200)
    reward = reward_make(points_price=500, stock=10)
    before = _state(login, reward)

    def broken_issue(**kwargs):
        raise RuntimeError("coupon service down")

    monkeypatch.setattr(rewards_service, "coupon_issue", broken_issue)
    with pytest.raises(RuntimeError):
        reward_redeem(customer=login.customer, reward_id=reward.pk, idempotency_key="k-1")

    assert _state(login, reward) == before
    assert not LedgerEntry.objects.filter(idempotency_key__startswith="reward:").exists()


def test_stock_running_out_after_the_debit_rolls_the_debit_back():
    """The stock update comes last; if another redemption took the last unit, the points come back."""
    login = member_make(points=1200)
    reward = reward_make(points_price=500, stock=1)
    # Another member took the last unit after our early stock check: simulate by emptying it in between.
    original = rewards_service.coupon_issue

    def issue_then_empty(**kwargs):
        coupon = original(**kwargs)
        Reward.objects.filter(pk=reward.pk).update(stock=0)
        return coupon

    rewards_service.coupon_issue = issue_then_empty
    try:
        with pytest.raises(RewardOutOfStock):
            reward_redeem(customer=login.customer, reward_id=reward.pk, idempotency_key="k-1")
    finally:
        rewards_service.coupon_issue = original

    state = _state(login, reward)
    assert (state["available"], state["coupons"], state["redemptions"], state["redeem_entries"]) == (
        1200,
        0,
        0,
        0,
    )


def test_catalogue_marks_what_the_member_can_afford_and_may_redeem():
    tiers = tiers_make()
    login = member_make(points=600, tier=tiers["member"])
    cheap = reward_make(name="cheap", points_price=100, per_member_limit=1, sort_order=1)
    dear = reward_make(name="dear", points_price=1000, sort_order=2)
    gold = reward_make(name="gold only", points_price=100, min_tier=tiers["gold"], sort_order=3)
    empty = reward_make(name="empty", points_price=100, stock=0, sort_order=4)
    reward_make(name="withdrawn", points_price=100, is_active=False)
    reward_redeem(customer=login.customer, reward_id=cheap.pk, idempotency_key="k-1")

    offers = rewards_catalogue(customer=login.customer, available_points=500, tier_id=tiers["member"].pk)

    by_name = {o.reward.name: o for o in offers}
    assert list(by_name) == ["cheap", "dear", "gold only", "empty"]
    assert (by_name["cheap"].eligible, by_name["cheap"].redeemed_by_member) == (False, 1)
    assert (by_name["dear"].affordable, by_name["dear"].eligible) == (False, True)
    assert by_name["gold only"].eligible is False and "Gold" in by_name["gold only"].reason
    assert by_name["empty"].eligible is False
    assert dear and gold and empty


def test_unlimited_stock_is_not_decremented():
    login = member_make(points=1200)
    programme = programme_make()
    reward = reward_make(points_price=500, stock=None, coupon_programme=programme)

    reward_redeem(customer=login.customer, reward_id=reward.pk, idempotency_key="k-1")

    reward.refresh_from_db()
    assert reward.stock is None
