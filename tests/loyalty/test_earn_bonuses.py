"""Event bonuses: sign-up once, reviews capped per day, birthday with the tier gift, first order, and
referral bonuses for both sides after the referee's first paid order."""

from datetime import UTC, datetime, timedelta

import pytest

from loyalty.models import EarnRule, LedgerEntry, Referral, Tier
from loyalty.services.accrual import birthday_bonuses_award
from loyalty.services.ledger import account_for_customer
from tests.loyalty.ledger_helpers import (
    T0,
    account_of,
    customer_make,
    event_write,
    order_make,
    process,
    programme_setup,
)

pytestmark = pytest.mark.django_db

NOW = T0 + timedelta(hours=1)


def _bonus(event, points, **kw):
    return EarnRule.objects.create(
        name=f"{event} bonus", kind="event", event=event, bonus_points=points, **kw
    )


def test_signup_bonus_is_earned_once_and_is_available_at_once():
    programme_setup()
    _bonus("signup", 100)
    customer = customer_make()
    event_write(customer, "signup", {}, T0)
    event_write(customer, "signup", {}, T0)
    process(NOW)
    account = account_of(customer)
    assert (account.available, account.pending) == (100, 0)


def test_review_bonus_is_capped_per_member_per_day():
    programme_setup()
    _bonus("review", 20, cap_per_day=50)
    customer = customer_make()
    for _ in range(4):
        event_write(customer, "review_posted", {}, T0)
    process(NOW)
    assert account_of(customer).available == 50  # 20 + 20 + 10, then nothing
    event_write(customer, "review_posted", {}, T0 + timedelta(days=1))
    process(NOW + timedelta(days=1))
    assert account_of(customer).available == 70


def test_first_order_and_referral_bonuses_follow_the_referees_first_paid_order():
    programme_setup()
    _bonus("first_order", 50)
    _bonus("referral_referrer", 300)
    _bonus("referral_referee", 100)
    referrer, referee = customer_make(), customer_make()
    Referral.objects.create(referrer=referrer, referee=referee, code="ABC")

    order_make(referee, total="10", placed_at=T0)
    order_make(referee, total="10", placed_at=T0 + timedelta(minutes=5))
    process(NOW)
    order_make(referee, total="10", placed_at=T0 + timedelta(minutes=10))
    process(NOW)

    assert account_of(referee).pending == 30 + 50 + 100
    assert account_of(referrer).pending == 300
    assert LedgerEntry.objects.filter(idempotency_key__startswith="bonus:").count() == 3


def test_birthday_points_include_the_tier_gift_once_a_year_in_the_members_time_zone():
    tiers, _ = programme_setup()
    Tier.objects.filter(code="silver").update(birthday_gift_points=300)
    _bonus("birthday", 200)
    customer = customer_make(birthday=datetime(1990, 6, 2).date(), time_zone="Asia/Shanghai")
    account = account_for_customer(customer=customer)
    account.tier = tiers["silver"]
    account.save(update_fields=["tier"])

    # 1 June 17:00 UTC is already 2 June in Shanghai.
    at = datetime(2026, 6, 1, 17, 0, tzinfo=UTC)
    assert birthday_bonuses_award(now=at - timedelta(hours=2)) == 0
    assert birthday_bonuses_award(now=at) == 1
    assert birthday_bonuses_award(now=at + timedelta(hours=5)) == 0
    account.refresh_from_db()
    assert account.available == 500
