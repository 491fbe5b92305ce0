"""The business's clock: which calendar day a moment falls on, for the brand.

Times are stored in UTC. Days (purchase days, the metrics' as-of date, "today") are counted in the
business time zone, `settings.TIME_ZONE` (environment variable TIME_ZONE, default Asia/Shanghai): for
a brand in China an order at 07:00 on the 12th was placed on the 12th, although it is still the 11th in
UTC. A customer's own zone (`Customer.time_zone`) decides their local moments (birthdays, quiet hours);
this module is the brand's.
"""

from __future__ import annotations

import zoneinfo
from datetime import UTC, date, datetime, time, timedelta

from django.utils import formats, timezone


def business_time_zone() -> zoneinfo.ZoneInfo:
    """The business time zone (settings.TIME_ZONE, validated when the settings load)."""
    return timezone.get_default_timezone()


def business_date_of(moment: datetime) -> date:
    """The business-calendar day on which an aware `moment` falls."""
    if timezone.is_naive(moment):
        raise ValueError(f"{moment!r} has no time zone; the business day of a naive time is ambiguous")
    return moment.astimezone(business_time_zone()).date()


def business_today(now: datetime) -> date:
    """Today in the business time zone, at the instant `now` (pass the operation's one `now`)."""
    return business_date_of(now)


def business_day_start(day: date) -> datetime:
    """The first instant of `day` in the business time zone, as a UTC datetime.

    In UTC because Python subtracts two datetimes that share a ZoneInfo on the wall clock: in a zone
    with summer time, local end minus local start of the spring-forward day says 24 h, not 23. Where a
    transition skips midnight itself (a few zones, e.g. America/Havana in the past), fold=0 gives the
    instant just after the gap, still the day's first."""
    return datetime.combine(day, time.min, tzinfo=business_time_zone()).astimezone(UTC)


def business_day_end(day: date) -> datetime:
    """The instant `day` ends in the business time zone (UTC): the start of the next day, an exclusive
    bound. Not start + 24 h: a day with a DST change lasts 23 or 25 hours."""
    return business_day_start(day + timedelta(days=1))


# The earliest day an order or behaviour event may carry. A brand importing its order history, or an
# analyst loading the public CDNOW sample (1997-98) to check the lifetime-value model, goes back decades;
# a time before the Unix epoch is a zero, an empty cell or a unit mix-up, not a purchase.
EARLIEST_DATE = date(1970, 1, 1)


def is_before_earliest(moment: datetime) -> bool:
    """Whether `moment`'s calendar date, as written (on its own offset's clock), is before EARLIEST_DATE.

    As written, not converted: 1970-01-01T00:00+08:00 is 1969-12-31 in UTC, and the person who sent it
    would not understand being told it is before 1970."""
    return moment.date() < EARLIEST_DATE


def moment_display(moment: datetime) -> str:
    """`moment` as staff and members read it in text built in Python (messages, object names): on the
    current time zone's clock (the business zone unless a request activated another) in the active
    language's short format, 2026年11月11日 00:00 or 11 Nov 2026, 00:00 (config/formats)."""
    return formats.date_format(timezone.localtime(moment), "SHORT_DATETIME_FORMAT")
