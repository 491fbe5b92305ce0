"""Each node type, run by the engine over real rows: what the step records, where the enrollment goes,
and the side effect written once whatever the number of runs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from campaigns.models import Message
from crm.models import Customer, CustomerTag, Tag
from journeys.models import Arm, Enrollment, EnrollmentState, EnrollmentStep
from journeys.services.enrollments import in_holdout
from journeys.services.nodes_run import next_local_time
from loyalty.models import Coupon, CouponProgramme, LedgerEntry
from tests.campaigns.helpers import template_make
from tests.factories import CustomerFactory
from tests.journeys.engine_helpers import enter, one, published, run, trail
from tests.journeys.graphs import chain, edge, entry, graph, node

pytestmark = pytest.mark.django_db

T0 = datetime(2027, 3, 10, 2, 0, tzinfo=UTC)


def wait(hours, node_id="w"):
    return node(node_id, "wait", mode="duration", duration={"value": hours, "unit": "hours"})


def test_a_duration_wait_holds_the_enrollment_until_it_is_due():
    version = published(chain(entry(), wait(2), node("x", "exit")), now=T0)
    enter(version, [CustomerFactory()], now=T0)
    run(T0)
    e = one(version)
    assert (e.node_id, e.state, e.due_at) == ("w", EnrollmentState.WAITING, T0 + timedelta(hours=2))
    run(T0 + timedelta(hours=1, minutes=59))
    assert one(version).state == EnrollmentState.WAITING
    run(T0 + timedelta(hours=2))
    e = one(version)
    assert (e.state, e.node_id, e.due_at) == (EnrollmentState.COMPLETED, "x", None)
    assert trail(e) == [("entry", "passed", "next"), ("w", "passed", "next"), ("x", "exited", "")]


def test_wait_until_a_local_time_is_in_the_customers_own_zone():
    # 02:00 UTC is 10:00 in Shanghai and 21:00 (the day before) in New York.
    shanghai = CustomerFactory(time_zone="Asia/Shanghai")
    new_york = CustomerFactory(time_zone="America/New_York")
    version = published(
        chain(entry(), node("w", "wait", mode="until", local_time="09:00"), node("x", "exit")), now=T0
    )
    enter(version, [shanghai, new_york], now=T0)
    run(T0)
    due = dict(Enrollment.objects.values_list("customer_id", "due_at"))
    assert due[shanghai.pk] == datetime(2027, 3, 11, 1, 0, tzinfo=UTC)  # tomorrow 09:00 +08:00
    assert due[new_york.pk] == datetime(2027, 3, 10, 14, 0, tzinfo=UTC)  # today 09:00 -05:00 (EST)


def test_local_time_across_the_spring_dst_change():
    # New York moves to EDT on 14 March 2027: 09:00 that day is 13:00 UTC, the day before 14:00 UTC.
    before = datetime(2027, 3, 13, 15, 0, tzinfo=UTC)
    assert next_local_time(before, "America/New_York", 9, 0) == datetime(2027, 3, 14, 13, 0, tzinfo=UTC)
    # 02:30 does not exist that day: it is taken as 03:30 EDT (07:30 UTC), never skipped to the next day.
    assert next_local_time(before, "America/New_York", 2, 30) == datetime(2027, 3, 14, 7, 30, tzinfo=UTC)
    # Weekdays: from a Saturday, "Mondays at 09:00" is two days on.
    assert next_local_time(before, "Asia/Shanghai", 9, 0, [0]) == datetime(2027, 3, 15, 1, 0, tzinfo=UTC)


def test_condition_splits_by_a_segment_rule_in_one_query(django_assert_max_num_queries):
    shanghai = [CustomerFactory(city="上海") for _ in range(3)]
    others = [CustomerFactory(city="北京") for _ in range(2)]
    rule = {"op": "and", "conditions": [{"field": "profile.city", "operator": "eq", "value": "上海"}]}
    g = graph(
        [entry(), node("c", "condition", rule=rule), node("yes", "exit"), node("no", "exit")],
        [edge("entry", "c"), edge("c", "yes", "yes"), edge("c", "no", "no")],
    )
    version = published(g, now=T0)
    enter(version, shanghai + others, now=T0)
    with django_assert_max_num_queries(20):  # whatever the number of customers
        run(T0, events=False)
    ends = dict(Enrollment.objects.values_list("customer_id", "node_id"))
    assert {ends[c.pk] for c in shanghai} == {"yes"} and {ends[c.pk] for c in others} == {"no"}


def test_random_split_is_deterministic_per_enrollment_and_roughly_proportional():
    g = graph(
        [
            entry(),
            node("r", "random_split", branches=[{"id": "a", "percent": 30}, {"id": "b", "percent": 70}]),
            node("xa", "exit"),
            node("xb", "exit"),
        ],
        [edge("entry", "r"), edge("r", "xa", "a"), edge("r", "xb", "b")],
    )
    version = published(g, now=T0)
    customers = Customer.objects.bulk_create([CustomerFactory.build() for _ in range(400)])
    enter(version, customers, now=T0)
    run(T0, events=False)
    handles = dict(EnrollmentStep.objects.filter(node_id="r").values_list("enrollment_id", "handle"))
    share_a = sum(1 for h in handles.values() if h == "a") / len(handles)
    assert 0.2 < share_a < 0.4
    from journeys.services.nodes_run import _hash_percent

    assert all((h == "a") == (_hash_percent(pk, "r") < 30) for pk, h in handles.items())


def test_send_message_is_one_outbox_row_per_enrollment_with_the_step_key():
    template_make(code="welcome", channel="email")
    version = published(
        chain(entry(), node("s", "send_message", channel="email", template="welcome"), node("x", "exit")),
        now=T0,
    )
    customers = [CustomerFactory() for _ in range(3)]
    enter(version, customers, now=T0)
    run(T0)
    run(T0 + timedelta(minutes=1))
    messages = list(Message.objects.values_list("customer_id", "source_kind", "source_ref", "occurrence"))
    enrollments = dict(Enrollment.objects.values_list("customer_id", "pk"))
    assert sorted(messages) == sorted(
        (c.pk, "journey", f"{version.pk}:s", f"{enrollments[c.pk]}:2") for c in customers
    )


def test_holdout_is_stable_recorded_and_never_sent_anything():
    template_make(code="welcome", channel="email")
    g = chain(entry(), node("s", "send_message", channel="email", template="welcome"), node("x", "exit"))
    version = published(g, settings={"holdout_percent": 50}, now=T0)
    customers = Customer.objects.bulk_create([CustomerFactory.build() for _ in range(200)])
    enter(version, customers, now=T0)
    run(T0)
    arms = dict(Enrollment.objects.values_list("customer_id", "arm"))
    expected = {
        c.pk: Arm.HOLDOUT
        if in_holdout(journey_id=version.journey_id, customer_id=c.pk, percent=50)
        else Arm.TREATED
        for c in customers
    }
    assert arms == expected
    held = {pk for pk, arm in arms.items() if arm == Arm.HOLDOUT}
    assert 60 < len(held) < 140
    assert not Message.objects.filter(customer_id__in=held).exists()
    assert Message.objects.count() == len(customers) - len(held)
    assert set(Enrollment.objects.filter(arm=Arm.HOLDOUT).values_list("state", "reason")) == {
        ("exited", "holdout")
    }
    # The same customers in the same journey land in the same arm the next time (the hash, not chance).
    assert all(in_holdout(journey_id=version.journey_id, customer_id=pk, percent=50) for pk in held)


def test_award_points_once_per_step_through_the_ledger():
    version = published(
        chain(entry(), node("p", "award_points", points=88, reason="Birthday gift"), node("x", "exit")),
        now=T0,
    )
    customer = CustomerFactory()
    enter(version, [customer], now=T0)
    run(T0)
    run(T0)
    e = one(version)
    entries = list(
        LedgerEntry.objects.filter(idempotency_key=f"journey:{e.pk}:p:2").values_list("points", "reason")
    )
    assert entries == [(88, "Birthday gift")]


def test_issue_coupon_gives_each_customer_one_code():
    programme = CouponProgramme.objects.create(name="Win-back", discount_value=20)
    version = published(
        chain(entry(), node("c", "issue_coupon", programme=programme.pk), node("x", "exit")), now=T0
    )
    customers = [CustomerFactory() for _ in range(3)]
    enter(version, customers, now=T0)
    run(T0)
    assert sorted(Coupon.objects.values_list("customer_id", flat=True)) == sorted(c.pk for c in customers)
    coupon_ids = set(EnrollmentStep.objects.filter(node_id="c").values_list("detail__coupon_id", flat=True))
    assert coupon_ids == set(Coupon.objects.values_list("pk", flat=True))


def test_add_and_remove_tag_and_update_attribute():
    Tag.objects.create(name="vip")
    Tag.objects.create(name="lapsed")
    customer = CustomerFactory()
    CustomerTag.objects.create(customer=customer, tag=Tag.objects.get(name="lapsed"))
    g = chain(
        entry(),
        node("a", "add_tag", tag="vip"),
        node("r", "remove_tag", tag="lapsed"),
        node("u", "update_attribute", attribute="preferred_channel", value="wechat"),
        node("x", "exit"),
    )
    version = published(g, now=T0)
    enter(version, [customer], now=T0)
    run(T0)
    assert set(CustomerTag.objects.filter(customer=customer).values_list("tag__name", flat=True)) == {"vip"}
    customer.refresh_from_db()
    assert customer.preferred_channel == "wechat"
    assert [s[0] for s in trail(one(version))] == ["entry", "a", "r", "u", "x"]


def test_exit_completes_and_a_run_with_nothing_due_does_nothing():
    version = published(chain(entry(), node("x", "exit")), now=T0)
    enter(version, [CustomerFactory()], now=T0)
    first = run(T0)
    second = run(T0)
    assert first.totals.steps == 2 and second.batches == 0
    assert one(version).state == EnrollmentState.COMPLETED
