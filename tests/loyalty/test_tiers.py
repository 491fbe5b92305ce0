"""Tiers: upgrade the moment rolling spend reaches a threshold, downgrade only at review after grace."""

from datetime import timedelta

import pytest

from crm.models import Event
from loyalty.models import TierChange
from loyalty.selectors import account_summary
from loyalty.services.tiers import tier_reviews_run
from tests.loyalty.ledger_helpers import T0, account_of, customer_make, order_make, process, programme_setup

pytestmark = pytest.mark.django_db


def test_upgrade_happens_as_soon_as_rolling_spend_reaches_the_threshold():
    tiers, _ = programme_setup()
    customer = customer_make()
    order_make(customer, total="600", placed_at=T0)
    process(T0 + timedelta(hours=1))
    assert account_of(customer).tier == tiers["member"]

    order_make(customer, total="450", placed_at=T0 + timedelta(days=3))
    process(T0 + timedelta(days=3, hours=1))

    account = account_of(customer)
    assert account.tier == tiers["silver"]
    assert account.tier_review_at is not None
    change = TierChange.objects.get(account=account)
    assert (change.from_tier, change.to_tier, change.reason) == (tiers["member"], tiers["silver"], "upgrade")
    event = Event.objects.get(type="tier_changed")
    assert event.properties["to_tier"] == "silver" and event.properties["direction"] == "up"
    # The order that crossed the threshold earned at the old rate; the next one earns the silver bonus.
    order_make(customer, total="100", placed_at=T0 + timedelta(days=4))
    process(T0 + timedelta(days=4, hours=1))
    assert account_of(customer).pending == 600 + 450 + 125


def test_refunds_count_against_rolling_spend():
    tiers, _ = programme_setup()
    customer = customer_make()
    order_make(customer, total="900")
    process(T0 + timedelta(hours=1))
    summary = account_summary(account=account_of(customer), now=T0 + timedelta(hours=2))
    assert summary.progress.value == 900 and summary.progress.percent == 90
    assert summary.progress.amount_to_next == 100


def test_downgrade_only_at_review_after_the_grace_period():
    tiers, _ = programme_setup(grace_days=30)
    customer = customer_make()
    order_make(customer, total="1200", placed_at=T0)
    process(T0 + timedelta(hours=1))
    account = account_of(customer)
    assert account.tier == tiers["silver"]
    review_at = account.tier_review_at

    # Spend falls out of the 12-month window long before the review, yet nothing happens until then.
    assert tier_reviews_run(now=review_at - timedelta(days=1))["grace"] == 0
    assert account_of(customer).tier == tiers["silver"]

    counts = tier_reviews_run(now=review_at + timedelta(hours=1))
    account = account_of(customer)
    assert counts["grace"] == 1
    assert account.tier == tiers["silver"] and account.downgrade_at == review_at + timedelta(days=30)

    tier_reviews_run(now=account.downgrade_at + timedelta(hours=1))
    account = account_of(customer)
    assert account.tier == tiers["member"]
    assert account.tier_review_at is None and account.downgrade_at is None
    assert TierChange.objects.filter(account=account, reason="downgrade").count() == 1
    assert Event.objects.filter(type="tier_changed", properties__direction="down").count() == 1


def test_requalifying_during_grace_keeps_the_tier():
    tiers, _ = programme_setup(grace_days=30)
    customer = customer_make()
    order_make(customer, total="1200", placed_at=T0)
    process(T0 + timedelta(hours=1))
    review_at = account_of(customer).tier_review_at
    tier_reviews_run(now=review_at + timedelta(hours=1))

    order_make(customer, total="1000", placed_at=review_at + timedelta(days=2))
    process(review_at + timedelta(days=2, hours=1))

    account = account_of(customer)
    assert account.tier == tiers["silver"] and account.downgrade_at is None
    assert account.tier_review_at > review_at + timedelta(days=300)
    tier_reviews_run(now=review_at + timedelta(days=40))
    assert account_of(customer).tier == tiers["silver"]


def test_points_basis_counts_points_earned_not_the_spendable_balance():
    tiers, _ = programme_setup(tier_basis="points", return_window_days=0)
    customer = customer_make()
    order_make(customer, total="1000")
    process(T0 + timedelta(hours=1))
    account = account_of(customer)
    assert account.tier == tiers["silver"]
    from loyalty.services.ledger import points_redeem

    points_redeem(account=account, points=1000, idempotency_key="spend-all", reason="reward")
    summary = account_summary(account=account_of(customer), now=T0 + timedelta(hours=2))
    assert summary.available == 0 and summary.progress.value == 1000


def test_qualifying_spend_by_customer_matches_the_join_through_accounts():
    from loyalty.selectors import qualifying_values

    programme_setup()
    buyers = [customer_make() for _ in range(3)]
    order_make(buyers[0], total="120")
    order_make(buyers[0], total="80", placed_at=T0 - timedelta(days=400))  # outside a 12-month window
    order_make(buyers[1], total="500")
    process(T0 + timedelta(hours=1))
    from loyalty.services.ledger import account_for_customer

    accounts = [account_of(c) for c in buyers[:2]] + [account_for_customer(customer=buyers[2], now=T0)]
    since = T0 - timedelta(days=365)
    joined = qualifying_values(account_ids=[a.pk for a in accounts], since=since, basis="spend")
    direct = qualifying_values(
        account_ids=[a.pk for a in accounts],
        since=since,
        basis="spend",
        customer_by_account={a.pk: a.customer_id for a in accounts},
    )
    assert joined == direct
    assert [direct[a.pk] for a in accounts] == [120, 500, 0]


def test_several_accounts_upgraded_in_one_batch_get_their_own_change_and_event():
    """The accrual writes the moves of a batch in one statement: each account's tier, its TierChange and
    a tier_changed event on the right customer, keyed to that change."""
    tiers, _ = programme_setup()
    customers = [customer_make() for _ in range(3)]
    for customer in customers[:2]:
        order_make(customer, total="1200", placed_at=T0)
    order_make(customers[2], total="50", placed_at=T0)

    process(T0 + timedelta(hours=1))

    for customer in customers[:2]:
        account = account_of(customer)
        assert account.tier == tiers["silver"] and account.tier_review_at is not None
        change = TierChange.objects.get(account=account)
        event = Event.objects.get(type="tier_changed", customer=customer)
        assert event.external_id == f"loyalty:tier_changed:{change.pk}"
        assert event.properties["account_id"] == account.pk and event.properties["to_tier"] == "silver"
    assert account_of(customers[2]).tier == tiers["member"]
    assert not TierChange.objects.filter(account=account_of(customers[2])).exists()
    assert Event.objects.filter(type="tier_changed").count() == 2
