"""When a scheduled campaign's occurrences fall: pure functions over times, no database.

Three kinds of recurrence (Campaign.recurrence_kind): a cron expression ("0 10 * * 1", every Monday at
10:00), an interval from an anchor, and a calendar date with an offset ("3 days before 中秋" at
send_time). Each is read on a wall clock: the business time zone's, or, for "9:00 local" campaigns, each
customer's own. A local occurrence is one wall-clock moment (local date + time) that happens once per
zone; the run is due when the earliest zone reaches it (`earliest_instant`), and each customer's message
is due at their own zone's instant (computed by the campaign start, in SQL).

celery.schedules.crontab parses the fields (it is what beat itself uses, so an expression beat accepts is
one we accept); the search for the next match is ours because croniter is not installed.
"""

from __future__ import annotations

import datetime
import functools
import zoneinfo
from collections.abc import Iterable
from dataclasses import dataclass

from celery.schedules import crontab
from django.utils.translation import gettext as _

UTC = datetime.UTC

# How far ahead a cron search looks before it says "never": 29 February on a Monday recurs within 28
# years, and an expression that matches nothing (30 February) must not loop for ever.
CRON_SEARCH_DAYS = 366 * 29

CRON_FIELDS = ("minute", "hour", "day_of_month", "month_of_year", "day_of_week")


class RecurrenceError(ValueError):
    """Bad schedule input; `field` names the cron field (or None), `message` is translated text."""

    def __init__(self, message: str, *, field: str | None = None):
        super().__init__(message)
        self.message = message
        self.field = field


def _field_labels() -> dict[str, str]:
    return {
        "minute": _("minute (0-59)"),
        "hour": _("hour (0-23)"),
        "day_of_month": _("day of month (1-31)"),
        "month_of_year": _("month (1-12)"),
        "day_of_week": _("day of week (0-6, 0 = Sunday, or mon-sun)"),
    }


@dataclass(frozen=True)
class CronSchedule:
    """A parsed five-field cron expression: the sets of values each field allows."""

    expression: str
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days_of_month: frozenset[int]
    months: frozenset[int]
    days_of_week: frozenset[int]  # 0 = Sunday, as cron and celery count
    dom_restricted: bool
    dow_restricted: bool

    def matches_day(self, day: datetime.date) -> bool:
        if day.month not in self.months:
            return False
        dom = day.day in self.days_of_month
        dow = (day.isoweekday() % 7) in self.days_of_week
        # Cron's own rule (Vixie cron, POSIX): when both day fields are restricted, a day matching
        # either runs ("0 9 1 * 1" = the 1st of the month and every Monday); otherwise the restricted
        # one decides.
        if self.dom_restricted and self.dow_restricted:
            return dom or dow
        return dom and dow


@functools.lru_cache(maxsize=256)
def cron_parse(expression: str) -> CronSchedule:
    """Parse a five-field cron expression; a bad field raises RecurrenceError naming it."""
    parts = (expression or "").split()
    if len(parts) != 5:
        raise RecurrenceError(
            _(
                "A cron expression has five fields (minute hour day-of-month month day-of-week), "
                "e.g. “0 10 * * 1” for every Monday at 10:00; this one has %(n)d."
            )
            % {"n": len(parts)}
        )
    labels = _field_labels()
    values: dict[str, set[int]] = {}
    for name, text in zip(CRON_FIELDS, parts, strict=True):
        try:
            values[name] = set(getattr(crontab(**{name: text}), name))
        except (ValueError, TypeError, KeyError, IndexError) as exc:
            raise RecurrenceError(
                # The parser's own words are English; the field's label already says what is allowed.
                _("The %(field)s field “%(value)s” is not valid.") % {"field": labels[name], "value": text},
                field=name,
            ) from exc
        if not values[name]:
            raise RecurrenceError(
                _("The %(field)s field “%(value)s” matches nothing.")
                % {"field": labels[name], "value": text},
                field=name,
            )
    schedule = CronSchedule(
        expression=" ".join(parts),
        minutes=tuple(sorted(values["minute"])),
        hours=tuple(sorted(values["hour"])),
        days_of_month=frozenset(values["day_of_month"]),
        months=frozenset(values["month_of_year"]),
        days_of_week=frozenset(values["day_of_week"]),
        dom_restricted=parts[2] != "*",
        dow_restricted=parts[4] != "*",
    )
    if not any(_days_possible(schedule)):
        raise RecurrenceError(
            _("The day of month and month never meet (e.g. 30 February): “%(value)s” never runs.")
            % {"value": schedule.expression},
            field="day_of_month",
        )
    return schedule


def _days_possible(schedule: CronSchedule) -> Iterable[bool]:
    # 2024 is a leap year: every (month, day) pair that ever exists exists in it.
    for month in schedule.months:
        for dom in schedule.days_of_month:
            try:
                datetime.date(2024, month, dom)
            except ValueError:
                continue
            yield True
    yield schedule.dow_restricted and schedule.dom_restricted  # "either" days always meet


def wall_to_utc(wall: datetime.datetime, zone: zoneinfo.ZoneInfo) -> datetime.datetime:
    """The UTC instant of a naive wall-clock time in `zone`. In a spring-forward gap (02:30 that never
    happens) fold=0 reads it with the offset before the change, i.e. one hour later on the new clock, as
    cron runs a job of the skipped hour right after it; in a fall-back overlap it is the first 01:30, so
    an occurrence runs once, not twice."""
    return wall.replace(tzinfo=zone, fold=0).astimezone(UTC)


def earliest_instant(wall: datetime.datetime, zones: Iterable[zoneinfo.ZoneInfo]) -> datetime.datetime:
    """When the first of `zones` reaches the wall-clock time `wall` (the due instant of a local run)."""
    instants = [wall_to_utc(wall, zone) for zone in zones]
    if not instants:
        raise ValueError("earliest_instant needs at least one zone")
    return min(instants)


def cron_walls(schedule: CronSchedule, *, start: datetime.date) -> Iterable[datetime.datetime]:
    """The naive wall-clock times the schedule matches, in order, from `start` (a day) on."""
    for offset in range(CRON_SEARCH_DAYS):
        day = start + datetime.timedelta(days=offset)
        if schedule.matches_day(day):
            for hour in schedule.hours:
                for minute in schedule.minutes:
                    yield datetime.datetime.combine(day, datetime.time(hour, minute))


def cron_next(
    schedule: CronSchedule, *, after: datetime.datetime, zones: Iterable[zoneinfo.ZoneInfo]
) -> tuple[datetime.datetime, datetime.datetime] | None:
    """The first occurrence due strictly after `after`: (wall-clock time, due UTC instant). With one zone
    it is that zone's instant; with several ("9:00 local") the earliest zone's. None: never again."""
    zones = tuple(zones)
    # Start a day early: in the zone furthest ahead `after` may already be tomorrow.
    first_day = (after.astimezone(UTC) - datetime.timedelta(days=1)).date()
    previous = None
    for wall in cron_walls(schedule, start=first_day):
        due = earliest_instant(wall, zones)
        if due > after and (previous is None or due > previous):
            return wall, due
        # Two walls in a spring-forward gap map to instants after the gap; keep the order strict.
        previous = due if previous is None else max(previous, due)
    return None


def interval_next(
    *, anchor: datetime.datetime, interval: datetime.timedelta, after: datetime.datetime
) -> datetime.datetime:
    """anchor + k * interval for the smallest k >= 0 with the result strictly after `after` (instants,
    not wall clocks: "every 6 hours" is 6 real hours across a DST change)."""
    if interval <= datetime.timedelta(0):
        raise RecurrenceError(_("The interval must be longer than zero."), field="interval")
    if after < anchor:
        return anchor
    steps = (after - anchor) // interval + 1
    return anchor + steps * interval


def calendar_walls(
    dates: Iterable[datetime.date], *, offset_days: int, send_time: datetime.time
) -> list[tuple[datetime.date, datetime.datetime]]:
    """(calendar date, wall-clock time of the send) for each date, in order: "3 days before 中秋 at 10:00"
    is (中秋's date, its date - 3 days at 10:00)."""
    return sorted(
        (day, datetime.datetime.combine(day + datetime.timedelta(days=offset_days), send_time))
        for day in dates
    )


def calendar_next(
    dates: Iterable[datetime.date],
    *,
    offset_days: int,
    send_time: datetime.time,
    after: datetime.datetime,
    zones: Iterable[zoneinfo.ZoneInfo],
) -> tuple[datetime.date, datetime.datetime, datetime.datetime] | None:
    """The first calendar occurrence due after `after`: (calendar date, wall time, due instant), or None
    when the calendar holds no later date (a year nobody has entered yet)."""
    zones = tuple(zones)
    for day, wall in calendar_walls(dates, offset_days=offset_days, send_time=send_time):
        due = earliest_instant(wall, zones)
        if due > after:
            return day, wall, due
    return None


_ZH_NAMES = {
    "Monday": "星期一", "Tuesday": "星期二", "Wednesday": "星期三", "Thursday": "星期四",
    "Friday": "星期五", "Saturday": "星期六", "Sunday": "星期日",
    "January": "一月", "February": "二月", "March": "三月", "April": "四月", "May": "五月", "June": "六月",
    "July": "七月", "August": "八月", "September": "九月", "October": "十月", "November": "十一月",
    "December": "十二月",
}  # fmt: skip


def cron_describe(expression: str, *, language: str) -> str:
    """The expression in words for the campaign form, in English or Chinese (cron-descriptor's zh_CN;
    it leaves day and month names in English, so they are put into Chinese here)."""
    from cron_descriptor import ExpressionDescriptor, Options

    options = Options()
    options.use_24hour_time_format = True
    options.locale_code = "zh_CN" if language.lower().startswith("zh") else "en_US"
    text = ExpressionDescriptor(expression, options).get_description()
    if options.locale_code == "zh_CN":
        for english, chinese in _ZH_NAMES.items():
            text = text.replace(english, chinese)
    return text


# --- A campaign's occurrences ------------------------------------------------------------------------


@dataclass(frozen=True)
class ScheduleSpec:
    """The schedule fields of a recurring campaign, apart from the model so the maths stays pure."""

    recurrence_kind: str  # "cron" / "interval" / "calendar"
    cron: str = ""
    interval: datetime.timedelta | None = None
    anchor: datetime.datetime | None = None  # an interval counts from here (send_at, else approval)
    calendar_code: str = ""
    calendar_offset_days: int = 0
    send_time: datetime.time | None = None
    local_time: bool = False
    ends_at: datetime.datetime | None = None


@dataclass(frozen=True)
class Occurrence:
    key: str  # CampaignRun.occurrence: unique per campaign, so a re-run of one occurrence is a no-op
    due_at: datetime.datetime  # UTC; for a local run the earliest zone's instant
    local_date: datetime.date | None = None  # local runs: the date whose wall time each zone uses
    local_time: datetime.time | None = None  # local runs: that wall time


@dataclass(frozen=True)
class OccurrencePlan:
    run: Occurrence | None  # the one occurrence to start now
    missed: tuple[Occurrence, ...]  # due earlier, past the catch-up window (or superseded): recorded
    more_missed: bool  # more were missed than listed (a long outage of a frequent schedule)
    finished: bool  # no occurrence will ever be due again (ends_at passed, or the calendar ran out)


def _occurrence(spec: ScheduleSpec, wall, due, business_zone, calendar_day=None) -> Occurrence:
    if spec.recurrence_kind == "calendar" and calendar_day is not None:
        key = f"{spec.calendar_code}-{calendar_day.year}"
    elif spec.local_time:
        key = f"local-{wall:%Y-%m-%dT%H:%M}"
    else:
        key = due.astimezone(business_zone).isoformat(timespec="minutes")
    if spec.local_time:
        return Occurrence(key=key, due_at=due, local_date=wall.date(), local_time=wall.time())
    return Occurrence(key=key, due_at=due)


def occurrence_next(
    spec: ScheduleSpec,
    *,
    after: datetime.datetime,
    zones: tuple[zoneinfo.ZoneInfo, ...],
    business_zone: zoneinfo.ZoneInfo,
    calendar_dates: Iterable[datetime.date] = (),
) -> Occurrence | None:
    """The campaign's first occurrence due strictly after `after`, or None (never again, or past
    ends_at). `zones`: the business zone alone, or for a local campaign every zone customers have."""
    zones = zones if spec.local_time else (business_zone,)
    if spec.recurrence_kind == "cron":
        found = cron_next(cron_parse(spec.cron), after=after, zones=zones)
        occurrence = _occurrence(spec, *found, business_zone) if found else None
    elif spec.recurrence_kind == "interval":
        if spec.interval is None or spec.anchor is None:
            raise RecurrenceError(_("An interval schedule needs an interval and a start."), field="interval")
        due = interval_next(anchor=spec.anchor, interval=spec.interval, after=after)
        # An interval is real time, not a wall clock: "local" has no meaning for it.
        occurrence = Occurrence(key=due.astimezone(business_zone).isoformat(timespec="minutes"), due_at=due)
    elif spec.recurrence_kind == "calendar":
        if spec.send_time is None:
            raise RecurrenceError(_("A calendar schedule needs a send time."), field="send_time")
        found = calendar_next(
            calendar_dates,
            offset_days=spec.calendar_offset_days,
            send_time=spec.send_time,
            after=after,
            zones=zones,
        )
        occurrence = None
        if found:
            day, wall, due = found
            occurrence = _occurrence(spec, wall, due, business_zone, calendar_day=day)
    else:
        raise RecurrenceError(_("Choose how the campaign recurs."), field="recurrence_kind")
    if occurrence is not None and spec.ends_at is not None and occurrence.due_at > spec.ends_at:
        return None
    return occurrence


def occurrences_plan(
    spec: ScheduleSpec,
    *,
    after: datetime.datetime,
    now: datetime.datetime,
    catch_up: datetime.timedelta,
    zones: tuple[zoneinfo.ZoneInfo, ...],
    business_zone: zoneinfo.ZoneInfo,
    calendar_dates: Iterable[datetime.date] = (),
    list_limit: int = 100,
    after_wall: datetime.datetime | None = None,
) -> OccurrencePlan:
    """What the dispatcher does at `now` for a campaign whose last occurrence was due at `after`.

    A dispatcher that was down catches up once, not in a flood: of the occurrences due in (after, now],
    only the latest is started, and only if it is at most `catch_up` old; the others are missed (listed
    up to `list_limit`, the rest summed up as "more") so the history says what did not go out and why.

    `after_wall`: for a local campaign, the wall time of its last occurrence. Its occurrences are wall
    times, so when the customers' zones change (the earliest zone's customers left) the last one's wall
    time can come round again at a later instant; it is the same occurrence, not a new one."""
    calendar_dates = tuple(calendar_dates)

    def following(cursor):
        return occurrence_next(
            spec, after=cursor, zones=zones, business_zone=business_zone, calendar_dates=calendar_dates
        )

    missed: list[Occurrence] = []
    more_missed = False
    cursor, latest = after, None
    while True:
        occurrence = following(cursor)
        if occurrence is None or occurrence.due_at > now:
            break
        if (
            after_wall is not None
            and occurrence.local_date is not None
            and datetime.datetime.combine(occurrence.local_date, occurrence.local_time) <= after_wall
        ):
            cursor = occurrence.due_at
            continue
        if latest is not None:
            missed.append(latest)
        latest, cursor = occurrence, occurrence.due_at
        if len(missed) >= list_limit and cursor < now - catch_up:
            # A long outage of a frequent schedule (every minute, down for a week): list the first
            # ones, then jump to the catch-up window instead of walking every minute since.
            more_missed = True
            latest, cursor = None, now - catch_up - datetime.timedelta(microseconds=1)
    finished = occurrence is None
    run = None
    if latest is not None:
        if now - latest.due_at <= catch_up:
            run = latest
        else:
            missed.append(latest)
    return OccurrencePlan(run=run, missed=tuple(missed), more_missed=more_missed, finished=finished)
