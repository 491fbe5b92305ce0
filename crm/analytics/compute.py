"""Set-based computations behind the customer and order charts. Each function runs a few aggregate
queries and returns a JSON-ready dict; `services.py` stores the results as dashboard summaries."""

from __future__ import annotations

import re
from collections import defaultdict
from datetime import date, datetime
from decimal import Decimal

from django.db import connection
from django.db.models import Count
from django.utils import timezone

from crm.analytics.sqlbits import month_of, month_param, reporting_currency
from crm.models import Customer, CustomerMetrics, LifecycleStage, MetricsRun
from crm.models.metrics import LIFECYCLE_STAGE_CHANGED

MONTH_RE = re.compile(r"^\d{4}-\d{2}$")


def month_key(d: date | datetime) -> str:
    return f"{d.year:04d}-{d.month:02d}"


def months_between(first: str, last: str) -> list[str]:
    y, m = int(first[:4]), int(first[5:])
    out = []
    while f"{y:04d}-{m:02d}" <= last:
        out.append(f"{y:04d}-{m:02d}")
        y, m = (y + 1, 1) if m == 12 else (y, m + 1)
    return out


def add_months(month: str, n: int) -> str:
    y, m = int(month[:4]), int(month[5:]) - 1 + n
    return f"{y + m // 12:04d}-{m % 12 + 1:02d}"


def _fetch(sql: str, params: list) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


# --- Lifecycle stages over time ---------------------------------------------------------------------


def lifecycle_history(*, months: int = 12, now: datetime | None = None) -> dict:
    """Customers per lifecycle stage at the end of each of the last `months` months.

    Read backwards from today's stages: a `lifecycle_stage_changed` event (from, to, as_of) moved one
    customer from `from` to `to`, so undoing the changes dated after a month gives the stages at that
    month's end. This stays right although the first metrics computation (the baseline) announced no
    changes. It describes today's customers: erased customers (whose events no longer point at anyone)
    and customers created after a month are left out of that month."""
    now = now or timezone.now()
    stages = [s for s, _label in LifecycleStage.choices]
    current = dict.fromkeys(stages, 0)
    rows = (
        CustomerMetrics.objects.filter(customer__erased_at__isnull=True)
        .values_list("lifecycle_stage")
        .annotate(n=Count("pk"))
        .order_by()
    )
    for stage, n in rows:
        current[stage] = current.get(stage, 0) + n
    without_row = Customer.objects.filter(erased_at__isnull=True, metrics__isnull=True).count()
    current[LifecycleStage.PROSPECT] += without_row  # not computed yet: a prospect, as the metrics say

    last = month_key(now.astimezone(_tz()))
    series_months = [add_months(last, -i) for i in range(months - 1, -1, -1)]
    # Net flows per month of as_of: flows[month][stage] = arrivals - departures.
    month_sql = f"COALESCE(substr({_json('properties', 'as_of')}, 1, 7), {month_of('occurred_at')})"
    flows: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for month, from_stage, to_stage, n in _fetch(
        f"""
        SELECT {month_sql} AS month, {_json("properties", "from")}, {_json("properties", "to")}, COUNT(*)
        FROM crm_event
        WHERE type = %s AND customer_id IS NOT NULL AND occurred_at >= %s
        GROUP BY 1, 2, 3
        """,
        [month_param(), LIFECYCLE_STAGE_CHANGED, _month_start(series_months[0])],
    ):
        if month and MONTH_RE.match(month):
            flows[month][to_stage] += n
            flows[month][from_stage] -= n
    created = dict(
        _fetch(
            f"SELECT {month_of('created_at')}, COUNT(*) FROM crm_customer WHERE erased_at IS NULL AND created_at >= %s GROUP BY 1",
            [month_param(), _month_start(series_months[0])],
        )
    )
    series = {s: [0] * len(series_months) for s in stages}
    stock = dict(current)
    newer_customers = 0
    # Walk back from the current month: the stock at the end of month M excludes the flows dated after M.
    for index in range(len(series_months) - 1, -1, -1):
        month = series_months[index]
        for stage in stages:
            value = stock.get(stage, 0) - (newer_customers if stage == LifecycleStage.PROSPECT else 0)
            series[stage][index] = max(value, 0)
        for stage, delta in flows.get(month, {}).items():
            stock[stage] = stock.get(stage, 0) - delta
        newer_customers += created.get(month, 0)
    first_run = (
        MetricsRun.objects.filter(status=MetricsRun.Status.DONE)
        .order_by("as_of")
        .values_list("as_of", flat=True)
        .first()
    )
    return {
        "months": series_months,
        # Codes only: lifecycle_labelled adds the labels in the language of whoever reads the summary.
        "stages": [{"key": s} for s in LifecycleStage.values],
        "series": series,
        "tracked_since": first_run.isoformat() if first_run else None,
    }


def lifecycle_labelled(data: dict) -> dict:
    """`data` (lifecycle_history()'s, perhaps stored with English labels) with each stage's label in the
    current language, from its key."""
    labels = dict(LifecycleStage.choices)
    stages = [
        {**stage, "label": str(labels.get(stage["key"], stage["key"]))} for stage in data.get("stages", [])
    ]
    return {**data, "stages": stages}


# --- Orders: cohorts, repeat purchase, average order value ---------------------------------------------


def _counted_orders_sql() -> str:
    """Orders that count in revenue figures: not fully refunded, in the reporting currency."""
    return "status <> 'refunded' AND currency = %s"


def cohort_retention(*, cohorts: int = 12, now: datetime | None = None) -> dict:
    """Monthly cohorts by first order: their size and the share of them ordering again in each later
    month (month 0 is 100% by definition)."""
    now = now or timezone.now()
    last = month_key(now.astimezone(_tz()))
    first_cohort = add_months(last, -(cohorts - 1))
    rows = _fetch(
        f"""
        WITH buyer_months AS (
            SELECT customer_id, {month_of("placed_at")} AS month
            FROM crm_order WHERE {_counted_orders_sql()}
            GROUP BY 1, 2
        ),
        firsts AS (SELECT customer_id, MIN(month) AS cohort FROM buyer_months GROUP BY 1)
        SELECT f.cohort, b.month, COUNT(*)
        FROM buyer_months b JOIN firsts f ON f.customer_id = b.customer_id
        WHERE f.cohort >= %s
        GROUP BY 1, 2
        """,
        [month_param(), reporting_currency(), first_cohort],
    )
    active: dict[str, dict[str, int]] = defaultdict(dict)
    for cohort, month, n in rows:
        active[cohort][month] = n
    out = []
    for cohort in months_between(first_cohort, last):
        size = active.get(cohort, {}).get(cohort, 0)
        ages = len(months_between(cohort, last))
        counts = [active.get(cohort, {}).get(add_months(cohort, k), 0) for k in range(ages)]
        out.append(
            {
                "month": cohort,
                "size": size,
                "active": counts,
                "retention": [round(c / size, 4) if size else None for c in counts],
            }
        )
    return {"cohorts": out, "currency": reporting_currency()}


def order_months(*, months: int = 12, now: datetime | None = None) -> dict:
    """Per month: orders, revenue, buyers, returning buyers (who had ordered in an earlier month),
    average order value and repeat-purchase rate; and the all-time share of buyers with two or more
    orders."""
    now = now or timezone.now()
    last = month_key(now.astimezone(_tz()))
    first = add_months(last, -(months - 1))
    rows = _fetch(
        f"""
        WITH o AS (
            SELECT customer_id, {month_of("placed_at")} AS month, total - refunded_amount AS revenue
            FROM crm_order WHERE {_counted_orders_sql()}
        ),
        firsts AS (SELECT customer_id, MIN(month) AS first_month FROM o GROUP BY 1),
        per_buyer AS (
            SELECT o.month, o.customer_id, COUNT(*) AS orders, SUM(o.revenue) AS revenue,
                   MIN(CASE WHEN f.first_month < o.month THEN 1 ELSE 0 END) AS is_returning
            FROM o JOIN firsts f ON f.customer_id = o.customer_id
            WHERE o.month >= %s
            GROUP BY 1, 2
        )
        SELECT month, SUM(orders), SUM(revenue), COUNT(*), SUM(is_returning)
        FROM per_buyer GROUP BY 1
        """,
        [month_param(), reporting_currency(), first],
    )
    by_month = {r[0]: r for r in rows}
    series_months = months_between(first, last)
    orders, revenue, buyers, returning, aov, repeat_rate = [], [], [], [], [], []
    for month in series_months:
        _m, n_orders, rev, n_buyers, n_returning = by_month.get(month, (month, 0, 0, 0, 0))
        n_orders, n_buyers, n_returning = int(n_orders or 0), int(n_buyers or 0), int(n_returning or 0)
        rev = Decimal(rev or 0)
        orders.append(n_orders)
        revenue.append(float(rev))
        buyers.append(n_buyers)
        returning.append(n_returning)
        aov.append(float(round(rev / n_orders, 2)) if n_orders else None)
        repeat_rate.append(round(n_returning / n_buyers, 4) if n_buyers else None)
    ((repeat_buyers, all_buyers),) = _fetch(
        f"""
        SELECT COALESCE(SUM(CASE WHEN n >= 2 THEN 1 ELSE 0 END), 0), COUNT(*)
        FROM (SELECT customer_id, COUNT(*) AS n FROM crm_order WHERE {_counted_orders_sql()} GROUP BY 1) t
        """,
        [reporting_currency()],
    )
    return {
        "months": series_months,
        "orders": orders,
        "revenue": revenue,
        "buyers": buyers,
        "returning_buyers": returning,
        "average_order_value": aov,
        "repeat_purchase_rate": repeat_rate,
        "overall_repeat_purchase_rate": round(repeat_buyers / all_buyers, 4) if all_buyers else None,
        "currency": reporting_currency(),
    }


# --- Acquisition: value of the customers each channel brought, per month of sign-up -------------------


def acquisition_value() -> dict:
    """Per acquisition channel and sign-up month: customers acquired, their net revenue to date and
    their predicted value over the next 365 days (the metrics' Gamma-Gamma × BG/NBD figure). The LTV and
    LTV:CAC charts divide these by the customers and weigh in the acquisition costs (ltv.py)."""
    rows = _fetch(
        f"""
        SELECT c.acquisition_channel, {month_of("c.created_at")}, COUNT(*),
               COALESCE(SUM(s.revenue), 0), COALESCE(SUM(m.predicted_clv_365d), 0),
               COALESCE(SUM(CASE WHEN s.revenue IS NOT NULL THEN 1 ELSE 0 END), 0)
        FROM crm_customer c
        LEFT JOIN (
            SELECT customer_id, SUM(total - refunded_amount) AS revenue
            FROM crm_order WHERE {_counted_orders_sql()} GROUP BY 1
        ) s ON s.customer_id = c.id
        LEFT JOIN crm_customermetrics m ON m.customer_id = c.id
        WHERE c.erased_at IS NULL
        GROUP BY 1, 2
        """,
        [month_param(), reporting_currency()],
    )
    return {
        "rows": [
            {
                "channel": channel or "",
                "month": month,
                "customers": int(n),
                "buyers": int(buyers),
                "revenue": float(revenue),
                "predicted_365d": float(predicted),
            }
            for channel, month, n, revenue, predicted, buyers in rows
        ],
        "currency": reporting_currency(),
    }


def _tz():
    from crm.segments.fields import segment_time_zone

    return segment_time_zone()


def _month_start(month: str) -> datetime:
    return datetime(int(month[:4]), int(month[5:]), 1, tzinfo=_tz())


def _json(column: str, key: str) -> str:
    from crm.analytics.sqlbits import json_text

    return json_text(column, key)
