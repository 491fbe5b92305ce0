"""Accrual from the crm event log: points per CNY, multipliers, promotions, pending through the return
window, idempotent replays, exact reversals on refunds."""

from datetime import timedelta
from decimal import Decimal

import pytest

from crm.models import Event
from crm.services.event_log import event_log_cursor_reset
from loyalty.models import EarnRule, LedgerEntry, OwedPoints, PointLot, Promotion
from loyalty.services.accrual import ACCRUAL_CONSUMER, events_process, order_refund_reverse, orders_accrue
from loyalty.services.ledger import points_redeem
from loyalty.services.lifecycle import points_release_due
from tests.loyalty.ledger_helpers import (
    T0,
    account_of,
    assert_consistent,
    customer_make,
    order_make,
    process,
    programme_setup,
    refund_make,
)

pytestmark = pytest.mark.django_db

NOW = T0 + timedelta(hours=1)


def test_order_earns_one_point_per_cny_pending_through_the_return_window():
    programme_setup()
    customer = customer_make()
    order_make(customer, total="199.90")

    process(NOW)

    account = account_of(customer)
    assert (account.available, account.pending) == (0, 199)
    lot = PointLot.objects.get(account=account)
    assert lot.state == "pending" and lot.available_at == T0 + timedelta(days=15)
    assert_consistent(account)

    points_release_due(now=T0 + timedelta(days=15))
    account.refresh_from_db()
    assert (account.available, account.pending) == (199, 0)
    assert_consistent(account)


def test_lines_share_the_order_base_without_losing_a_point_to_rounding():
    programme_setup()
    customer = customer_make()
    order_make(
        customer, total="28.50", lines=[("A", "", 1, "9.50"), ("B", "", 1, "9.50"), ("C", "", 1, "9.50")]
    )
    process(NOW)
    earns = LedgerEntry.objects.filter(kind="earn").order_by("order_line__line_no")
    assert [e.pending_delta for e in earns] == [10, 9, 9]  # floor(28.5) = 28, shared out exactly


def test_product_tier_and_promotion_parts_are_recorded_per_line():
    tiers, _base = programme_setup()
    EarnRule.objects.create(name="Formula ×2", kind="category", category="formula", multiplier=Decimal("2"))
    Promotion.objects.create(
        name="Double 11",
        multiplier=Decimal("2"),
        starts_at=T0 - timedelta(days=1),
        ends_at=T0 + timedelta(days=1),
    )
    customer = customer_make()
    orders_accrue(order_ids=[], now=NOW)
    from loyalty.services.ledger import account_for_customer

    account = account_for_customer(customer=customer)
    account.tier = tiers["silver"]
    account.save(update_fields=["tier"])
    order_make(customer, total="300", lines=[("F1", "formula", 1, "100"), ("W1", "wipes", 2, "200")])

    process(NOW)

    formula, wipes = LedgerEntry.objects.filter(kind="earn").order_by("order_line__line_no")
    assert {k: formula.parts[k] for k in ("base", "product", "tier", "promotion")} == {
        "base": 100,
        "product": 100,
        "tier": 25,
        "promotion": 100,
    }
    assert {k: wipes.parts[k] for k in ("base", "product", "tier", "promotion")} == {
        "base": 200,
        "product": 0,
        "tier": 50,
        "promotion": 200,
    }
    assert formula.pending_delta == 325 and wipes.pending_delta == 450


def test_replaying_the_log_adds_nothing():
    programme_setup()
    customer = customer_make()
    order = order_make(customer, total="100")
    process(NOW)
    event_log_cursor_reset(consumer=ACCRUAL_CONSUMER)  # as if the cursor had been lost

    process(NOW)
    orders_accrue(order_ids=[order.pk], now=NOW)

    account = account_of(customer)
    assert account.pending == 100
    assert LedgerEntry.objects.count() == 1
    assert_consistent(account)


def test_cursor_reads_only_the_types_the_accrual_acts_on_and_moves_past_the_rest():
    programme_setup()
    customer = customer_make()
    order = order_make(customer, total="100", event=False)
    Event.objects.create(customer=customer, type="page_view", properties={}, occurred_at=NOW)
    Event.objects.create(
        customer=customer, type="order_placed", properties={"order_id": order.pk}, occurred_at=NOW
    )
    Event.objects.create(customer=customer, type="page_view", properties={}, occurred_at=NOW)

    first, second = events_process(now=NOW), events_process(now=NOW)

    assert (first.events, second.events) == (1, 0)
    assert account_of(customer).pending == 100


def test_partial_refund_reverses_exactly_what_the_refunded_line_earned():
    programme_setup()
    EarnRule.objects.create(name="Formula ×2", kind="category", category="formula", multiplier=Decimal("2"))
    customer = customer_make()
    order = order_make(customer, total="400", lines=[("F1", "formula", 3, "300"), ("W1", "wipes", 1, "100")])
    process(NOW)
    account = account_of(customer)
    assert account.pending == 700

    refund_make(order, lines={1: 1}, at=NOW + timedelta(hours=1))
    process(NOW + timedelta(hours=2))

    account.refresh_from_db()
    reverse = LedgerEntry.objects.get(kind="reverse")
    assert (reverse.parts["base"], reverse.parts["product"]) == (100, 100)
    assert account.pending == 500
    assert_consistent(account)

    # The same refund state again changes nothing; the rest of the line reverses the rest exactly.
    order_refund_reverse(order_id=order.pk, now=NOW + timedelta(hours=3))
    assert LedgerEntry.objects.filter(kind="reverse").count() == 1
    refund_make(order, lines={1: 2, 2: 1}, at=NOW + timedelta(hours=4))
    process(NOW + timedelta(hours=5))
    account.refresh_from_db()
    assert account.pending == 0
    assert_consistent(account)


def test_refund_after_points_were_spent_records_points_owed_and_settles_from_later_earnings():
    programme_setup(return_window_days=0)
    customer = customer_make()
    order = order_make(customer, total="100")
    process(NOW)
    account = account_of(customer)
    assert account.available == 100
    points_redeem(account=account, points=80, idempotency_key="r1", reason="reward")

    refund_make(order, amount="100", at=NOW + timedelta(hours=1))
    process(NOW + timedelta(hours=2))

    account.refresh_from_db()
    assert (account.available, account.owed) == (0, 80)
    assert OwedPoints.objects.get().remaining == 80
    assert_consistent(account)

    order_make(customer, total="50", placed_at=NOW + timedelta(hours=3))
    process(NOW + timedelta(hours=4))
    account.refresh_from_db()
    assert (account.available, account.owed) == (0, 30)
    order_make(customer, total="50", placed_at=NOW + timedelta(hours=5))
    process(NOW + timedelta(hours=6))
    account.refresh_from_db()
    assert (account.available, account.owed) == (20, 0)
    assert OwedPoints.objects.get().remaining == 0
    assert_consistent(account)


@pytest.mark.django_db(transaction=True)
def test_accrual_commits_without_waiting_for_the_disk_in_its_own_transaction_only():
    """Accrual writes are derived from durable orders and events (a crash loses a whole transaction,
    which the cursor or the sweep redoes), so they skip the commit's fsync wait; nothing else does."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    programme_setup()
    customer = customer_make()
    order = order_make(customer, total="88.00")

    with CaptureQueriesContext(connection) as queries:
        orders_accrue(order_ids=[order.pk], now=NOW)

    statements = [q["sql"] for q in queries.captured_queries]
    if connection.vendor != "postgresql":
        assert "SET LOCAL synchronous_commit = off" not in statements
        return
    assert statements.index("SET LOCAL synchronous_commit = off") < len(statements) - 1
    assert account_of(customer).pending == 88
    with connection.cursor() as cursor:  # the next transaction is back to the server's setting
        cursor.execute("SHOW synchronous_commit")
        assert cursor.fetchone()[0] == "on"
