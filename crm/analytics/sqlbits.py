"""The few SQL snippets that differ between PostgreSQL (production, tests) and SQLite (the embedded demo).

Months are reported in the reporting time zone (the segment time zone, by default the business time zone
settings.TIME_ZONE) on both: SQLite has no time zones, so there the conversion is the function Django
registers on every SQLite connection for its own TruncDate (Python's zoneinfo, DST included).
"""

from __future__ import annotations

import re

from django.conf import settings
from django.db import connection

from crm.segments.fields import segment_time_zone


def reporting_currency() -> str:
    return getattr(settings, "REPORTING_CURRENCY", "CNY")


def reporting_tz_name() -> str:
    return str(segment_time_zone())


def is_postgres() -> bool:
    return connection.vendor == "postgresql"


def month_of(column: str) -> str:
    """'YYYY-MM' of a timestamp column in the reporting time zone. Takes one parameter: the zone name."""
    if is_postgres():
        return f"to_char({column} AT TIME ZONE %s, 'YYYY-MM')"
    return f"substr(django_datetime_cast_date({column}, %s, 'UTC'), 1, 7)"


def month_param() -> str:
    return reporting_tz_name()


# The key is spliced into the SQL as a literal, so only plain identifiers may pass. A check, not an
# assert: `python -O` strips asserts, and str.isalnum() would let through non-ASCII letters.
_JSON_KEY = re.compile(r"[a-z_][a-z0-9_]*")


def json_text(column: str, key: str) -> str:
    """The text under `key` (a literal made of [a-z0-9_]) of a JSON column."""
    if not _JSON_KEY.fullmatch(key):
        raise ValueError(f"JSON key {key!r} is not a plain identifier ([a-z_][a-z0-9_]*)")
    if is_postgres():
        return f"({column} ->> '{key}')"
    return f"json_extract({column}, '$.{key}')"


def minus_days(column: str) -> str:
    """`column` minus %s days (one integer parameter)."""
    if is_postgres():
        return f"({column} - make_interval(days => %s))"
    return f"datetime({column}, '-' || %s || ' days')"
