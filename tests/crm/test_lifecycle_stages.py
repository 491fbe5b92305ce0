"""Lifecycle stages: the thresholds, every transition, and the behaviour events journeys react to."""

import json
from datetime import date, datetime, timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from crm.clock import business_time_zone
from crm.models import Event
from crm.models.metrics import CustomerMetrics, LifecycleSettings, MetricsRun
from crm.services.metrics import metrics_compute
from tests.crm.metrics_helpers import place_orders
from tests.factories import CustomerFactory

pytestmark = pytest.mark.django_db

DAY0 = date(2026, 1, 5)


def day(n: int) -> date:
    return DAY0 + timedelta(days=n)


@pytest.fixture(params=["postgres", "generic"])
def pipeline(request):
    """Every behaviour through the PostgreSQL pipeline and through the ORM one SQLite uses."""
    return request.param


@pytest.fixture
def thresholds(db):
    """The defaults, spelled out: new for 30 days; active up to 1.5 purchase cycles since the last
    purchase, at risk up to 2.5, dormant up to 4, churned beyond; cycles clipped to 14..180 days."""
    settings = LifecycleSettings.load()
    settings.mode = LifecycleSettings.Mode.CYCLE
    settings.new_days = 30
    settings.active_cycles, settings.at_risk_cycles, settings.dormant_cycles = (
        Decimal("1.5"),
        Decimal("2.5"),
        Decimal("4"),
    )
    settings.min_cycle_days, settings.max_cycle_days, settings.default_cycle_days = 14, 180, None
    settings.save()
    return settings


def stage_of(customer) -> str:
    return CustomerMetrics.objects.get(customer=customer).lifecycle_stage


def stage_events(customer=None):
    events = Event.objects.filter(type="lifecycle_stage_changed").order_by("id")
    if customer is not None:
        events = events.filter(customer=customer)
    return [(e.properties["from"], e.properties["to"], e.properties["as_of"]) for e in events]


def compute(as_of: date, pipeline: str) -> MetricsRun:
    return metrics_compute(as_of=as_of, pipeline=pipeline)


def test_a_monthly_buyer_goes_from_active_to_churned_and_back(thresholds, pipeline):
    # Given a customer who bought on days 0, 30 and 60: a 30-day purchase cycle
    customer = CustomerFactory()
    place_orders(customer, day(0), day(30), day(60))

    # When metrics are computed night after night
    compute(day(70), pipeline)  # 10 days since the last purchase: 0.33 cycles
    assert stage_of(customer) == "active"
    compute(day(100), pipeline)  # 40 days: 1.33 cycles
    assert stage_of(customer) == "active"
    compute(day(110), pipeline)  # 50 days: 1.67 cycles
    assert stage_of(customer) == "at_risk"
    compute(day(160), pipeline)  # 100 days: 3.33 cycles
    assert stage_of(customer) == "dormant"
    compute(day(200), pipeline)  # 140 days: 4.67 cycles
    assert stage_of(customer) == "churned"
    place_orders(customer, day(201))
    compute(day(201), pipeline)
    assert stage_of(customer) == "active"

    # Then each change, and only a change, is a behaviour event; the first computation is the baseline
    assert stage_events(customer) == [
        ("active", "at_risk", day(110).isoformat()),
        ("at_risk", "dormant", day(160).isoformat()),
        ("dormant", "churned", day(200).isoformat()),
        ("churned", "active", day(201).isoformat()),
    ]
    metrics = CustomerMetrics.objects.get(customer=customer)
    assert metrics.stage_since == day(201)
    assert metrics.purchase_cycle_days == pytest.approx(201 / 3)


def test_thresholds_follow_each_customers_own_purchase_cycle(thresholds, pipeline):
    weekly, quarterly = CustomerFactory(), CustomerFactory()
    place_orders(weekly, *[day(7 * i) for i in range(0, 13)])  # every 14 days after clipping
    place_orders(quarterly, day(0), day(90))

    compute(day(114), pipeline)

    assert stage_of(weekly) == "at_risk"  # 30 days since: 2.1 cycles (its 7-day cycle is clipped to 14)
    assert stage_of(quarterly) == "active"  # 24 days since: 0.27 cycles of 90 days


def test_one_time_buyers_are_judged_by_the_median_cycle_of_repeat_buyers(thresholds, pipeline):
    for _ in range(3):
        place_orders(CustomerFactory(), day(0), day(20))  # 20-day cycles
    once = CustomerFactory()
    place_orders(once, day(0))

    compute(day(45), pipeline)  # 45 days since their only purchase: 2.25 cycles of 20 days

    assert stage_of(once) == "at_risk"
    assert {"code": "fallback_cycle", "days": "20.0"} in json.loads(MetricsRun.objects.latest().message)


def test_a_configured_cycle_for_one_time_buyers_wins_over_the_median(thresholds, pipeline):
    thresholds.default_cycle_days = 60
    thresholds.save()
    place_orders(CustomerFactory(), day(0), day(20))
    once = CustomerFactory()
    place_orders(once, day(0))

    compute(day(45), pipeline)  # 45 / 60 = 0.75 cycles

    assert stage_of(once) == "active"


def test_fixed_thresholds_in_days(thresholds, pipeline):
    thresholds.mode = LifecycleSettings.Mode.FIXED
    thresholds.active_days, thresholds.at_risk_days, thresholds.dormant_days = 30, 60, 120
    thresholds.save()
    by_gap = {gap: CustomerFactory() for gap in (30, 31, 60, 61, 120, 121)}
    for gap, customer in by_gap.items():
        place_orders(customer, day(200 - gap - 40), day(200 - gap))

    compute(day(200), pipeline)

    assert {gap: stage_of(c) for gap, c in by_gap.items()} == {
        30: "active",
        31: "at_risk",
        60: "at_risk",
        61: "dormant",
        120: "dormant",
        121: "churned",
    }


def test_prospect_becomes_new_with_a_first_order_then_active(thresholds, pipeline):
    repeat = CustomerFactory()
    place_orders(repeat, day(0), day(30))  # gives the median cycle: 30 days
    customer = CustomerFactory()

    compute(day(40), pipeline)
    assert stage_of(customer) == "prospect"
    assert CustomerMetrics.objects.get(customer=customer).r_score is None

    place_orders(customer, day(41))
    compute(day(41), pipeline)
    assert stage_of(customer) == "new"
    compute(day(41 + 29), pipeline)
    assert stage_of(customer) == "new"  # new for 30 days (29 days since: 0.97 cycles)
    compute(day(41 + 30), pipeline)
    assert stage_of(customer) == "active"  # 30 days since the purchase: 1.0 cycle

    assert stage_events(customer) == [
        ("prospect", "new", day(41).isoformat()),
        ("new", "active", day(71).isoformat()),
    ]


def test_customers_created_after_the_baseline_announce_their_first_stage(thresholds, pipeline):
    place_orders(CustomerFactory(), day(0), day(30))
    compute(day(40), pipeline)  # baseline

    newcomer = CustomerFactory()
    place_orders(newcomer, day(45))
    lurker = CustomerFactory()  # no orders: a prospect, as a customer without metrics already counts
    compute(day(46), pipeline)

    assert stage_events(newcomer) == [("prospect", "new", day(46).isoformat())]
    assert stage_events(lurker) == []


def test_the_first_computation_is_a_baseline_without_events(thresholds, pipeline):
    for n in range(5):
        place_orders(CustomerFactory(), day(n))

    run = compute(day(200), pipeline)

    assert CustomerMetrics.objects.filter(lifecycle_stage="churned").count() == 5
    assert stage_events() == []
    assert run.stage_changes == 0
    assert "baseline" in run.message


def test_recomputing_the_same_day_announces_nothing_twice(thresholds, pipeline):
    customer = CustomerFactory()
    place_orders(customer, day(0), day(30))
    compute(day(40), pipeline)
    compute(day(90), pipeline)
    compute(day(90), pipeline)

    assert stage_events(customer) == [("active", "at_risk", day(90).isoformat())]
    assert MetricsRun.objects.filter(status="done").count() == 3


def test_a_recomputation_for_an_earlier_date_rewrites_metrics_without_events(thresholds, pipeline):
    customer = CustomerFactory()
    place_orders(customer, day(0), day(30))
    compute(day(200), pipeline)  # churned (baseline)
    compute(day(40), pipeline)  # back in time: active

    assert stage_of(customer) == "active"
    assert CustomerMetrics.objects.get(customer=customer).as_of == day(40)
    assert stage_events() == []


def test_erased_customers_get_metrics_but_no_stage_events(thresholds, pipeline):
    erased = CustomerFactory()
    place_orders(erased, day(0), day(30))
    compute(day(40), pipeline)
    erased.erased_at = timezone.now()
    erased.save()

    compute(day(200), pipeline)

    assert stage_of(erased) == "churned"
    assert stage_events() == []


def test_only_orders_up_to_as_of_count(thresholds, pipeline):
    customer = CustomerFactory()
    place_orders(customer, day(0), day(30), day(50))

    compute(day(49), pipeline)

    metrics = CustomerMetrics.objects.get(customer=customer)
    assert (metrics.order_count, metrics.last_order_date, metrics.days_since_last_order) == (2, day(30), 19)


def test_refunded_orders_do_not_count_but_free_ones_do(thresholds, pipeline):
    customer = CustomerFactory()
    orders = place_orders(customer, day(0), (day(10), "0.00"), day(20), day(30))
    refunded = orders[3]
    refunded.refunded_amount = refunded.total
    refunded.status = "refunded"
    refunded.save()
    partly = orders[2]
    partly.refunded_amount = Decimal("40.00")
    partly.status = "partially_refunded"
    partly.save()

    compute(day(40), pipeline)

    metrics = CustomerMetrics.objects.get(customer=customer)
    assert metrics.order_count == 3
    assert metrics.last_order_date == day(20)
    assert metrics.total_value == Decimal("160.00")
    assert metrics.frequency == 2


def test_stage_change_events_carry_from_to_and_as_of_for_journeys(thresholds, pipeline):
    customer = CustomerFactory()
    place_orders(customer, day(0), day(30))
    compute(day(40), pipeline)

    now = timezone.now()
    run = metrics_compute(as_of=day(90), now=now, pipeline=pipeline)

    event = Event.objects.get(type="lifecycle_stage_changed", customer=customer)
    assert event.properties == {"from": "active", "to": "at_risk", "as_of": day(90).isoformat()}
    # It happened at the end of the as-of day in the business time zone, the instant up to which orders
    # were counted (for Asia/Shanghai, 16:00 UTC on the 5th).
    assert event.occurred_at == datetime(2026, 4, 6, tzinfo=business_time_zone())
    assert event.received_at == now
    assert run.stage_changes == 1


def test_invalid_thresholds_are_refused_by_the_settings_form(thresholds):
    from django.core.exceptions import ValidationError

    thresholds.at_risk_cycles = Decimal("1.0")  # not above active (1.5)
    with pytest.raises(ValidationError) as raised:
        thresholds.full_clean()
    assert "at_risk_cycles" in raised.value.message_dict


def test_settings_are_a_single_row():
    first = LifecycleSettings.load()
    again = LifecycleSettings(new_days=10)
    again.save()

    assert LifecycleSettings.objects.count() == 1
    assert first.pk == again.pk == 1
    assert LifecycleSettings.load().new_days == 10
