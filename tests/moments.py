"""Times relative to the moment a test runs, for values built before it runs.

Parametrize arguments, module constants and class attributes are evaluated when pytest collects the
tests; on a loaded machine a suite may run for half an hour after that, so "10 minutes ahead" computed
there is in the past by the time the test sends it. Write `FromNow(minutes=10)` there instead and call
`resolved(value)` inside the test: every FromNow in it (in dicts, lists and tuples too) becomes a time
relative to the test's own now. tests/conftest.py refuses parametrize arguments that hold a time close
to the collection's now, which is how such a value usually looks.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.utils import timezone


class FromNow:
    """`now + timedelta(**delta)`, with `now` taken when the test resolves it."""

    def __init__(self, **delta: float) -> None:
        self.delta = timedelta(**delta)

    def at(self, now: datetime) -> datetime:
        return now + self.delta

    def __repr__(self) -> str:  # readable test ids: FromNow(+0:10:00)
        sign = "-" if self.delta < timedelta(0) else "+"
        return f"FromNow({sign}{abs(self.delta)})"


def resolved(value, *, now: datetime | None = None, iso: bool = True):
    """`value` with every FromNow replaced by a time relative to `now` (default: timezone.now()), as an
    ISO 8601 string with offset (what the API takes) or, with iso=False, as an aware datetime."""
    now = now or timezone.now()

    def walk(item):
        if isinstance(item, FromNow):
            moment = item.at(now)
            return moment.isoformat() if iso else moment
        if isinstance(item, dict):
            return {key: walk(val) for key, val in item.items()}
        if isinstance(item, list):
            return [walk(val) for val in item]
        if isinstance(item, tuple):
            return tuple(walk(val) for val in item)
        return item

    return walk(value)
