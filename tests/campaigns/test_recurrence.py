"""Recurrence maths (campaigns/recurrence.py): cron, intervals, calendar offsets, "9:00 local" across zones
and DST changes. Pure functions: no database, no clock."""

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from django.utils import translation

from campaigns.recurrence import (
    RecurrenceError,
    calendar_next,
    cron_describe,
    cron_next,
    cron_parse,
    earliest_instant,
    interval_next,
    wall_to_utc,
)

SHANGHAI, LA, LONDON = ZoneInfo("Asia/Shanghai"), ZoneInfo("America/Los_Angeles"), ZoneInfo("Europe/London")


def utc(*args):
    return dt.datetime(*args, tzinfo=dt.UTC)


def test_weekly_cron_in_the_business_zone_is_strictly_after_the_last_occurrence():
    every_monday_10 = cron_parse("0 10 * * 1")
    monday_10_shanghai = dt.datetime(2026, 12, 7, 10, 0, tzinfo=SHANGHAI)
    wall, due = cron_next(
        every_monday_10, after=monday_10_shanghai - dt.timedelta(seconds=1), zones=[SHANGHAI]
    )
    assert (wall, due) == (dt.datetime(2026, 12, 7, 10, 0), monday_10_shanghai)
    _, following = cron_next(every_monday_10, after=monday_10_shanghai, zones=[SHANGHAI])
    assert following == monday_10_shanghai + dt.timedelta(days=7)


def test_first_of_the_month_and_both_day_fields_follow_cron():
    first_at_nine = cron_parse("0 9 1 * *")
    _, due = cron_next(first_at_nine, after=utc(2027, 1, 31, 12), zones=[SHANGHAI])
    assert due == dt.datetime(2027, 2, 1, 9, tzinfo=SHANGHAI)
    # Both restricted: the 1st OR a Monday (cron's rule). 2027-02-01 is a Monday; the next is the 8th.
    either = cron_parse("0 9 1 * 1")
    _, due = cron_next(either, after=dt.datetime(2027, 2, 1, 9, tzinfo=SHANGHAI), zones=[SHANGHAI])
    assert due == dt.datetime(2027, 2, 8, 9, tzinfo=SHANGHAI)


@pytest.mark.parametrize(
    ("expression", "field", "words"),
    [
        ("0 25 * * *", "hour", "hour (0-23)"),
        ("61 * * * *", "minute", "minute (0-59)"),
        ("0 9 * 13 *", "month_of_year", "month (1-12)"),
        ("0 9 * * funday", "day_of_week", "day of week"),
        ("0 9 30 2 *", "day_of_month", "never runs"),
        ("0 9 * *", None, "five fields"),
    ],
)
def test_bad_cron_is_refused_naming_the_field(expression, field, words):
    with translation.override("en"), pytest.raises(RecurrenceError) as caught:
        cron_parse(expression)
    assert caught.value.field == field
    assert words in caught.value.message


def test_cron_errors_and_descriptions_are_in_chinese_when_the_staff_reads_chinese():
    with translation.override("zh-hans"), pytest.raises(RecurrenceError) as caught:
        cron_parse("0 25 * * *")
    assert "小时" in caught.value.message
    assert cron_describe("0 10 * * 1", language="zh-hans") == "在 10:00, 仅在 星期一"
    assert cron_describe("0 10 * * 1", language="en") == "At 10:00, only on Monday"


def test_nine_local_is_due_when_the_earliest_zone_reaches_it_across_a_dst_change():
    daily_nine = cron_parse("0 9 * * *")
    zones = [LA, SHANGHAI, LONDON]
    # The evening of 12 March 2027 in UTC: Shanghai's 9:00 on the 13th comes first (01:00 UTC).
    wall, due = cron_next(daily_nine, after=utc(2027, 3, 12, 18), zones=zones)
    assert wall == dt.datetime(2027, 3, 13, 9)
    assert due == utc(2027, 3, 13, 1)
    # Each zone's own 9:00 on both sides of Los Angeles' change (14 March 2027, PST -8 -> PDT -7).
    assert wall_to_utc(dt.datetime(2027, 3, 13, 9), LA) == utc(2027, 3, 13, 17)
    assert wall_to_utc(dt.datetime(2027, 3, 14, 9), LA) == utc(2027, 3, 14, 16)
    assert wall_to_utc(dt.datetime(2027, 3, 14, 9), LONDON) == utc(2027, 3, 14, 9)  # GMT until the 28th
    assert wall_to_utc(dt.datetime(2027, 3, 29, 9), LONDON) == utc(2027, 3, 29, 8)  # BST
    # With Los Angeles alone, the daily run moves an hour earlier in UTC the day the clocks change.
    dues = []
    after = utc(2027, 3, 12, 0)
    for _ in range(3):
        _, after = cron_next(daily_nine, after=after, zones=[LA])
        dues.append(after)
    assert dues == [utc(2027, 3, 12, 17), utc(2027, 3, 13, 17), utc(2027, 3, 14, 16)]


def test_a_time_in_the_spring_forward_gap_runs_right_after_it_and_a_repeated_hour_runs_once():
    at_0230 = cron_parse("30 2 * * *")
    dues = []
    after = utc(2027, 3, 13, 0)
    for _ in range(2):
        _, after = cron_next(at_0230, after=after, zones=[LA])
        dues.append(after)
    # 13 March 02:30 PST; 14 March 02:30 does not exist: 03:30 PDT = 10:30 UTC.
    assert dues == [utc(2027, 3, 13, 10, 30), utc(2027, 3, 14, 10, 30)]
    at_0130 = cron_parse("30 1 * * *")
    _, first = cron_next(at_0130, after=utc(2027, 11, 7, 0), zones=[LA])  # fall back on 7 November
    _, second = cron_next(at_0130, after=first, zones=[LA])
    assert first == utc(2027, 11, 7, 8, 30)  # the first 01:30 (PDT)
    assert second == utc(2027, 11, 8, 9, 30)  # next day, not the repeated 01:30 an hour later


def test_interval_counts_real_time_from_its_anchor():
    anchor = utc(2027, 1, 1, 2)
    six_hours = dt.timedelta(hours=6)
    assert interval_next(anchor=anchor, interval=six_hours, after=anchor - dt.timedelta(days=3)) == anchor
    assert interval_next(anchor=anchor, interval=six_hours, after=anchor) == anchor + six_hours
    assert interval_next(anchor=anchor, interval=six_hours, after=anchor + dt.timedelta(hours=13)) == (
        anchor + 3 * six_hours
    )
    with pytest.raises(RecurrenceError):
        interval_next(anchor=anchor, interval=dt.timedelta(0), after=anchor)


def test_three_days_before_mid_autumn_at_ten():
    mid_autumns = [dt.date(2026, 9, 25), dt.date(2027, 9, 15)]
    day, wall, due = calendar_next(
        mid_autumns, offset_days=-3, send_time=dt.time(10), after=utc(2026, 9, 22, 2), zones=[SHANGHAI]
    )  # 2026's occurrence (22 Sep 10:00 +08 = 02:00 UTC) is exactly `after`: not again
    assert (day, wall, due) == (dt.date(2027, 9, 15), dt.datetime(2027, 9, 12, 10), utc(2027, 9, 12, 2))
    assert (
        calendar_next(mid_autumns, offset_days=-3, send_time=dt.time(10), after=due, zones=[SHANGHAI]) is None
    )


def test_earliest_instant_needs_a_zone():
    with pytest.raises(ValueError):
        earliest_instant(dt.datetime(2027, 1, 1, 9), [])


def _plan(spec, *, after, now, catch_up=dt.timedelta(hours=2), zones=(SHANGHAI,), dates=()):
    from campaigns.recurrence import occurrences_plan

    return occurrences_plan(
        spec,
        after=after,
        now=now,
        catch_up=catch_up,
        zones=zones,
        business_zone=SHANGHAI,
        calendar_dates=dates,
    )


def test_plan_starts_the_due_occurrence_and_keys_it_on_the_business_clock():
    from campaigns.recurrence import ScheduleSpec

    spec = ScheduleSpec(recurrence_kind="cron", cron="0 10 * * 1")
    monday_10 = dt.datetime(2026, 12, 7, 10, tzinfo=SHANGHAI)
    plan = _plan(spec, after=monday_10 - dt.timedelta(days=1), now=monday_10 + dt.timedelta(seconds=30))
    assert plan.run.key == "2026-12-07T10:00+08:00" and plan.run.due_at == monday_10
    assert plan.missed == () and not plan.finished
    # Before it is due: nothing to do.
    assert (
        _plan(spec, after=monday_10 - dt.timedelta(days=1), now=monday_10 - dt.timedelta(seconds=1)).run
        is None
    )


def test_a_dispatcher_down_for_a_while_catches_up_the_latest_occurrence_once_and_records_the_rest():
    from campaigns.recurrence import ScheduleSpec

    hourly = ScheduleSpec(recurrence_kind="cron", cron="0 * * * *")
    last_run = utc(2027, 1, 4, 0)
    # Down from 00:00 to 03:20 UTC: 01:00, 02:00 and 03:00 were due; only 03:00 goes out.
    plan = _plan(hourly, after=last_run, now=utc(2027, 1, 4, 3, 20), catch_up=dt.timedelta(minutes=30))
    assert plan.run.due_at == utc(2027, 1, 4, 3)
    assert [o.due_at for o in plan.missed] == [utc(2027, 1, 4, 1), utc(2027, 1, 4, 2)]
    # Down past the window: nothing is sent late, everything is recorded as missed.
    plan = _plan(hourly, after=last_run, now=utc(2027, 1, 4, 3, 45), catch_up=dt.timedelta(minutes=30))
    assert plan.run is None and len(plan.missed) == 3
    # Every minute, down for a week: the first hundred are listed, the rest summed up, and it is quick.
    minutely = ScheduleSpec(recurrence_kind="cron", cron="* * * * *")
    plan = _plan(minutely, after=last_run, now=last_run + dt.timedelta(days=7, seconds=30))
    assert plan.more_missed and len(plan.missed) >= 100
    assert plan.run.due_at == last_run + dt.timedelta(days=7)


def test_ends_at_stops_the_occurrences():
    from campaigns.recurrence import ScheduleSpec

    spec = ScheduleSpec(recurrence_kind="cron", cron="0 10 * * *", ends_at=utc(2027, 1, 2, 3))
    plan = _plan(spec, after=utc(2027, 1, 1, 3), now=utc(2027, 1, 5))
    assert plan.finished and plan.run is None
    assert [o.due_at for o in plan.missed] == [utc(2027, 1, 2, 2)]


def test_local_and_calendar_occurrences_carry_their_wall_time_and_key():
    from campaigns.recurrence import ScheduleSpec

    local = ScheduleSpec(recurrence_kind="cron", cron="0 9 * * *", local_time=True)
    plan = _plan(local, after=utc(2027, 3, 12, 18), now=utc(2027, 3, 13, 1), zones=(LA, SHANGHAI))
    assert plan.run.key == "local-2027-03-13T09:00"
    assert (plan.run.local_date, plan.run.local_time) == (dt.date(2027, 3, 13), dt.time(9))
    before_mid_autumn = ScheduleSpec(
        recurrence_kind="calendar", calendar_code="mid_autumn", calendar_offset_days=-3, send_time=dt.time(10)
    )
    plan = _plan(
        before_mid_autumn, after=utc(2027, 1, 1), now=utc(2027, 9, 12, 2), dates=[dt.date(2027, 9, 15)]
    )
    assert plan.run.key == "mid_autumn-2027" and plan.run.due_at == utc(2027, 9, 12, 2)
    assert plan.finished  # nothing later is known: the calendar holds one 中秋
    after = _plan(
        before_mid_autumn, after=plan.run.due_at, now=utc(2027, 12, 1), dates=[dt.date(2027, 9, 15)]
    )
    assert after.run is None and after.missed == ()
