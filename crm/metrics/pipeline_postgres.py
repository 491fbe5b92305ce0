"""The PostgreSQL pipeline: one GROUP BY over the orders, NumPy over columns, set-based writes.

    orders ──GROUP BY──▶ _metrics_agg ──binary COPY──▶ NumPy (fit, score) ──binary COPY──▶ _metrics_scores
    crm_customer ⟕ _metrics_agg ⟕ _metrics_scores ──INSERT … SELECT──▶ crm_event (stage changes)
                                                  ──INSERT … ON CONFLICT DO UPDATE──▶ crm_customermetrics

No transaction rows are held in Python: the fit works on per-customer columns. Runs inside the caller's
transaction (the temporary tables go with it)."""

from __future__ import annotations

import time
from datetime import date, datetime

from django.db import connection

from crm.clock import business_time_zone
from crm.metrics import lifecycle, rfm
from crm.metrics.compute import BuyerColumns, PipelineOutput, WarmStart, compute_scores
from crm.metrics.pgcopy import copy_in, copy_out
from crm.models import Customer, Event, Order
from crm.models.metrics import LIFECYCLE_STAGE_CHANGED, CustomerMetrics

EPOCH = date(1970, 1, 1)
WORK_MEM = "256MB"

_BUYER_COLUMNS = [
    ("customer_id", "int8"),
    ("order_count", "int8"),
    ("purchase_days", "int8"),
    ("first_day", "int8"),
    ("last_day", "int8"),
    ("total_value", "float8"),
    ("repeat_value", "float8"),
]
_SCORE_COLUMNS = [
    ("customer_id", "int8"),
    ("r", "int2"),
    ("f", "int2"),
    ("m", "int2"),
    ("segment", "int2"),
    ("stage", "int2"),
    ("tier", "int2"),
    ("sleeping", "bool"),
    ("p_alive", "float8"),
    ("expected", "float8"),
    ("clv", "float8"),
    ("next_days", "float8"),
    ("churn", "float8"),
]


def _sql_text_array(values: list[str]) -> str:
    return "ARRAY[" + ", ".join("'" + v.replace("'", "''") + "'" for v in values) + "]::text[]"


def run(
    *,
    as_of: date,
    cutoff: datetime,
    now: datetime,
    thresholds: lifecycle.Thresholds,
    warm_start: WarmStart | None = None,
    emit_events: bool = True,
) -> PipelineOutput:
    timings: dict[str, float] = {}
    mark = time.monotonic()

    def lap(name: str) -> None:
        nonlocal mark
        now_ = time.monotonic()
        timings[name] = round(now_ - mark, 3)
        mark = now_

    business_tz = str(business_time_zone())
    orders = Order._meta.db_table
    customers = Customer._meta.db_table
    metrics = CustomerMetrics._meta.db_table
    events = Event._meta.db_table
    with connection.cursor() as cursor:
        raw = cursor.cursor  # psycopg's own cursor, for COPY
        # ON COMMIT DROP cleans up after a transaction, but a caller's outer transaction (a test, a
        # management shell) may run several computations before it commits.
        cursor.execute("DROP TABLE IF EXISTS _metrics_agg, _metrics_scores")
        # A million-customer GROUP BY, window and hash joins spill to disk at the default 4 MB; this
        # session is the only big one of the night. SET LOCAL ends with the transaction.
        cursor.execute(f"SET LOCAL work_mem = '{WORK_MEM}'")
        # One pass over the orders up to the cut-off. A purchase day is a date in the business time zone
        # (crm/clock.py: an order at 07:00 Beijing time on the 12th is a purchase on the 12th, though it
        # is still the 11th in UTC); an order counts, for its net value, unless it was refunded in full
        # (a free order is still a purchase).
        cursor.execute(
            f"""
            CREATE TEMPORARY TABLE _metrics_agg ON COMMIT DROP AS
            WITH days AS (
                SELECT customer_id, (placed_at AT TIME ZONE %s)::date AS day,
                       count(*) AS orders, sum(total - refunded_amount) AS value
                FROM {orders}
                WHERE placed_at < %s AND (refunded_amount < total OR total = 0)
                GROUP BY 1, 2
            ), firsts AS (
                SELECT *, min(day) OVER (PARTITION BY customer_id) AS first_day FROM days
            )
            SELECT customer_id,
                   sum(orders)::bigint AS order_count,
                   count(*)::bigint AS purchase_days,
                   min(day) AS first_day,
                   max(day) AS last_day,
                   sum(value) AS total_value,
                   coalesce(sum(value) FILTER (WHERE day > first_day), 0) AS repeat_value
            FROM firsts
            GROUP BY customer_id
            """,
            [business_tz, cutoff],
        )
        cursor.execute("ANALYZE _metrics_agg")
        lap("aggregate")
        cols = copy_out(
            raw,
            "SELECT customer_id, order_count, purchase_days, (first_day - DATE '1970-01-01')::bigint, "
            "(last_day - DATE '1970-01-01')::bigint, total_value::float8, repeat_value::float8 "
            "FROM _metrics_agg",
            _BUYER_COLUMNS,
        )
        buyers = BuyerColumns(**cols)
        lap("read")
        result = compute_scores(
            buyers, as_of_day=(as_of - EPOCH).days, thresholds=thresholds, warm_start=warm_start
        )
        lap("fit_and_score")
        s = result.scores
        cursor.execute(
            """
            CREATE TEMPORARY TABLE _metrics_scores (
                customer_id bigint NOT NULL, r smallint NOT NULL, f smallint NOT NULL,
                m smallint NOT NULL, segment smallint NOT NULL, stage smallint NOT NULL,
                tier smallint NOT NULL, sleeping boolean NOT NULL, p_alive float8 NOT NULL,
                expected float8 NOT NULL, clv float8 NOT NULL, next_days float8 NOT NULL,
                churn float8 NOT NULL
            ) ON COMMIT DROP
            """
        )
        copy_in(
            raw,
            "_metrics_scores",
            _SCORE_COLUMNS,
            {
                "customer_id": s.customer_id,
                "r": s.r,
                "f": s.f,
                "m": s.m,
                "segment": s.segment,
                "stage": s.stage,
                "tier": s.tier,
                "sleeping": s.sleeping_high_value,
                "p_alive": s.p_alive,
                "expected": s.expected_purchases,
                "clv": s.clv,
                "next_days": s.next_purchase_days,
                "churn": s.churn_risk,
            },
        )
        cursor.execute("ANALYZE _metrics_scores")
        lap("write_scores")

        stages = _sql_text_array(lifecycle.STAGE_CODES)
        segments = _sql_text_array(rfm.SEGMENT_CODES)
        tiers = _sql_text_array(lifecycle.TIER_CODES)
        params = {"as_of": as_of, "now": now, "business_tz": business_tz}
        # Every customer's new row, once: the stage-change events and the write below both read it.
        cursor.execute(
            f"""
            CREATE TEMPORARY TABLE _metrics_new ON COMMIT DROP AS
            SELECT c.id AS customer_id, c.erased_at IS NULL AS reachable,
                   %(as_of)s::date AS as_of, %(now)s::timestamptz AS computed_at,
                   coalesce(a.order_count, 0)::integer AS order_count,
                   a.first_day AS first_order_date, a.last_day AS last_order_date,
                   coalesce(a.total_value, 0) AS total_value,
                   round(a.total_value / a.order_count, 2) AS average_order_value,
                   CASE WHEN a.purchase_days > 1
                        THEN (a.last_day - a.first_day)::float8 / (a.purchase_days - 1) END
                       AS purchase_cycle_days,
                   %(as_of)s::date - a.last_day AS days_since_last_order,
                   coalesce(a.purchase_days - 1, 0)::integer AS frequency,
                   coalesce(a.last_day - a.first_day, 0) AS recency_days,
                   coalesce(%(as_of)s::date - a.first_day, 0) AS tenure_days,
                   CASE WHEN a.purchase_days > 1
                        THEN round(a.repeat_value / (a.purchase_days - 1), 2) ELSE 0 END AS monetary_value,
                   s.r AS r_score, s.f AS f_score, s.m AS m_score,
                   coalesce(({segments})[s.segment + 1], '') AS rfm_segment,
                   n.stage AS lifecycle_stage,
                   -- For a customer's first row; an existing row keeps its date until the stage changes.
                   CASE n.stage WHEN 'new' THEN a.first_day
                                WHEN 'prospect' THEN least((c.created_at AT TIME ZONE %(business_tz)s)::date, %(as_of)s)
                                ELSE %(as_of)s END AS stage_since,
                   nullif(s.p_alive, 'NaN') AS p_alive,
                   nullif(s.expected, 'NaN') AS expected_purchases_90d,
                   round(nullif(s.clv, 'NaN')::numeric, 2) AS predicted_clv_365d,
                   %(as_of)s::date + nullif(s.next_days, 'NaN')::integer AS expected_next_purchase_date,
                   s.churn AS churn_risk,
                   coalesce(({tiers})[s.tier + 1], 'none') AS value_tier,
                   coalesce(s.sleeping, false) AS sleeping_high_value
            FROM {customers} c
            LEFT JOIN _metrics_agg a ON a.customer_id = c.id
            LEFT JOIN _metrics_scores s ON s.customer_id = c.id
            CROSS JOIN LATERAL (SELECT coalesce(({stages})[s.stage + 1], 'prospect') AS stage) n
            """,
            params,
        )
        cursor.execute("ANALYZE _metrics_new")
        lap("assemble")

        # Stage changes are compared with the stored stage before it is overwritten. A customer without a
        # metrics row counts as a prospect; a recomputation for an earlier date does not announce changes.
        stage_changes = 0
        if emit_events:
            cursor.execute(
                f"""
                INSERT INTO {events} (customer_id, type, properties, occurred_at, channel, received_at)
                SELECT n.customer_id, %(type)s,
                       jsonb_build_object('from', coalesce(old.lifecycle_stage, 'prospect'),
                                          'to', n.lifecycle_stage, 'as_of', %(as_of_text)s),
                       %(occurred_at)s, '', %(now)s
                FROM _metrics_new n
                LEFT JOIN {metrics} old ON old.customer_id = n.customer_id
                WHERE n.reachable
                  AND n.lifecycle_stage <> coalesce(old.lifecycle_stage, 'prospect')
                  AND (old.as_of IS NULL OR old.as_of <= %(as_of)s)
                ORDER BY n.customer_id
                """,
                {
                    **params,
                    "type": LIFECYCLE_STAGE_CHANGED,
                    "as_of_text": as_of.isoformat(),
                    "occurred_at": min(cutoff, now),
                },
            )
            stage_changes = cursor.rowcount
        lap("events")

        customers_written = _write(cursor, metrics, params)
        cursor.execute("DROP TABLE _metrics_agg, _metrics_scores, _metrics_new")
        lap("write")
    return PipelineOutput(
        result=result, timings=timings, customers=customers_written, stage_changes=stage_changes
    )


_COLUMNS = [
    "as_of",
    "computed_at",
    "order_count",
    "first_order_date",
    "last_order_date",
    "total_value",
    "average_order_value",
    "purchase_cycle_days",
    "days_since_last_order",
    "frequency",
    "recency_days",
    "tenure_days",
    "monetary_value",
    "r_score",
    "f_score",
    "m_score",
    "rfm_segment",
    "lifecycle_stage",
    "p_alive",
    "expected_purchases_90d",
    "predicted_clv_365d",
    "expected_next_purchase_date",
    "churn_risk",
    "value_tier",
    "sleeping_high_value",
]


def _write(cursor, metrics: str, params: dict) -> int:
    """Replace every customer's row with its new one; `stage_since` moves only when the stage changes.

    An UPDATE … FROM (a hash join in physical order) and an INSERT of the customers without a row.
    The table's fillfactor of 50 (migration 0006) leaves room on every page for the new version of each
    row, so the nightly update is mostly HOT: no index entries are written unless the stage, segment or
    sleeping flag changed, which makes it faster than INSERT … ON CONFLICT DO UPDATE at a million rows (see
    BENCHMARKS.md, compute_metrics). The rows the UPDATE did not find are then inserted with ON CONFLICT DO
    NOTHING (the primary key skips the ones it did), not with a NOT EXISTS anti-join on the table being
    written: after the table was emptied its statistics say 0 pages, the planner picks a nested loop over a
    sequential scan, and each probe rescans the rows this very INSERT has added: quadratic, and at a
    million rows it did not finish (see BENCHMARKS.md, compute_metrics)."""
    columns = ", ".join(_COLUMNS)
    updates = ", ".join(f"{c} = n.{c}" for c in _COLUMNS)
    cursor.execute(
        f"""
        UPDATE {metrics} m SET {updates},
            stage_since = CASE WHEN m.lifecycle_stage = n.lifecycle_stage THEN m.stage_since ELSE n.as_of END
        FROM _metrics_new n
        WHERE m.customer_id = n.customer_id
        """,
        params,
    )
    updated = cursor.rowcount
    cursor.execute(
        f"""
        INSERT INTO {metrics} (customer_id, {columns}, stage_since)
        SELECT customer_id, {columns}, stage_since FROM _metrics_new n
        ON CONFLICT (customer_id) DO NOTHING
        """,
        params,
    )
    return updated + cursor.rowcount
