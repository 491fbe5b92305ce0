"""What the journeys read from the crm event log through its cursor: wait-for-event wakes, goal exits,
event entries; and the re-entry rules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from campaigns.models import Message
from crm.services.event_log import NewEvent, events_append
from journeys.models import Enrollment, EnrollmentState
from journeys.services.enrollments import enrollments_enter
from tests.campaigns.helpers import template_make
from tests.factories import CustomerFactory
from tests.journeys.engine_helpers import enter, one, published, run, trail
from tests.journeys.graphs import chain, edge, entry, graph, node

pytestmark = pytest.mark.django_db

T0 = datetime(2027, 3, 10, 2, 0, tzinfo=UTC)


def log(event_type, customer, at, **properties):
    events_append(
        events=[NewEvent(type=event_type, customer_id=customer.pk, occurred_at=at, properties=properties)],
        now=at,
    )


def wait_for_order(**config):
    return graph(
        [
            entry(),
            node(
                "wfe",
                "wait_for_event",
                event_type="order_placed",
                timeout={"value": 2, "unit": "hours"},
                **config,
            ),
            node("bought", "exit"),
            node("timed_out", "exit"),
        ],
        [edge("entry", "wfe"), edge("wfe", "bought", "event"), edge("wfe", "timed_out", "timeout")],
    )


def test_wait_for_event_takes_the_event_exit_when_the_event_comes_and_the_timeout_otherwise():
    buyer, idler = CustomerFactory(), CustomerFactory()
    version = published(wait_for_order(), now=T0)
    enter(version, [buyer, idler], now=T0)
    run(T0)
    log("order_placed", buyer, T0 + timedelta(minutes=30), total="99.00")
    run(T0 + timedelta(minutes=31))
    ends = {e.customer_id: e for e in Enrollment.objects.all()}
    assert (ends[buyer.pk].state, ends[buyer.pk].node_id) == (EnrollmentState.COMPLETED, "bought")
    assert trail(ends[buyer.pk])[1] == ("wfe", "passed", "event")
    assert ends[idler.pk].state == EnrollmentState.WAITING
    run(T0 + timedelta(hours=2))
    idler_e = Enrollment.objects.get(customer=idler)
    assert (idler_e.node_id, trail(idler_e)[1]) == ("timed_out", ("wfe", "passed", "timeout"))


def test_wait_for_event_ignores_events_that_do_not_pass_its_filters_or_came_before_the_wait():
    customer = CustomerFactory()
    log("order_placed", customer, T0 - timedelta(minutes=5), channel="wechat_mp")  # before the wait began
    version = published(
        wait_for_order(filters=[{"property": "channel", "op": "eq", "value": "wechat_mp"}]), now=T0
    )
    enter(version, [customer], now=T0)
    run(T0)
    log("order_placed", customer, T0 + timedelta(minutes=1), channel="tmall")
    run(T0 + timedelta(minutes=2))
    assert one(version).state == EnrollmentState.WAITING
    log("order_placed", customer, T0 + timedelta(minutes=3), channel="wechat_mp")
    run(T0 + timedelta(minutes=4))
    assert one(version).node_id == "bought"


def test_the_goal_event_exits_the_customer_as_a_conversion_and_nothing_more_is_sent():
    template_make(code="nudge", channel="email")
    g = chain(
        entry(),
        node("w", "wait", mode="duration", duration={"value": 1, "unit": "days"}),
        node("s", "send_message", channel="email", template="nudge"),
        node("x", "exit"),
    )
    version = published(g, settings={"goal": {"event_type": "order_placed"}}, now=T0)
    converted, other = CustomerFactory(), CustomerFactory()
    enter(version, [converted, other], now=T0)
    run(T0)
    log("order_placed", converted, T0 + timedelta(hours=3))
    run(T0 + timedelta(hours=3, minutes=1))
    e = Enrollment.objects.get(customer=converted)
    assert (e.state, e.reason, e.due_at) == (EnrollmentState.GOAL, "goal", None)
    assert trail(e)[-1] == ("w", "goal", "")
    run(T0 + timedelta(days=1))
    assert list(Message.objects.values_list("customer_id", flat=True)) == [other.pk]


def test_an_event_entry_enrolls_once_per_event_and_follows_its_filters():
    g = chain(
        entry(
            kind="event", event_type="add_to_cart", filters=[{"property": "sku", "op": "eq", "value": "A1"}]
        ),
        node("x", "exit"),
    )
    version = published(g, settings={"re_entry": {"mode": "always"}}, now=T0)
    customer = CustomerFactory()
    log("add_to_cart", customer, T0, sku="B2")
    log("add_to_cart", customer, T0, sku="A1")
    run(T0 + timedelta(seconds=1))
    [e] = Enrollment.objects.filter(version=version)
    assert e.state == EnrollmentState.COMPLETED and e.occurrence.isdigit()
    run(T0 + timedelta(seconds=2))  # the cursor has moved on: no second enrollment for the same event
    assert Enrollment.objects.filter(version=version).count() == 1
    log("add_to_cart", customer, T0 + timedelta(minutes=5), sku="A1")
    run(T0 + timedelta(minutes=6))
    assert Enrollment.objects.filter(version=version).count() == 2  # "always": a new event, a new visit


def wait_day():
    return chain(
        entry(), node("w", "wait", mode="duration", duration={"value": 1, "unit": "days"}), node("x", "exit")
    )


@pytest.mark.parametrize(
    "re_entry, entered_again",
    [
        ({"mode": "never"}, [False, False]),
        ({"mode": "always"}, [False, True]),  # not while still in it; again once it ended
        ({"mode": "after_days", "days": 7}, [False, False]),  # ended, but entered only 3 days ago
    ],
)
def test_re_entry_rules(re_entry, entered_again):
    version = published(wait_day(), settings={"re_entry": re_entry}, now=T0)
    customer = CustomerFactory()
    enter(version, [customer], occurrence="a", now=T0)
    run(T0)
    # Still in flight (waiting a day):
    first = enter(version, [customer], occurrence="b", now=T0 + timedelta(hours=1))
    run(T0 + timedelta(days=1))  # now it has finished
    second = enter(version, [customer], occurrence="c", now=T0 + timedelta(days=3))
    assert [first.entered == 1, second.entered == 1] == entered_again


def test_after_days_lets_the_customer_in_again_once_the_days_have_passed():
    version = published(wait_day(), settings={"re_entry": {"mode": "after_days", "days": 7}}, now=T0)
    customer = CustomerFactory()
    enter(version, [customer], occurrence="a", now=T0)
    run(T0)
    run(T0 + timedelta(days=1))
    assert one(version).state == EnrollmentState.COMPLETED
    assert enter(version, [customer], occurrence="b", now=T0 + timedelta(days=6)).entered == 0
    assert enter(version, [customer], occurrence="c", now=T0 + timedelta(days=7, seconds=1)).entered == 1


def test_the_same_occurrence_never_enters_twice():
    version = published(wait_day(), settings={"re_entry": {"mode": "always"}}, now=T0)
    customer = CustomerFactory()
    run_at = T0 + timedelta(days=2)
    assert enter(version, [customer], occurrence="2027", now=T0).entered == 1
    run(T0 + timedelta(days=1))
    again = enrollments_enter(version=version, customer_ids=[customer.pk], occurrence="2027", now=run_at)
    assert (again.entered, again.skipped) == (0, 1)


def test_a_paused_journey_holds_its_customers_until_resumed():
    from journeys.services.journeys import journey_pause, journey_resume

    version = published(chain(entry(), node("x", "exit")), now=T0)
    enter(version, [CustomerFactory()], now=T0)
    journey_pause(journey=version.journey)
    run(T0)
    assert one(version).state == EnrollmentState.ACTIVE
    journey_resume(journey=version.journey)
    run(T0)
    assert one(version).state == EnrollmentState.COMPLETED


def test_events_from_before_the_journey_was_published_do_not_enter_anyone():
    customer = CustomerFactory()
    log("add_to_cart", customer, T0 - timedelta(days=30), sku="A1")
    version = published(chain(entry(kind="event", event_type="add_to_cart"), node("x", "exit")), now=T0)
    run(T0 + timedelta(seconds=1))
    assert not Enrollment.objects.filter(version=version).exists()
