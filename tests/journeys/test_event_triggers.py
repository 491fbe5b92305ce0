"""The entry triggers fed by the events other apps write: a lifecycle stage change (crm's nightly metrics),
a tier change and points about to expire (loyalty), each written by the real service; and an event not
followed by another in time (cart abandonment), computed by the time-trigger dispatcher."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from django.utils import timezone

from crm.services.event_log import NewEvent, events_append
from crm.services.metrics import metrics_compute
from journeys.models import Enrollment
from journeys.services.time_triggers import NOT_FOLLOWED_SETTLE, time_triggers_dispatch
from loyalty.services.ledger import account_for_customer, points_adjust
from loyalty.services.lifecycle import expiring_notices_emit
from loyalty.services.tiers import tier_set
from tests.crm.metrics_helpers import place_orders
from tests.factories import CustomerFactory
from tests.journeys.engine_helpers import published, run
from tests.journeys.graphs import chain, entry, node
from tests.loyalty.ledger_helpers import T0, programme_setup

pytestmark = pytest.mark.django_db

ALWAYS = {"re_entry": {"mode": "always"}}


def journey(trigger: dict, *, at: datetime | None):
    return published(chain(entry(**trigger), node("x", "exit")), settings=ALWAYS, now=at)


def entered(version) -> list[int]:
    return sorted(
        Enrollment.objects.filter(journey_id=version.journey_id).values_list("customer_id", flat=True)
    )


def test_a_customer_whom_crms_metrics_move_into_dormant_enters_the_win_back_journey():
    version = journey({"kind": "stage_changed", "to": "dormant"}, at=None)
    day0 = date(2026, 1, 5)
    sleeper, wobbly = CustomerFactory(), CustomerFactory()
    # Monthly buyers: the sleeper stops after day 60, the other keeps buying until day 120.
    place_orders(sleeper, day0, day0 + timedelta(days=30), day0 + timedelta(days=60))
    place_orders(wobbly, *(day0 + timedelta(days=d) for d in (0, 30, 60, 90, 120)))
    metrics_compute(as_of=day0 + timedelta(days=70), pipeline="postgres")  # both active
    run(timezone.now())
    assert entered(version) == []
    metrics_compute(as_of=day0 + timedelta(days=170), pipeline="postgres")  # 110 days: dormant; 50: at risk
    run(timezone.now())
    assert entered(version) == [sleeper.pk]


def test_a_tier_change_written_by_loyalty_enters_the_congratulations_journey_for_its_tier():
    tiers, _base = programme_setup()
    version = journey(
        {"kind": "tier_changed", "filters": [{"property": "to_tier", "op": "eq", "value": "gold"}]}, at=T0
    )
    golden, silvered = CustomerFactory(), CustomerFactory()
    for customer, tier in ((golden, "gold"), (silvered, "silver")):
        tier_set(account=account_for_customer(customer=customer), tier=tiers[tier], note="match", now=T0)
    run(T0 + timedelta(minutes=1))
    assert entered(version) == [golden.pk]


def test_points_about_to_expire_enter_the_reminder_journey_once_per_notice():
    programme_setup(expiry_policy="rolling_months", expiry_months=1)
    version = journey({"kind": "points_expiring"}, at=T0)
    holder, spender = CustomerFactory(), CustomerFactory()
    points_adjust(
        account=account_for_customer(customer=holder), points=40, idempotency_key="e1", reason="earn", now=T0
    )
    account_for_customer(customer=spender)
    now = T0 + timedelta(days=5)
    assert expiring_notices_emit(now=now) == 1
    run(now + timedelta(minutes=1))
    assert entered(version) == [holder.pk]
    assert expiring_notices_emit(now=now + timedelta(hours=1)) == 0  # one notice per lot
    run(now + timedelta(hours=1, minutes=1))
    assert entered(version) == [holder.pk]


# --- An event not followed by another in time ---------------------------------------------------------

START = datetime(2027, 3, 10, 2, 0, tzinfo=UTC)
CART = {
    "kind": "event_not_followed",
    "event_type": "add_to_cart",
    "filters": [{"property": "channel", "op": "eq", "value": "wechat_miniprogram"}],
    "not_followed_by": "order_placed",
    "within": {"value": 2, "unit": "hours"},
}


def log(event_type, customer, at, **properties):
    events_append(
        events=[NewEvent(type=event_type, customer_id=customer.pk, occurred_at=at, properties=properties)],
        now=at,
    )


def test_an_add_to_cart_with_no_order_within_two_hours_enters_and_one_with_the_order_in_time_does_not():
    version = journey(CART, at=START)
    idler, buyer, late_buyer, elsewhere = (CustomerFactory() for _ in range(4))
    t = START + timedelta(minutes=10)
    for customer in (idler, buyer, late_buyer):
        log("add_to_cart", customer, t, sku="A1", channel="wechat_miniprogram")
    log("add_to_cart", elsewhere, t, sku="A1", channel="tmall")  # not the mini-program: no entry
    log("order_placed", buyer, t + timedelta(minutes=90), total="99.00")
    log("order_placed", late_buyer, t + timedelta(hours=2, minutes=5), total="99.00")  # too late
    time_triggers_dispatch(now=t + timedelta(hours=1, minutes=59))
    assert entered(version) == []  # nobody's two hours are up yet
    due = t + timedelta(hours=2) + NOT_FOLLOWED_SETTLE
    time_triggers_dispatch(now=due)
    assert entered(version) == sorted([idler.pk, late_buyer.pk])
    time_triggers_dispatch(now=due + timedelta(minutes=1))
    time_triggers_dispatch(now=due + timedelta(minutes=2))
    assert len(entered(version)) == 2  # once per cart, however often the dispatcher runs
    occurrences = set(
        Enrollment.objects.filter(journey_id=version.journey_id).values_list("occurrence", flat=True)
    )
    assert all(o.isdigit() for o in occurrences)  # the add_to_cart event's id


def test_an_abandoned_cart_from_before_the_journey_was_published_enters_nobody():
    customer = CustomerFactory()
    log("add_to_cart", customer, START - timedelta(hours=1), channel="wechat_miniprogram")
    version = journey(CART, at=START)
    time_triggers_dispatch(now=START + timedelta(hours=2))
    assert entered(version) == []
