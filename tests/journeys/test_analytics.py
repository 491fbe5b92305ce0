"""A journey's conversion and revenue against its holdout (journeys/analytics.py): counted for both arms
alike (a goal event or order in the window after entering), with campaigns' intervals, and shown in the
designer's header."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone, translation

from campaigns.experiment_statistics import proportion_difference_interval, welch_difference_interval
from journeys.analytics import ATTRIBUTION_DAYS, journey_results, journey_results_display
from journeys.models import Enrollment, EnrollmentState, JourneyVersion
from journeys.services.journeys import journey_create
from tests.factories import CustomerFactory, EventFactory, OrderFactory

pytestmark = pytest.mark.django_db

GRAPH = {
    "schema": 1,
    "nodes": [
        {
            "id": "entry",
            "type": "entry",
            "config": {"trigger": {"kind": "manual"}},
            "position": {"x": 0, "y": 0},
        },
        {"id": "exit", "type": "exit", "config": {}, "position": {"x": 0, "y": 160}},
    ],
    "edges": [{"id": "e1", "source": "entry", "source_handle": "next", "target": "exit"}],
}


def enrol(journey, customers, *, arm, entered_at):
    version = JourneyVersion.objects.get(journey=journey)
    Enrollment.objects.bulk_create(
        Enrollment(
            customer=c,
            journey=journey,
            version=version,
            node_id="exit",
            arm=arm,
            occurrence="1",
            entered_at=entered_at,
            state=EnrollmentState.EXITED if arm == "holdout" else EnrollmentState.COMPLETED,
        )
        for c in customers
    )


# The results read the events and orders from the journey's creation on (no enrollment predates its
# journey): the journeys here are created before the enrollments the tests backdate.
def _created():
    return timezone.now() - timedelta(days=100)


@pytest.fixture
def journey():
    return journey_create(
        now=_created(),
        name="Win-back",
        graph=GRAPH,
        settings={"goal": {"event_type": "order_placed", "filters": []}, "holdout_percent": 10},
    )


def test_conversions_and_revenue_count_only_the_window_after_entering(journey):
    now = timezone.now()
    entered = now - timedelta(days=40)
    treated = CustomerFactory.create_batch(6)
    holdout = CustomerFactory.create_batch(4)
    enrol(journey, treated, arm="treated", entered_at=entered)
    enrol(journey, holdout, arm="holdout", entered_at=entered)
    inside = entered + timedelta(days=3)
    # Treated: three convert (one buys twice), one bought before entering, one after the window.
    for c in treated[:3]:
        EventFactory(customer=c, type="order_placed", occurred_at=inside)
        OrderFactory(customer=c, placed_at=inside, total=Decimal("100.00"))
    OrderFactory(customer=treated[0], placed_at=inside + timedelta(days=1), total=Decimal("50.00"))
    EventFactory(customer=treated[3], type="order_placed", occurred_at=entered - timedelta(hours=1))
    OrderFactory(customer=treated[3], placed_at=entered - timedelta(hours=1), total=Decimal("999.00"))
    late = entered + timedelta(days=ATTRIBUTION_DAYS, minutes=1)
    EventFactory(customer=treated[4], type="order_placed", occurred_at=late)
    OrderFactory(customer=treated[4], placed_at=late, total=Decimal("999.00"))
    # Holdout: one converts, with a partly refunded order; another event type does not count.
    EventFactory(customer=holdout[0], type="order_placed", occurred_at=inside)
    OrderFactory(
        customer=holdout[0], placed_at=inside, total=Decimal("80.00"), refunded_amount=Decimal("20.00")
    )
    EventFactory(customer=holdout[1], type="add_to_cart", occurred_at=inside)

    results = journey_results(journey=journey)

    assert (results.treated.enrolled, results.treated.converted) == (6, 3)
    assert (results.holdout.enrolled, results.holdout.converted) == (4, 1)
    assert results.treated.revenue == Decimal("350.00")
    assert results.treated.revenue_sq == Decimal("150.00") ** 2 + 2 * Decimal("100.00") ** 2
    assert results.holdout.revenue == Decimal("60.00")
    assert results.rate_difference == proportion_difference_interval(3, 6, 1, 4)
    assert results.revenue_difference == welch_difference_interval(
        6, Decimal("350"), Decimal("42500"), 4, Decimal("60"), Decimal("3600")
    )


def test_without_a_goal_an_order_placed_event_is_the_conversion():
    journey = journey_create(name="No goal", graph=GRAPH, settings={"goal": None}, now=_created())
    customer = CustomerFactory()
    entered = timezone.now() - timedelta(days=2)
    enrol(journey, [customer], arm="treated", entered_at=entered)
    EventFactory(customer=customer, type="order_placed", occurred_at=entered + timedelta(hours=1))
    results = journey_results(journey=journey)
    assert results.goal_event == "order_placed" and results.treated.converted == 1
    assert results.rate_difference is None  # no holdout to compare with


def test_the_header_words_the_figures_and_says_what_is_counted(journey):
    entered = timezone.now() - timedelta(days=5)
    treated = CustomerFactory.create_batch(30)
    holdout = CustomerFactory.create_batch(30)
    enrol(journey, treated, arm="treated", entered_at=entered)
    enrol(journey, holdout, arm="holdout", entered_at=entered)
    for c in treated[:15]:
        EventFactory(customer=c, type="order_placed", occurred_at=entered + timedelta(days=1))
        OrderFactory(customer=c, placed_at=entered + timedelta(days=1), total=Decimal("200.00"))
    with translation.override("en"):
        shown = journey_results_display(journey=journey)
    figures = {f["key"]: f for f in shown["figures"]}
    assert figures["converted"]["value"] == "15"
    assert figures["converted"]["detail"] == "of 30 who entered (50.0%)"
    assert figures["conversion"]["value"] == "+50.0 pts"
    # 15 of 30 against 0 of 30: the interval leaves out zero, and says so.
    assert figures["conversion"]["direction"] == "up"
    assert "95% interval +" in figures["conversion"]["detail"]
    assert figures["revenue"]["value"] == "+¥100"
    assert "order_placed" in shown["counted"] and str(ATTRIBUTION_DAYS) in shown["counted"]
    with translation.override("zh-hans"):
        chinese = journey_results_display(journey=journey)
    assert chinese["figures"][1]["label"] == "相对对照组的转化率"


def test_a_holdout_no_one_is_in_yet_is_said_as_such(journey):
    with translation.override("en"):
        figures = journey_results_display(journey=journey)["figures"]
    assert figures[1]["detail"] == "no customer in the holdout yet"


def test_without_a_holdout_the_header_says_how_to_get_one():
    journey = journey_create(name="No holdout", graph=GRAPH, now=_created())
    enrol(journey, CustomerFactory.create_batch(2), arm="treated", entered_at=timezone.now())
    with translation.override("en"):
        figures = journey_results_display(journey=journey)["figures"]
    assert [f["key"] for f in figures] == ["converted", "conversion"]
    assert figures[1]["value"] == "—" and "holdout percentage" in figures[1]["detail"]


def test_the_designer_reads_the_results_from_their_own_endpoint(admin_client, journey):
    enrol(journey, CustomerFactory.create_batch(2), arm="holdout", entered_at=timezone.now())
    page = admin_client.get(reverse("admin:journeys_journey_designer", args=(journey.pk,)))
    url = reverse("admin:journeys_journey_designer_results", args=(journey.pk,))
    assert page.context["boot"]["urls"]["results"] == url
    answer = admin_client.get(url)
    assert answer.status_code == 200
    assert [f["key"] for f in answer.json()["results"]["figures"]] == ["converted", "conversion", "revenue"]
    assert admin_client.post(url).status_code == 405
    missing = reverse("admin:journeys_journey_designer_results", args=(journey.pk + 99,))
    assert admin_client.get(missing).status_code == 404
