"""Computing and storing the dashboard summaries.

`analytics_refresh` (the nightly task) recomputes every chart's default figures and the attribution of
the last few months; the endpoints read those rows. A figure that is missing (a fresh install, an
unusual lookback) is computed on first request and stored, so the page never shows an empty chart
for want of a nightly run.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import Count, Sum
from django.utils import timezone

from crm.analytics import compute
from crm.analytics.attribution import attribution
from crm.analytics.funnel import funnel
from crm.models import DashboardSummary
from crm.task_queue import task_queue_on_commit

logger = logging.getLogger(__name__)

FUNNEL_WINDOWS = (7, 30, 90)
ATTRIBUTION_LOOKBACKS = (7, 30)
# Orders of older months change only through refunds; the nightly run recomputes these recent months,
# `analytics_refresh(full=True)` all of them.
ATTRIBUTION_RECENT_MONTHS = 3
ATTRIBUTION_MONTHS = 12


def summary_store(
    *, chart: str, key: str, compute_fn: Callable[[], dict], now: datetime | None = None
) -> DashboardSummary:
    started = time.monotonic()
    data = compute_fn()
    duration_ms = int((time.monotonic() - started) * 1000)
    summary, _created = DashboardSummary.objects.update_or_create(
        chart=chart,
        key=key,
        defaults={"data": data, "computed_at": now or timezone.now(), "duration_ms": duration_ms},
    )
    return summary


def summary_get_or_compute(*, chart: str, key: str, compute_fn: Callable[[], dict]) -> DashboardSummary:
    summary = DashboardSummary.objects.filter(chart=chart, key=key).first()
    return summary or summary_store(chart=chart, key=key, compute_fn=compute_fn)


def funnel_window(days: int, now: datetime) -> tuple[datetime, datetime]:
    return now - timedelta(days=days), now


def month_bounds(month: str) -> tuple[datetime, datetime]:
    start = compute._month_start(month)
    end = compute._month_start(compute.add_months(month, 1))
    return start, end


def attribution_key(month: str, lookback: int) -> str:
    return f"{month}|{lookback}"


def attribution_month(month: str, lookback: int) -> dict:
    start, end = month_bounds(month)
    return attribution(start=start, end=end, lookback_days=lookback)


def analytics_refresh_queue() -> None:
    """Queue a recomputation of every summary (the nightly task, now) for the worker, after the
    current transaction commits."""
    task_queue_on_commit("crm.analytics.refresh")


def _refresh_plan(*, full: bool, now: datetime) -> list[tuple[str, str, Callable[[], dict]]]:
    """(chart, key, computation) of every summary a refresh stores, in the order it stores them."""
    plan: list[tuple[str, str, Callable[[], dict]]] = [
        ("lifecycle", "all", lambda: compute.lifecycle_history(now=now)),
        ("cohorts", "all", lambda: compute.cohort_retention(now=now)),
        ("orders", "all", lambda: compute.order_months(now=now)),
        ("acquisition", "all", compute.acquisition_value),
    ]
    for days in FUNNEL_WINDOWS:
        start, end = funnel_window(days, now)
        plan.append(("funnel", f"{days}d", lambda start=start, end=end: funnel(start=start, end=end)))
    current = compute.month_key(now.astimezone(compute._tz()))
    months = ATTRIBUTION_MONTHS if full else ATTRIBUTION_RECENT_MONTHS
    for lookback in ATTRIBUTION_LOOKBACKS:
        for i in range(months):
            month = compute.add_months(current, -i)
            plan.append(
                (
                    "attribution",
                    attribution_key(month, lookback),
                    lambda m=month, lb=lookback: attribution_month(m, lb),
                )
            )
    return plan


def analytics_refresh(*, full: bool = False, now: datetime | None = None) -> dict[str, int]:
    """Recompute every summary; returns milliseconds per chart (logged, and shown by the benchmark).

    Every summary is stored with `computed_at` = `now`, the refresh's start, in its own transaction:
    `analytics_refresh_progress` counts them as they come."""
    now = now or timezone.now()
    timings: dict[str, int] = {}
    for chart, key, fn in _refresh_plan(full=full, now=now):
        with transaction.atomic():
            timings[f"{chart}:{key}"] = summary_store(
                chart=chart, key=key, compute_fn=fn, now=now
            ).duration_ms
    logger.info("analytics summaries refreshed", extra={"timings_ms": timings})
    return timings


@dataclass(frozen=True)
class RefreshProgress:
    done: int  # summaries stored by a refresh that started at or after `since`
    total: int  # summaries a refresh stores
    duration_ms: int  # the time they took to compute, so far


def analytics_refresh_progress(*, since: datetime, full: bool = False) -> RefreshProgress:
    """How far the refresh queued at `since` (by the dashboard's "Recompute now") has got."""
    fresh = DashboardSummary.objects.filter(computed_at__gte=since).aggregate(
        n=Count("pk"), ms=Sum("duration_ms")
    )
    total = len(_refresh_plan(full=full, now=since))
    return RefreshProgress(done=min(fresh["n"], total), total=total, duration_ms=fresh["ms"] or 0)
