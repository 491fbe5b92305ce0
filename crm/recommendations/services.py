"""Rebuilding the product affinities: one INSERT ... SELECT over the order lines.

Two products are related by the customers who bought both within the lookback (a basket is everything
a customer bought, not one order: most orders hold a single line, while a customer's purchases over a
year show what goes together). The score is the Jaccard index of the two products' buyer sets,
co / (buyers of A + buyers of B - co), which, unlike a raw co-count, does not recommend the bestseller
with everything. Each product keeps its `TOP_K` best; pairs bought together by fewer than
`MIN_CUSTOMERS` customers are noise and dropped. Customers with very large baskets (resellers, staff
test accounts) are left out: pairs grow with the square of a basket.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta

from django.db import connection, transaction
from django.utils import timezone

from crm.models import DashboardSummary, ProductAffinity

logger = logging.getLogger(__name__)

LOOKBACK_DAYS = 365
TOP_K = 20
MIN_CUSTOMERS = 2
MAX_BASKET = 50
POPULAR_DAYS = 90
POPULAR_KEEP = 100

_COUNTED_LINES = """
    SELECT DISTINCT o.customer_id, l.product_id
    FROM crm_orderline l
    JOIN crm_order o ON o.id = l.order_id
    JOIN crm_customer c ON c.id = o.customer_id
    WHERE l.product_id IS NOT NULL AND l.refunded_quantity < l.quantity
      AND o.status <> 'refunded' AND o.placed_at >= %s AND c.erased_at IS NULL
"""


@transaction.atomic
def recommendations_refresh(*, now: datetime | None = None) -> dict:
    """Rebuild every affinity and the popular-products fallback. Readers keep seeing the previous set
    until this transaction commits."""
    now = now or timezone.now()
    started = time.monotonic()
    table = connection.ops.quote_name(ProductAffinity._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {table}")
        cursor.execute(
            f"""
            WITH cp AS ({_COUNTED_LINES}),
            sizes AS (SELECT customer_id FROM cp GROUP BY customer_id HAVING COUNT(*) BETWEEN 2 AND %s),
            basket AS (SELECT cp.customer_id, cp.product_id FROM cp JOIN sizes ON sizes.customer_id = cp.customer_id),
            buyers AS (SELECT product_id, COUNT(*) AS n FROM cp GROUP BY product_id),
            pairs AS (
                SELECT a.product_id AS p, b.product_id AS q, COUNT(*) AS co
                FROM basket a JOIN basket b ON a.customer_id = b.customer_id AND a.product_id <> b.product_id
                GROUP BY a.product_id, b.product_id
                HAVING COUNT(*) >= %s
            ),
            scored AS (
                SELECT p, q, co, co * 1.0 / (bp.n + bq.n - co) AS score
                FROM pairs JOIN buyers bp ON bp.product_id = p JOIN buyers bq ON bq.product_id = q
            ),
            ranked AS (
                SELECT p, q, co, score, ROW_NUMBER() OVER (PARTITION BY p ORDER BY score DESC, co DESC, q) AS r
                FROM scored
            )
            INSERT INTO {table} (product_id, related_product_id, customers, score, computed_at)
            SELECT p, q, co, score, %s FROM ranked WHERE r <= %s
            """,
            [now - timedelta(days=LOOKBACK_DAYS), MAX_BASKET, MIN_CUSTOMERS, now, TOP_K],
        )
        pairs = cursor.rowcount
        cursor.execute(
            f"""
            SELECT product_id FROM ({_COUNTED_LINES}) cp
            GROUP BY product_id ORDER BY COUNT(*) DESC, product_id LIMIT %s
            """,
            [now - timedelta(days=POPULAR_DAYS), POPULAR_KEEP],
        )
        popular = [row[0] for row in cursor.fetchall()]
    DashboardSummary.objects.update_or_create(
        chart="popular_products",
        key=f"{POPULAR_DAYS}d",
        defaults={"data": {"product_ids": popular}, "computed_at": now, "duration_ms": 0},
    )
    seconds = round(time.monotonic() - started, 3)
    logger.info("product affinities rebuilt", extra={"pairs": pairs, "seconds": seconds})
    return {"pairs": pairs, "popular": len(popular), "seconds": seconds}
