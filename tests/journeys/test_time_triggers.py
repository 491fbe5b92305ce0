"""Time-based entry triggers (journeys/services/time_triggers.py): birthdays and anniversaries in each
customer's zone, N days after a date, calendar dates, segments newly matched, a fixed instant; once per
occurrence however often the dispatcher runs; caught up within the window, stale occurrences skipped.

Every pass is given its instant (the services take `now`, DESIGN.md §5) and every instant is written
out, so nothing depends on the clock or on how fast the machine is. (time_machine is not in the
virtualenv; nothing here reads the wall clock, so it is not needed.)"""

from __future__ import annotations

import threading
from datetime import UTC, date, datetime, timedelta

import pytest
from django.db import connection
from django.test import override_settings

from campaigns.models import CalendarDate
from crm.models import Customer, Segment
from journeys.models import Enrollment, EnrollmentState, TimeTriggerState
from journeys.services.time_triggers import anniversary_dates, time_triggers_dispatch
from tests.factories import CustomerFactory, OrderFactory
from tests.journeys.engine_helpers import published, run
from tests.journeys.graphs import chain, entry, node

pytestmark = pytest.mark.django_db

ALWAYS = {"re_entry": {"mode": "always"}}


def pass_at(moment: datetime):
    """One dispatcher pass at `moment`."""
    return time_triggers_dispatch(now=moment)


def journey(trigger: dict, *, at: datetime, settings=ALWAYS):
    return published(chain(entry(**trigger), node("x", "exit")), settings=settings, now=at)


def birthday_journey(at: datetime, local_time="09:00"):
    return journey({"kind": "date_attribute", "attribute": "birthday", "local_time": local_time}, at=at)


def entries(version) -> list[tuple[int, str, datetime]]:
    return list(
        Enrollment.objects.filter(journey_id=version.journey_id)
        .order_by("entered_at", "customer_id")
        .values_list("customer_id", "occurrence", "entered_at")
    )


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


# --- Birthdays and anniversaries ---------------------------------------------------------------------


def test_a_birthday_enters_once_a_year_at_the_local_time_of_each_customers_own_zone():
    shanghai = CustomerFactory(birthday=date(1990, 6, 15), time_zone="Asia/Shanghai")
    new_york = CustomerFactory(birthday=date(1985, 6, 15), time_zone="America/New_York")
    CustomerFactory(birthday=date(1990, 6, 16), time_zone="Asia/Shanghai")  # not today
    version = birthday_journey(utc(2027, 6, 1))

    pass_at(utc(2027, 6, 15, 0, 59))  # 08:59 in Shanghai
    assert entries(version) == []
    pass_at(utc(2027, 6, 15, 1, 0))  # 09:00 in Shanghai; still the 14th in New York
    assert entries(version) == [(shanghai.pk, "2027", utc(2027, 6, 15, 1, 0))]
    pass_at(utc(2027, 6, 15, 12, 59))
    pass_at(utc(2027, 6, 15, 13, 0))  # 09:00 EDT
    assert entries(version)[1:] == [(new_york.pk, "2027", utc(2027, 6, 15, 13, 0))]
    for minutes in range(1, 4):  # the dispatcher keeps running all day
        pass_at(utc(2027, 6, 15, 13, 0) + timedelta(minutes=minutes))
    assert len(entries(version)) == 2

    run(utc(2027, 6, 15, 13, 5))  # the engine takes them through the journey
    assert set(Enrollment.objects.values_list("state", flat=True)) == {EnrollmentState.COMPLETED}
    pass_at(utc(2028, 6, 15, 1, 0))  # next year, again
    assert [(c, o) for c, o, _at in entries(version)][2:] == [(shanghai.pk, "2028")]


def test_across_the_spring_dst_change_the_birthday_still_comes_at_nine_new_york_time():
    # The United States moved to summer time on Sunday 14 March 2027: 09:00 is 14:00 UTC before it and
    # 13:00 UTC after it.
    before = CustomerFactory(birthday=date(1980, 3, 13), time_zone="America/New_York")
    after = CustomerFactory(birthday=date(1980, 3, 15), time_zone="America/New_York")
    version = birthday_journey(utc(2027, 3, 1))

    pass_at(utc(2027, 3, 13, 13, 59))
    assert entries(version) == []
    pass_at(utc(2027, 3, 13, 14, 0))
    pass_at(utc(2027, 3, 15, 12, 59))
    assert entries(version) == [(before.pk, "2027", utc(2027, 3, 13, 14, 0))]
    pass_at(utc(2027, 3, 15, 13, 0))
    assert entries(version)[1:] == [(after.pk, "2027", utc(2027, 3, 15, 13, 0))]


def test_a_29_february_birthday_is_celebrated_on_28_february_in_other_years_and_on_the_day_in_leap_years():
    leapling = CustomerFactory(birthday=date(2000, 2, 29), time_zone="Asia/Shanghai")
    version = birthday_journey(utc(2027, 2, 1))

    pass_at(utc(2027, 2, 28, 1, 0))  # 2027 has no 29 February
    assert entries(version) == [(leapling.pk, "2027", utc(2027, 2, 28, 1, 0))]
    pass_at(utc(2027, 3, 1, 1, 0))
    assert len(entries(version)) == 1
    run(utc(2027, 3, 1, 2, 0))  # through the journey: "always" lets a customer in once they are out

    pass_at(utc(2028, 2, 28, 1, 0))  # 2028 has one: not on the 28th ...
    assert len(entries(version)) == 1
    pass_at(utc(2028, 2, 29, 1, 0))  # ... but on the day
    assert entries(version)[1:] == [(leapling.pk, "2028", utc(2028, 2, 29, 1, 0))]
    assert anniversary_dates(date(2027, 2, 28)) == [(2, 28), (2, 29)]
    assert anniversary_dates(date(2028, 2, 28)) == [(2, 28)]


def test_a_sign_up_anniversary_comes_every_year_but_not_on_the_sign_up_day_itself():
    # Signed up at 23:30 UTC on 9 May 2026: already 10 May in Shanghai, the day that counts.
    customer = CustomerFactory(time_zone="Asia/Shanghai", created_at=utc(2026, 5, 9, 23, 30))
    version = journey(
        {"kind": "date_attribute", "attribute": "signed_up_at", "local_time": "10:00"}, at=utc(2026, 5, 1)
    )
    pass_at(utc(2026, 5, 10, 2, 0))
    assert entries(version) == []
    pass_at(utc(2027, 5, 10, 2, 0))
    assert entries(version) == [(customer.pk, "2027", utc(2027, 5, 10, 2, 0))]


# --- Once per occurrence, catch-up ---------------------------------------------------------------------


def test_the_dispatcher_run_again_enters_nobody_twice():
    customers = [CustomerFactory(birthday=date(1990, 6, 15), time_zone="Asia/Shanghai") for _ in range(3)]
    version = birthday_journey(utc(2027, 6, 1))
    moment = utc(2027, 6, 15, 1, 30)
    pass_at(moment)
    pass_at(moment)
    # Even with the dispatcher's memory gone (the state row deleted), the occurrence key holds.
    TimeTriggerState.objects.all().delete()
    pass_at(moment + timedelta(minutes=1))
    assert sorted(c for c, o, _at in entries(version)) == sorted(c.pk for c in customers)


@pytest.mark.django_db(transaction=True)
def test_two_dispatchers_at_the_same_moment_enter_each_customer_once():
    for _ in range(20):
        CustomerFactory(birthday=date(1990, 6, 15), time_zone="Asia/Shanghai")
    version = birthday_journey(utc(2027, 6, 1))
    barrier = threading.Barrier(2)
    errors = []

    def dispatcher():
        try:
            barrier.wait()
            pass_at(utc(2027, 6, 15, 1, 30))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=dispatcher) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert Enrollment.objects.filter(journey_id=version.journey_id).count() == 20
    assert (
        Enrollment.objects.filter(journey_id=version.journey_id).values("customer").distinct().count() == 20
    )


def test_a_dispatcher_down_for_an_hour_catches_up_the_birthdays_it_missed():
    customer = CustomerFactory(birthday=date(1990, 6, 15), time_zone="Asia/Shanghai")
    version = birthday_journey(utc(2027, 6, 1))
    pass_at(utc(2027, 6, 15, 0, 30))  # the last pass before the outage
    pass_at(utc(2027, 6, 15, 2, 0))  # back an hour after 09:00 Shanghai
    assert entries(version) == [(customer.pk, "2027", utc(2027, 6, 15, 2, 0))]


@override_settings(JOURNEYS_CATCH_UP_SECONDS=6 * 3600)
def test_a_dispatcher_down_for_two_days_skips_the_stale_birthdays_and_enters_todays():
    day_one = CustomerFactory(birthday=date(1990, 6, 15), time_zone="Asia/Shanghai")
    day_two = CustomerFactory(birthday=date(1990, 6, 16), time_zone="Asia/Shanghai")
    today = CustomerFactory(birthday=date(1990, 6, 17), time_zone="Asia/Shanghai")
    version = birthday_journey(utc(2027, 6, 1))
    pass_at(utc(2027, 6, 15, 0, 30))
    pass_at(utc(2027, 6, 17, 3, 0))  # two days later, two hours after today's 09:00
    assert [c for c, o, _at in entries(version)] == [today.pk]
    assert not Enrollment.objects.filter(customer__in=[day_one, day_two]).exists()


@override_settings(JOURNEYS_CATCH_UP_SECONDS=3600)
def test_the_catch_up_window_is_a_setting():
    CustomerFactory(birthday=date(1990, 6, 15), time_zone="Asia/Shanghai")
    version = birthday_journey(utc(2027, 6, 1))
    pass_at(utc(2027, 6, 15, 0, 30))
    pass_at(utc(2027, 6, 15, 2, 1))  # 61 minutes after 09:00 local: past a one-hour window
    assert entries(version) == []


def test_a_journey_published_after_the_moment_does_not_enter_that_days_birthdays():
    CustomerFactory(birthday=date(1990, 6, 15), time_zone="Asia/Shanghai")
    version = birthday_journey(utc(2027, 6, 15, 1, 30))  # published at 09:30 local
    pass_at(utc(2027, 6, 15, 1, 31))
    assert entries(version) == []


# --- N days after ---------------------------------------------------------------------------------------


def test_the_six_month_revisit_enters_180_days_after_the_first_order_at_the_local_time():
    first = CustomerFactory(time_zone="Asia/Shanghai")
    # 10 January 2027 in Shanghai (02:00 UTC), then a second order: only the first counts.
    OrderFactory(customer=first, placed_at=utc(2027, 1, 10, 2, 0))
    OrderFactory(customer=first, placed_at=utc(2027, 2, 1, 2, 0))
    earlier = CustomerFactory(time_zone="Asia/Shanghai")  # first ordered a day before
    OrderFactory(customer=earlier, placed_at=utc(2027, 1, 9, 2, 0))
    OrderFactory(customer=earlier, placed_at=utc(2027, 1, 10, 3, 0))
    # 16:30 UTC on 9 January is already the 10th in Shanghai: counted in the customer's own day.
    late_evening = CustomerFactory(time_zone="Asia/Shanghai")
    OrderFactory(customer=late_evening, placed_at=utc(2027, 1, 9, 16, 30))
    version = journey(
        {"kind": "days_after", "attribute": "first_order_at", "days": 180, "local_time": "09:00"},
        at=utc(2027, 1, 1),
    )
    due = date(2027, 1, 10) + timedelta(days=180)
    assert due == date(2027, 7, 9)
    pass_at(utc(2027, 7, 9, 0, 59))
    assert entries(version) == []
    pass_at(utc(2027, 7, 9, 1, 0))
    assert sorted((c, o) for c, o, _at in entries(version)) == sorted(
        [(first.pk, "2027-07-09"), (late_evening.pk, "2027-07-09")]
    )
    pass_at(utc(2027, 7, 10, 1, 0))
    assert len(entries(version)) == 2


def test_days_after_an_event_counts_from_the_first_such_event():
    from crm.services.event_log import NewEvent, events_append

    customer = CustomerFactory(time_zone="Asia/Shanghai")
    again = CustomerFactory(time_zone="Asia/Shanghai")
    events_append(
        events=[
            NewEvent(type="signup", customer_id=customer.pk, occurred_at=utc(2027, 3, 1, 4, 0)),
            NewEvent(type="signup", customer_id=again.pk, occurred_at=utc(2027, 2, 1, 4, 0)),
            NewEvent(type="signup", customer_id=again.pk, occurred_at=utc(2027, 3, 1, 5, 0)),
        ],
        now=utc(2027, 3, 1, 6, 0),
    )
    version = journey(
        {"kind": "days_after", "event_type": "signup", "days": 7, "local_time": "20:00"}, at=utc(2027, 2, 1)
    )
    pass_at(utc(2027, 3, 8, 12, 0))  # 20:00 on 8 March in Shanghai
    assert entries(version) == [(customer.pk, "2027-03-08", utc(2027, 3, 8, 12, 0))]


# --- Calendar dates -------------------------------------------------------------------------------------


def test_three_days_before_double_11_at_eight_in_the_evening_in_each_customers_zone():
    CalendarDate.objects.create(
        code="double11",
        year=2027,
        date=date(2027, 11, 11),
        name_zh="双十一",
        name_en="Double 11",
        kind="shopping",
    )
    shanghai = CustomerFactory(time_zone="Asia/Shanghai")
    new_york = CustomerFactory(time_zone="America/New_York")
    version = journey(
        {"kind": "calendar", "code": "double11", "offset_days": -3, "local_time": "20:00"},
        at=utc(2027, 11, 1),
    )
    pass_at(utc(2027, 11, 8, 11, 59))
    assert entries(version) == []
    pass_at(utc(2027, 11, 8, 12, 0))  # 20:00 on 8 November in Shanghai
    assert entries(version) == [(shanghai.pk, "2027-11-11", utc(2027, 11, 8, 12, 0))]
    pass_at(utc(2027, 11, 9, 1, 0))  # 20:00 EST (summer time ended on 7 November)
    assert entries(version)[1:] == [(new_york.pk, "2027-11-11", utc(2027, 11, 9, 1, 0))]
    pass_at(utc(2027, 11, 11, 12, 0))  # the day itself is not the trigger's
    assert len(entries(version)) == 2


# --- Segments -------------------------------------------------------------------------------------------


def test_a_segment_trigger_enters_only_the_customers_who_newly_match():
    rule = {"op": "and", "conditions": [{"field": "profile.city", "operator": "eq", "value": "上海"}]}
    segment = Segment.objects.create(name="Shanghai", rule=rule)
    already = CustomerFactory(city="上海")
    mover = CustomerFactory(city="北京")
    version = journey(
        {"kind": "segment", "segment": segment.pk, "every": {"value": 1, "unit": "hours"}}, at=utc(2027, 1, 1)
    )
    pass_at(utc(2027, 1, 1, 0, 1))  # the first evaluation records who matches already
    assert entries(version) == []

    Customer.objects.filter(pk=mover.pk).update(city="上海")
    pass_at(utc(2027, 1, 1, 0, 30))  # not yet an hour since the last evaluation
    assert entries(version) == []
    pass_at(utc(2027, 1, 1, 1, 1))
    assert [c for c, o, _at in entries(version)] == [mover.pk]
    pass_at(utc(2027, 1, 1, 2, 1))  # still matching: not new
    assert len(entries(version)) == 1

    Customer.objects.filter(pk=already.pk).update(city="杭州")  # leaves ...
    pass_at(utc(2027, 1, 1, 3, 1))
    Customer.objects.filter(pk=already.pk).update(city="上海")  # ... and comes back: newly matching
    pass_at(utc(2027, 1, 1, 4, 1))
    assert [c for c, o, _at in entries(version)] == [mover.pk, already.pk]


# --- A fixed instant --------------------------------------------------------------------------------


def test_a_fixed_instant_enters_every_live_customer_once():
    customers = [CustomerFactory() for _ in range(3)]
    CustomerFactory(erased_at=utc(2026, 12, 1))
    version = journey({"kind": "at", "at": "2027-01-28T09:00+08:00"}, at=utc(2027, 1, 1))
    pass_at(utc(2027, 1, 28, 0, 59))
    assert entries(version) == []
    pass_at(utc(2027, 1, 28, 1, 0))
    pass_at(utc(2027, 1, 28, 1, 1))
    assert sorted(c for c, o, _at in entries(version)) == sorted(c.pk for c in customers)
    assert {o for c, o, _at in entries(version)} == {"at:2027-01-28T09:00:00+08:00"}


def test_a_fixed_instant_long_past_when_the_dispatcher_comes_back_is_skipped():
    CustomerFactory()
    version = journey({"kind": "at", "at": "2027-01-28T09:00+08:00"}, at=utc(2027, 1, 1))
    pass_at(utc(2027, 1, 27))
    pass_at(utc(2027, 1, 30))
    assert entries(version) == []


# --- Set-based: the queries of a pass do not grow with the customers ----------------------------------


def _queries_of_a_birthday_pass(customers: int, day: date) -> int:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from journeys.models import Journey

    Journey.objects.update(status="paused")  # the previous measurement's journey is not counted
    for _ in range(customers):
        CustomerFactory(birthday=date(1990, day.month, day.day), time_zone="Asia/Shanghai")
    CustomerFactory(birthday=date(1990, day.month, day.day), time_zone="America/New_York")
    version = birthday_journey(utc(day.year, day.month, 1))
    with CaptureQueriesContext(connection) as queries:
        # Both zones' 09:00 in one pass (a dispatcher back from a 13-hour outage with a long window).
        with override_settings(JOURNEYS_CATCH_UP_SECONDS=86400):
            pass_at(utc(day.year, day.month, day.day, 13, 30))
    assert len(entries(version)) == customers + 1
    return len(queries)


def test_a_pass_makes_as_many_queries_for_fifty_birthdays_as_for_two():
    few = _queries_of_a_birthday_pass(2, date(2027, 6, 15))
    many = _queries_of_a_birthday_pass(50, date(2027, 7, 15))
    assert many == few
