"""A small, fully known world for the admin home page's tests (tests/config/test_admin_home.py and the
browser test tests/e2e/test_admin_workspace.py): every figure the page shows can be worked out by hand
from what is built here, relative to the `now` the test passes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

from crm.clock import business_today
from crm.models import Customer
from crm.models.metrics import CustomerMetrics
from loyalty.models import EntryKind, LedgerEntry, LoyaltyAccount, ProgrammeSettings
from tests.factories import CustomerFactory, EventFactory, OrderFactory


@dataclass
class HomeWorld:
    regular: Customer  # two orders in the last 30 days
    lapsing: Customer  # one order in the previous 30 days
    sleeper: Customer  # one order long ago; high value, dormant
    browser: Customer  # no order, a page view three days ago
    erased: Customer


def home_world_build(*, now) -> HomeWorld:
    regular = CustomerFactory(name="王芳 Regular")
    lapsing = CustomerFactory(name="李娜 Lapsing")
    sleeper = CustomerFactory(name="张伟 Sleeper")
    browser = CustomerFactory(name="刘洋 Browser")
    erased = CustomerFactory(name="Erased", erased_at=now)
    OrderFactory(customer=regular, total=Decimal("100.00"), placed_at=now - timedelta(days=1))
    OrderFactory(customer=regular, total=Decimal("200.00"), placed_at=now - timedelta(days=10))
    OrderFactory(customer=lapsing, total=Decimal("50.00"), placed_at=now - timedelta(days=40))
    OrderFactory(customer=sleeper, total=Decimal("999.00"), placed_at=now - timedelta(days=400))
    EventFactory(customer=browser, type="page_view", occurred_at=now - timedelta(days=3))
    EventFactory(customer=sleeper, type="page_view", occurred_at=now - timedelta(days=45))

    today = business_today(now)

    def metrics(customer, **values):
        CustomerMetrics.objects.create(
            customer=customer, as_of=today, computed_at=now, stage_since=today, **values
        )

    metrics(regular, order_count=2, lifecycle_stage="active", value_tier="medium", total_value=Decimal("300"))
    metrics(lapsing, order_count=1, lifecycle_stage="at_risk", value_tier="low", total_value=Decimal("50"))
    metrics(
        sleeper,
        order_count=1,
        lifecycle_stage="dormant",
        value_tier="high",
        sleeping_high_value=True,
        total_value=Decimal("999"),
    )
    # `browser` has no metrics row yet (new since the last run).

    ProgrammeSettings.objects.update_or_create(pk=1, defaults={"point_value": Decimal("0.02")})
    regular_account = LoyaltyAccount.objects.create(customer=regular, available=1000, pending=200)
    lapsing_account = LoyaltyAccount.objects.create(customer=lapsing, available=500)
    LoyaltyAccount.objects.create(customer=None, status=LoyaltyAccount.Status.MERGED)

    def entry(account, kind, points, key):
        LedgerEntry.objects.create(
            account=account, kind=kind, points=points, idempotency_key=key, payload_hash=key
        )

    entry(regular_account, EntryKind.EARN, 1500, "home-earn")
    entry(regular_account, EntryKind.REDEEM, -500, "home-redeem")
    entry(lapsing_account, EntryKind.ADJUST, 600, "home-adjust")
    entry(lapsing_account, EntryKind.REVERSE, -100, "home-reverse")
    return HomeWorld(regular, lapsing, sleeper, browser, erased)


# What the page must show for that world, worked out by hand.
EXPECTED = {
    "customers": 4,  # the erased one is not counted
    "members": 2,  # the merged account is folded into another
    "active_customers": 2,  # regular (orders) and browser (page view); sleeper's view is 45 days old
    "gmv": Decimal("300.00"),
    "orders": 2,
    "previous_gmv": Decimal("50.00"),
    "previous_orders": 1,
    "repeat_buyers": 1,
    "buyers": 3,
    "sleeping_high_value": 1,
    "outstanding_points": 1500,
    "liability_value": Decimal("30.00"),  # 1,500 × ¥0.02
    "issued_points": 2000,  # earned 1,500 + adjusted 600 − reversed 100
    "redeemed_points": 500,
}
