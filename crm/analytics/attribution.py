"""Revenue attribution by channel (utm_source) and campaign (utm_campaign).

A touch is a tracked visit carrying a UTM source (a `page_view` event whose properties hold
utm_source / utm_campaign) or a message click (a `message_clicked` event, which campaigns will write
with the same properties, or with `channel` / `campaign_id`). An order's touches are its customer's
touches in the `lookback_days` before it was placed. Three models share the order's net revenue out:

- first touch: all of it to the earliest touch;
- last touch: all of it to the latest touch;
- linear: equal shares to every touch.

Orders with no touch go to the "(none)" row, so every model adds up to the same revenue.

One query per month of orders: the join walks the event index (customer_id, occurred_at) once per
order, so a month is computed in seconds and the nightly refresh stores each month as a summary
(services.py); the dashboard then adds months up.
"""

from __future__ import annotations

from datetime import datetime

from django.db import connection

from crm.analytics.sqlbits import json_text, minus_days, reporting_currency

TOUCH_EVENT_TYPES = ("page_view", "message_clicked")
NONE_SOURCE = "(none)"


def attribution(*, start: datetime, end: datetime, lookback_days: int) -> dict:
    """Attributed revenue of the orders placed in [start, end)."""
    source = (
        f"COALESCE(NULLIF({json_text('e.properties', 'utm_source')}, ''), "
        f"CASE WHEN e.type = 'message_clicked' THEN 'message:' || COALESCE({json_text('e.properties', 'channel')}, '') END)"
    )
    campaign = (
        f"COALESCE(NULLIF({json_text('e.properties', 'utm_campaign')}, ''), "
        f"{json_text('e.properties', 'campaign_id')}, '')"
    )
    types = ", ".join(["%s"] * len(TOUCH_EVENT_TYPES))
    sql = f"""
        WITH o AS (
            SELECT id, customer_id, placed_at, total - refunded_amount AS revenue
            FROM crm_order
            WHERE status <> 'refunded' AND currency = %s AND placed_at >= %s AND placed_at < %s
        ),
        t AS (
            SELECT o.id AS order_id, o.revenue, e.occurred_at, e.id AS event_id,
                   {source} AS source, {campaign} AS campaign
            FROM o JOIN crm_event e ON e.customer_id = o.customer_id
            WHERE e.type IN ({types})
              AND e.occurred_at <= o.placed_at AND e.occurred_at >= {minus_days("o.placed_at")}
        ),
        touches AS (SELECT * FROM t WHERE source IS NOT NULL),
        ranked AS (
            SELECT order_id, revenue, source, campaign,
                   ROW_NUMBER() OVER (PARTITION BY order_id ORDER BY occurred_at, event_id) AS first_rank,
                   ROW_NUMBER() OVER (PARTITION BY order_id ORDER BY occurred_at DESC, event_id DESC) AS last_rank,
                   COUNT(*) OVER (PARTITION BY order_id) AS touches
            FROM touches
        )
        SELECT source, campaign,
               SUM(CASE WHEN first_rank = 1 THEN revenue ELSE 0 END),
               SUM(CASE WHEN last_rank = 1 THEN revenue ELSE 0 END),
               SUM(revenue / touches),
               SUM(CASE WHEN first_rank = 1 THEN 1 ELSE 0 END),
               SUM(CASE WHEN last_rank = 1 THEN 1 ELSE 0 END),
               SUM(1.0 / touches)
        FROM ranked GROUP BY 1, 2
        UNION ALL
        SELECT %s, '', SUM(revenue), SUM(revenue), SUM(revenue), COUNT(*), COUNT(*), COUNT(*)
        FROM o WHERE NOT EXISTS (SELECT 1 FROM touches WHERE touches.order_id = o.id)
    """
    params = [reporting_currency(), start, end, *TOUCH_EVENT_TYPES, lookback_days, NONE_SOURCE]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    out = []
    for src, camp, first, last, linear, first_orders, last_orders, linear_orders in rows:
        if first_orders in (None, 0) and src == NONE_SOURCE:
            continue
        out.append(
            {
                "source": src,
                "campaign": camp or "",
                "first_touch": round(float(first or 0), 2),
                "last_touch": round(float(last or 0), 2),
                "linear": round(float(linear or 0), 2),
                "first_touch_orders": float(first_orders or 0),
                "last_touch_orders": float(last_orders or 0),
                "linear_orders": round(float(linear_orders or 0), 4),
            }
        )
    return {"rows": out, "lookback_days": lookback_days, "currency": reporting_currency()}


def merge_attribution(parts: list[dict]) -> list[dict]:
    """Add up monthly attribution rows by (source, campaign)."""
    keys = ["first_touch", "last_touch", "linear", "first_touch_orders", "last_touch_orders", "linear_orders"]
    merged: dict[tuple[str, str], dict] = {}
    for part in parts:
        for row in part["rows"]:
            target = merged.setdefault(
                (row["source"], row["campaign"]),
                {"source": row["source"], "campaign": row["campaign"], **dict.fromkeys(keys, 0.0)},
            )
            for k in keys:
                target[k] += row[k]
    rows = sorted(merged.values(), key=lambda r: -r["linear"])
    for r in rows:
        for k in keys:
            r[k] = round(r[k], 2 if "orders" not in k else 4)
    return rows
