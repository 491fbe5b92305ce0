"""Seeding the marketing calendar (campaigns.models.CalendarDate).

What the installed `chinesecalendar` package knows (read from its source, version 1.11): the State
Council's days off for 元旦, 春节, 清明, 劳动节, 端午, 国庆节 and 中秋 from 2004 to the last year it was
released for (`holidays` in chinese_calendar.constants, 2026 in 1.11), with their Chinese and English
names (its `Holiday` enum), and the 24 solar terms computed for 1900-2100. It lists the days off, not
the festival itself: 春节 2026 is off from 15 to 23 February, the festival is the 17th. So:

- 元旦, 劳动节 and 国庆节 are fixed Gregorian dates, for any year;
- 清明 is the solar term 清明, computed by the package for any year up to 2100;
- 春节, 端午 and 中秋 are lunar dates. The package cannot place them, and no lunar-calendar package is
  installed, so they come from LUNAR_FESTIVALS below, a reviewed table that a test checks against the
  package: each date must be one of the package's days off for that festival in every year it knows.
  Years past the table are added by staff in the admin (or by extending the table).
- the shopping dates (520, 618, 双十一, 双十二) are fixed Gregorian dates.

Idempotent: a reseed creates missing rows and corrects rows it seeded, never a row staff edited
(source "staff"), so an admin's correction survives every `make run`.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable
from dataclasses import dataclass

import chinese_calendar
from chinese_calendar.constants import Holiday
from django.db import transaction

from campaigns.models import CalendarDate, CalendarDateKind, CalendarDateSource

# The festival day (not the days off) of the three lunar festivals, by year.
LUNAR_FESTIVALS: dict[str, dict[int, tuple[int, int]]] = {
    "spring_festival": {
        2019: (2, 5), 2020: (1, 25), 2021: (2, 12), 2022: (2, 1), 2023: (1, 22), 2024: (2, 10),
        2025: (1, 29), 2026: (2, 17), 2027: (2, 6), 2028: (1, 26), 2029: (2, 13), 2030: (2, 3),
    },
    "dragon_boat": {
        2019: (6, 7), 2020: (6, 25), 2021: (6, 14), 2022: (6, 3), 2023: (6, 22), 2024: (6, 10),
        2025: (5, 31), 2026: (6, 19), 2027: (6, 9), 2028: (5, 28), 2029: (6, 16), 2030: (6, 5),
    },
    "mid_autumn": {
        2019: (9, 13), 2020: (10, 1), 2021: (9, 21), 2022: (9, 10), 2023: (9, 29), 2024: (9, 17),
        2025: (10, 6), 2026: (9, 25), 2027: (9, 15), 2028: (10, 3), 2029: (9, 22), 2030: (9, 12),
    },
}  # fmt: skip

# Our code -> the package's Holiday member, whose Chinese and English names the rows take.
PACKAGE_HOLIDAYS: dict[str, Holiday] = {
    "new_year": Holiday.new_years_day,
    "spring_festival": Holiday.spring_festival,
    "qingming": Holiday.tomb_sweeping_day,
    "labour_day": Holiday.labour_day,
    "dragon_boat": Holiday.dragon_boat_festival,
    "national_day": Holiday.national_day,
    "mid_autumn": Holiday.mid_autumn_festival,
}

FIXED_HOLIDAYS: dict[str, tuple[int, int]] = {
    "new_year": (1, 1),
    "labour_day": (5, 1),
    "national_day": (10, 1),
}

# (month, day, Chinese name, English name)
SHOPPING_DATES: dict[str, tuple[int, int, str, str]] = {
    "520": (5, 20, "520 网络情人节", "520 (online Valentine's Day)"),
    "618": (6, 18, "618 年中购物节", "618 mid-year shopping festival"),
    "double_11": (11, 11, "双十一", "Double 11 (Singles' Day)"),
    "double_12": (12, 12, "双十二", "Double 12"),
}


@dataclass(frozen=True)
class SeededDate:
    code: str
    year: int
    date: datetime.date
    name_zh: str
    name_en: str
    kind: str
    source: str


def package_years() -> tuple[int, int]:
    """The first and last year of days off the installed package knows."""
    days = chinese_calendar.constants.holidays
    return min(days).year, max(days).year


def _qingming(year: int) -> datetime.date | None:
    start = datetime.date(year, 4, 1)
    for day, name in chinese_calendar.get_solar_terms(start, datetime.date(year, 4, 30)):
        if name == Holiday.tomb_sweeping_day.chinese:
            return day
    return None  # pragma: no cover - the solar term 清明 always falls in April


def calendar_dates_for(year: int) -> list[SeededDate]:
    """Every date the seed knows for `year` (a lunar festival missing from the table is left out)."""
    out: list[SeededDate] = []
    for code, holiday in PACKAGE_HOLIDAYS.items():
        if code in FIXED_HOLIDAYS:
            day, source = datetime.date(year, *FIXED_HOLIDAYS[code]), CalendarDateSource.FIXED
        elif code == "qingming":
            day, source = _qingming(year), CalendarDateSource.PACKAGE
        else:
            month_day = LUNAR_FESTIVALS[code].get(year)
            day = datetime.date(year, *month_day) if month_day else None
            source = CalendarDateSource.REVIEWED
        if day is not None:
            out.append(
                SeededDate(code, year, day, holiday.chinese, holiday.value, CalendarDateKind.HOLIDAY, source)
            )
    for code, (month, dom, zh, en) in SHOPPING_DATES.items():
        out.append(
            SeededDate(
                code, year, datetime.date(year, month, dom), zh, en, CalendarDateKind.SHOPPING,
                CalendarDateSource.FIXED,
            )
        )  # fmt: skip
    return out


def calendar_dates_seed(*, years: Iterable[int]) -> tuple[int, int]:
    """Create the missing calendar dates of `years` and correct the seeded ones; returns (created,
    updated). Rows staff edited are left alone."""
    wanted = {(d.code, d.year): d for year in years for d in calendar_dates_for(year)}
    created = updated = 0
    with transaction.atomic():
        existing = {
            (row.code, row.year): row
            for row in CalendarDate.objects.select_for_update().filter(year__in={y for _, y in wanted})
        }
        new_rows = []
        for key, seed in wanted.items():
            row = existing.get(key)
            if row is None:
                new_rows.append(
                    CalendarDate(
                        code=seed.code, year=seed.year, date=seed.date, name_zh=seed.name_zh,
                        name_en=seed.name_en, kind=seed.kind, source=seed.source,
                    )
                )  # fmt: skip
                continue
            if row.source == CalendarDateSource.STAFF:
                continue
            fields = {"date": seed.date, "name_zh": seed.name_zh, "name_en": seed.name_en, "kind": seed.kind}
            fields["source"] = seed.source
            changed = [name for name, value in fields.items() if getattr(row, name) != value]
            if changed:
                for name in changed:
                    setattr(row, name, fields[name])
                row.save(update_fields=changed)
                updated += 1
        # ignore_conflicts: a concurrent seed (two `make run`s) inserting the same row is not an error.
        created = len(CalendarDate.objects.bulk_create(new_rows, ignore_conflicts=True))
    return created, updated
