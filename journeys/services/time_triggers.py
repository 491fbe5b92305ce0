"""Time-based entry triggers: who enters a journey because a moment came, not because an event arrived.

One dispatcher (`time_triggers_dispatch`, woken by beat through journeys.tasks.time_triggers_wake) makes
one pass over the published journeys whose entry is a time trigger:

- `date_attribute`: every year on the customer's birthday or sign-up anniversary, at a local time in
  the customer's own zone (Customer.time_zone);
- `days_after`: N days after the sign-up, the first or the last order, or an event (its first or each),
  at a local time;
- `calendar`: a holiday or shopping date of campaigns' marketing calendar, with an offset in days, at a
  local time;
- `segment`: every `every`, the customers who newly match a segment;
- `at`: a fixed instant, once;
- `event_not_followed`: an event with no follow-up event within a time (cart abandonment); it is due
  when the time has passed, which no event says, so it is computed here rather than by the event reader.

Each journey keeps a TimeTriggerState row: a pass looks for occurrences due in (checked_until, now], but
never further back than the catch-up window (JOURNEYS_CATCH_UP_SECONDS) nor before the version was
published. So a dispatcher that was down for an hour catches up, one down for two days skips the stale
occurrences (no flood of birthday wishes two days late), and a second dispatcher at the same moment finds
the row locked and passes the journey by. Every entry carries an occurrence key ("2027" for a birthday,
the date for a calendar day, the event id for an event not followed), unique per journey and customer in
the database, so whatever runs twice enters nobody twice; the re-entry rules still apply on top
(journeys/services/enrollments.py).

Local moments are worked out in Python once per zone customers are in (campaigns' wall_to_utc: the same
DST rules as a recurring campaign), then the customers are found set-based, one query per journey and
zone at most, never one per customer.
"""

from __future__ import annotations

import calendar as calendar_module
import logging
import zoneinfo
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import DateTimeField, Exists, ExpressionWrapper, OuterRef, Q
from django.db.models.functions import ExtractDay, ExtractMonth, ExtractYear

from campaigns.models import CalendarDate
from campaigns.recurrence import calendar_walls, wall_to_utc
from campaigns.services.occurrences import customer_time_zones
from crm.models import Customer, Event, Order, Segment
from crm.segments.fields import RuleInvalid
from crm.segments.selectors import segment_customers
from crm.segments.sql import segment_query_settings
from journeys.models import (
    JourneyStatus,
    JourneyVersion,
    SegmentTriggerMember,
    TimeTriggerState,
    VersionStatus,
)
from journeys.nodes import DAYS_AFTER_DEFAULT_TIME, TIME_TRIGGERS, graph_entry, graph_nodes
from journeys.services.enrollments import EnterResult, EntryRefused, enrollments_enter
from journeys.services.events import filters_match

logger = logging.getLogger(__name__)

DEFAULT_CATCH_UP_SECONDS = 6 * 3600.0
# event_not_followed: an event that reaches us up to this long after its time to follow has passed (a
# phone that was offline, a batch upload) is still considered; later than that it is skipped.
NOT_FOLLOWED_LATE = timedelta(minutes=5)
# ... and it is decided this long after its time, so a follow-up event whose transaction commits a
# moment late (ids are handed out at insert, not at commit) is seen before the customer is entered.
NOT_FOLLOWED_SETTLE = timedelta(seconds=30)
_UNITS = {"minutes": 60, "hours": 3600, "days": 86400}


def catch_up_window() -> timedelta:
    return timedelta(seconds=float(getattr(settings, "JOURNEYS_CATCH_UP_SECONDS", DEFAULT_CATCH_UP_SECONDS)))


def duration_of(value: dict) -> timedelta:
    return timedelta(seconds=int(value["value"]) * _UNITS[value["unit"]])


def _local_time(value: str | None, default: str | None = None) -> time:
    hours, minutes = (value or default or "00:00").split(":")
    return time(int(hours), int(minutes))


@dataclass(frozen=True)
class LocalMoment:
    """A wall-clock time on a local day in one zone, and the UTC instant it happens."""

    zone: str
    day: date
    due_at: datetime


def local_moments(
    *, zones: Iterable[zoneinfo.ZoneInfo], at: time, start: datetime, end: datetime
) -> list[LocalMoment]:
    """Every (zone, local day) whose wall time `at` falls in (start, end]. Worked out per day, so 09:00
    stays 09:00 local across a DST change (the UTC instant moves, the wall time does not); a time that
    does not exist that day (the spring-forward gap) happens just after the gap (wall_to_utc)."""
    moments = []
    for zone in zones:
        day = start.astimezone(zone).date() - timedelta(days=1)
        last = end.astimezone(zone).date() + timedelta(days=1)
        while day <= last:
            due = wall_to_utc(datetime.combine(day, at), zone)
            if start < due <= end:
                moments.append(LocalMoment(zone=zone.key, day=day, due_at=due))
            day += timedelta(days=1)
    return moments


def anniversary_dates(day: date) -> list[tuple[int, int]]:
    """The (month, day) dates whose anniversary falls on `day`. A 29 February birthday (or sign-up) is
    celebrated on 28 February in a year without one: the day stays in February, the customer's own
    month, and it comes before the real date rather than after it. The designer's help text says so."""
    dates = [(day.month, day.day)]
    if (day.month, day.day) == (2, 28) and not calendar_module.isleap(day.year):
        dates.append((2, 29))
    return dates


def _day_range(day: date, zone: str) -> tuple[datetime, datetime]:
    tz = zoneinfo.ZoneInfo(zone)
    return (
        wall_to_utc(datetime.combine(day, time(0)), tz),
        wall_to_utc(datetime.combine(day + timedelta(days=1), time(0)), tz),
    )


def _live_customers():
    return Customer.objects.filter(erased_at__isnull=True)


# --- The kinds ------------------------------------------------------------------------------------------


def _anniversary(trigger: dict, moments: list[LocalMoment]) -> dict[int, str]:
    """Birthday or sign-up anniversary: occurrence = the local year of the anniversary."""
    attribute = trigger.get("attribute")
    pairs: dict[int, str] = {}
    by_zone: dict[str, dict[tuple[int, int], int]] = {}
    for moment in moments:
        for month_day in anniversary_dates(moment.day):
            by_zone.setdefault(moment.zone, {})[month_day] = moment.day.year
    for zone, years in by_zone.items():
        customers = _live_customers().filter(time_zone=zone)
        if attribute == "birthday":
            wanted = Q()
            for month, day in years:
                wanted |= Q(birthday__month=month, birthday__day=day)
            rows = customers.filter(wanted).values_list("pk", "birthday__month", "birthday__day")
            for pk, month, day in rows:
                pairs[pk] = str(years[(month, day)])
        elif attribute == "signed_up_at":
            tz = zoneinfo.ZoneInfo(zone)
            local = customers.annotate(
                m=ExtractMonth("created_at", tzinfo=tz),
                d=ExtractDay("created_at", tzinfo=tz),
                y=ExtractYear("created_at", tzinfo=tz),
            )
            wanted = Q()
            for month, day in years:
                wanted |= Q(m=month, d=day)
            for pk, month, day, year in local.filter(wanted).values_list("pk", "m", "d", "y"):
                if year < years[(month, day)]:  # the sign-up day itself is no anniversary
                    pairs[pk] = str(years[(month, day)])
    return pairs


def _days_after(trigger: dict, moments: list[LocalMoment]) -> dict[int, str]:
    """N days after a date or an event, counted in local days: the customer whose first order was placed
    on 10 June (their time) enters 180 days later at the local time. Occurrence: that local day."""
    days = int(trigger["days"])
    attribute, event_type = trigger.get("attribute"), trigger.get("event_type")
    pairs: dict[int, str] = {}
    for moment in moments:
        since, until = _day_range(moment.day - timedelta(days=days), moment.zone)
        occurrence = moment.day.isoformat()
        if event_type:
            rows = Event.objects.filter(
                type=event_type,
                occurred_at__gte=since,
                occurred_at__lt=until,
                customer__time_zone=moment.zone,
                customer__erased_at__isnull=True,
            )
            if trigger.get("which", "first") == "first":
                rows = rows.exclude(
                    Exists(
                        Event.objects.filter(
                            customer_id=OuterRef("customer_id"),
                            type=event_type,
                            occurred_at__lt=OuterRef("occurred_at"),
                        )
                    )
                )
            ids = rows.values_list("customer_id", flat=True)
        elif attribute == "signed_up_at":
            ids = (
                _live_customers()
                .filter(time_zone=moment.zone, created_at__gte=since, created_at__lt=until)
                .values_list("pk", flat=True)
            )
        else:
            orders = Order.objects.filter(
                placed_at__gte=since,
                placed_at__lt=until,
                customer__time_zone=moment.zone,
                customer__erased_at__isnull=True,
            )
            # first_order_at: no order before this one; last_order_at: none after it (yet).
            other = (
                Q(placed_at__lt=OuterRef("placed_at"))
                if attribute == "first_order_at"
                else Q(placed_at__gt=OuterRef("placed_at"))
            )
            orders = orders.exclude(Exists(Order.objects.filter(other, customer_id=OuterRef("customer_id"))))
            ids = orders.values_list("customer_id", flat=True)
        for pk in ids.distinct():
            pairs.setdefault(pk, occurrence)
    return pairs


def _calendar(trigger: dict, *, zones, start: datetime, end: datetime) -> dict[int, str]:
    """Every customer, on a calendar date (plus the offset) at the local time in their zone. Occurrence:
    the calendar date (the festival's, not the offset day), so each year's 双十一 is its own."""
    offset = int(trigger.get("offset_days") or 0)
    at = _local_time(trigger.get("local_time"))
    lo = (start - timedelta(days=offset + 2)).date()
    hi = (end - timedelta(days=offset - 2)).date()
    dates = CalendarDate.objects.filter(code=trigger["code"], date__gte=lo, date__lte=hi).values_list(
        "date", flat=True
    )
    due_zones: dict[str, str] = {}
    for calendar_day, wall in calendar_walls(dates, offset_days=offset, send_time=at):
        for zone in zones:
            if start < wall_to_utc(wall, zone) <= end:
                due_zones[zone.key] = calendar_day.isoformat()
    if not due_zones:
        return {}
    rows = _live_customers().filter(time_zone__in=list(due_zones)).values_list("pk", "time_zone")
    return {pk: due_zones[zone] for pk, zone in rows}


def _at(trigger: dict, *, start: datetime, end: datetime) -> dict[int, str]:
    at = datetime.fromisoformat(trigger["at"])
    if not start < at <= end:
        return {}
    occurrence = f"at:{at.isoformat()}"
    return {pk: occurrence for pk in _live_customers().values_list("pk", flat=True)}


def _not_followed(trigger: dict, *, published_at: datetime, start: datetime, end: datetime) -> dict[int, str]:
    """Events of `event_type` whose time to follow (`within`) ended in the window with no `not_followed_by`
    event of the same customer in it. Occurrence: the event id; one entry per customer per pass (the
    earliest event: three items added a minute apart are one abandoned cart)."""
    within = duration_of(trigger["within"])
    follow_up = Event.objects.filter(
        customer_id=OuterRef("customer_id"),
        type=trigger["not_followed_by"],
        occurred_at__gte=OuterRef("occurred_at"),
        occurred_at__lte=ExpressionWrapper(OuterRef("occurred_at") + within, output_field=DateTimeField()),
    )
    rows = (
        Event.objects.filter(
            type=trigger["event_type"],
            customer__isnull=False,
            occurred_at__gt=start - NOT_FOLLOWED_LATE - within,
            occurred_at__lte=end - NOT_FOLLOWED_SETTLE - within,
            # A journey published today does not enter yesterday's carts.
            received_at__gte=published_at,
        )
        .exclude(Exists(follow_up))
        .order_by("occurred_at", "pk")
        .values_list("pk", "customer_id", "properties")
    )
    filters = trigger.get("filters") or []
    pairs: dict[int, str] = {}
    for pk, customer_id, properties in rows:
        if customer_id not in pairs and filters_match(filters, properties or {}):
            pairs[customer_id] = str(pk)
    return pairs


def _segment(
    version: JourneyVersion, trigger: dict, state: TimeTriggerState, now: datetime
) -> dict[int, str]:
    """Who matches the segment now and did not at the last evaluation. The first evaluation after a
    journey is published only records the members (publishing a "became VIP" journey must not greet
    every VIP there already is); the designer's help text says so."""
    if state.segment_next_at is not None and now < state.segment_next_at:
        return {}
    first = state.segment_next_at is None
    state.segment_next_at = now + duration_of(trigger["every"])
    segment = Segment.objects.filter(pk=trigger["segment"]).first()
    if segment is None:
        logger.warning(
            "journey %s: segment %s is gone; nobody enters", version.journey_id, trigger["segment"]
        )
        return {}
    journey_id = version.journey_id
    try:
        with segment_query_settings():
            members = segment_customers(segment=segment, now=now).order_by().values("pk")
            previous = SegmentTriggerMember.objects.filter(journey_id=journey_id).values("customer_id")
            newly = list(members.exclude(pk__in=previous).values_list("pk", flat=True))
            SegmentTriggerMember.objects.filter(journey_id=journey_id).exclude(
                customer_id__in=members
            ).delete()
    except RuleInvalid:
        logger.warning("journey %s: segment %s no longer compiles; nobody enters", journey_id, segment.pk)
        return {}
    SegmentTriggerMember.objects.bulk_create(
        [SegmentTriggerMember(journey_id=journey_id, customer_id=pk) for pk in newly],
        batch_size=5000,
        ignore_conflicts=True,
    )
    if first:
        return {}
    occurrence = f"segment:{now.isoformat(timespec='seconds')}"
    return dict.fromkeys(newly, occurrence)


# --- The dispatcher -------------------------------------------------------------------------------------


@dataclass
class TimeTriggerStats:
    journeys: int = 0  # journeys passed over (locked by this dispatcher)
    busy: int = 0  # journeys another dispatcher held
    entered: int = 0
    holdout: int = 0
    skipped: int = 0
    per_journey: dict[int, EnterResult] = field(default_factory=dict)


def time_trigger_of(graph: dict) -> dict | None:
    """The entry node's trigger when it is one this module computes."""
    entry = graph_entry(graph or {})
    if entry is None:
        return None
    trigger = (graph_nodes(graph)[entry].get("config") or {}).get("trigger") or {}
    return trigger if trigger.get("kind") in TIME_TRIGGERS else None


def window_start(*, checked_until: datetime | None, published_at: datetime, now: datetime) -> datetime:
    """Where a pass begins: after the last pass, but not before the version was published nor further
    back than the catch-up window."""
    return max(checked_until or published_at, published_at, now - catch_up_window())


def time_triggers_dispatch(*, now: datetime) -> TimeTriggerStats:
    """One pass over every published journey with a time trigger (see the module's docstring)."""
    stats = TimeTriggerStats()
    timed = [
        (version, trigger)
        for version in JourneyVersion.objects.filter(
            status=VersionStatus.PUBLISHED, journey__status=JourneyStatus.PUBLISHED
        )
        .select_related("journey")
        .order_by("journey_id")
        if (trigger := time_trigger_of(version.graph)) is not None
    ]
    if not timed:
        return stats
    TimeTriggerState.objects.bulk_create(
        [TimeTriggerState(journey_id=version.journey_id) for version, _trigger in timed],
        ignore_conflicts=True,
    )
    zones_cache: list[tuple[zoneinfo.ZoneInfo, ...]] = []

    def zones() -> tuple[zoneinfo.ZoneInfo, ...]:
        # Read once per pass, not cached across passes: a customer in a zone nobody else is in must not
        # miss a birthday because the list was a few minutes old.
        if not zones_cache:
            zones_cache.append(customer_time_zones())
        return zones_cache[0]

    for version, trigger in timed:
        try:
            result = _journey_pass(version, trigger, now=now, zones=zones)
        except EntryRefused:
            continue  # paused or retired since the list was read; the next pass sees it
        except Exception:
            # One journey whose trigger broke behind the validator's back must not stop the others.
            logger.exception("journey %s: time trigger pass failed", version.journey_id)
            continue
        if result is None:
            stats.busy += 1
            continue
        stats.journeys += 1
        stats.entered += result.entered
        stats.holdout += result.holdout
        stats.skipped += result.skipped
        stats.per_journey[version.journey_id] = result
    return stats


def _journey_pass(version: JourneyVersion, trigger: dict, *, now: datetime, zones) -> EnterResult | None:
    with transaction.atomic():
        # SKIP LOCKED: a second dispatcher at the same moment passes this journey by instead of waiting
        # and then entering the same window again.
        state = (
            TimeTriggerState.objects.select_for_update(skip_locked=True)
            .filter(journey_id=version.journey_id)
            .first()
        )
        if state is None:
            return None
        published_at = version.published_at or now
        start = window_start(checked_until=state.checked_until, published_at=published_at, now=now)
        pairs: dict[int, str] = {}
        kind = trigger["kind"]
        if start < now:
            if kind == "date_attribute":
                moments = local_moments(
                    zones=zones(), at=_local_time(trigger["local_time"]), start=start, end=now
                )
                pairs = _anniversary(trigger, moments)
            elif kind == "days_after":
                at = _local_time(trigger.get("local_time"), DAYS_AFTER_DEFAULT_TIME)
                pairs = _days_after(trigger, local_moments(zones=zones(), at=at, start=start, end=now))
            elif kind == "calendar":
                pairs = _calendar(trigger, zones=zones(), start=start, end=now)
            elif kind == "at":
                pairs = _at(trigger, start=start, end=now)
            elif kind == "event_not_followed":
                pairs = _not_followed(trigger, published_at=published_at, start=start, end=now)
        if kind == "segment":
            pairs = _segment(version, trigger, state, now)
        result = EnterResult()
        if pairs:
            result = enrollments_enter(version=version, customer_ids=list(pairs), occurrence=pairs, now=now)
        state.checked_until = max(now, state.checked_until or now)
        state.save(update_fields=["checked_until", "segment_next_at"])
        return result
