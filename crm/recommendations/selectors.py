"""Recommendations for one customer, for message templates and the API."""

from __future__ import annotations

from django.db import connection
from django.db.models import Subquery, Sum

from crm.models import Customer, DashboardSummary, Order, OrderLine, Product, ProductAffinity
from crm.recommendations.services import POPULAR_DAYS


def recommendations_for_customer(customer_id: int, n: int = 5) -> list[Product]:
    """The customer's top `n` products they have never bought: the products most often bought together
    with what they bought (summed affinity scores), then, to fill up, the bestsellers of the last
    90 days. An erased or unknown customer gets nothing. A fixed number of queries (at most five)."""
    if n <= 0 or not Customer.objects.filter(pk=customer_id, erased_at__isnull=True).exists():
        return []
    bought = OrderLine.objects.filter(order__customer_id=customer_id, product_id__isnull=False).values(
        "product_id"
    )
    ranked = list(
        ProductAffinity.objects.filter(product_id__in=Subquery(bought))
        .exclude(related_product_id__in=Subquery(bought))
        .values("related_product_id")
        .annotate(total=Sum("score"))
        .order_by("-total", "related_product_id")
        .values_list("related_product_id", flat=True)[:n]
    )
    if len(ranked) < n:
        popular = DashboardSummary.objects.filter(chart="popular_products", key=f"{POPULAR_DAYS}d").first()
        if popular:
            owned = set(
                OrderLine.objects.filter(order__customer_id=customer_id).values_list("product_id", flat=True)
            )
            for product_id in popular.data.get("product_ids", []):
                if len(ranked) >= n:
                    break
                if product_id not in owned and product_id not in ranked:
                    ranked.append(product_id)
    products = Product.objects.in_bulk(ranked)
    return [products[pk] for pk in ranked if pk in products]


def recommendations_for_customers(customer_ids, n: int = 5) -> dict[int, list[Product]]:
    """`recommendations_for_customer` for many customers at once (message personalisation): the same
    ranking, in five queries whatever the number of customers. Erased and unknown customers get []."""
    ids = sorted({int(pk) for pk in customer_ids})
    found: dict[int, list[int]] = {pk: [] for pk in ids}
    if n <= 0 or not ids:
        return {pk: [] for pk in ids}
    live = set(Customer.objects.filter(pk__in=ids, erased_at__isnull=True).values_list("pk", flat=True))
    if not live:
        return {pk: [] for pk in ids}
    owned: dict[int, set] = {pk: set() for pk in live}
    for customer_id, product_id in (
        OrderLine.objects.filter(order__customer_id__in=live)
        .values_list("order__customer_id", "product_id")
        .distinct()
    ):
        owned[customer_id].add(product_id)
    placeholders = ", ".join(["%s"] * len(live))
    line, order, affinity = OrderLine._meta.db_table, Order._meta.db_table, ProductAffinity._meta.db_table
    with connection.cursor() as cursor:
        # Top n per customer by summed affinity, never a product the customer bought (window function:
        # PostgreSQL and SQLite >= 3.25 both have it).
        cursor.execute(
            f"""WITH bought AS (
                    SELECT DISTINCT o.customer_id, l.product_id FROM {line} l JOIN {order} o ON o.id = l.order_id
                     WHERE o.customer_id IN ({placeholders}) AND l.product_id IS NOT NULL),
                scored AS (
                    SELECT b.customer_id, a.related_product_id AS product_id, SUM(a.score) AS total
                      FROM bought b JOIN {affinity} a ON a.product_id = b.product_id
                     WHERE NOT EXISTS (SELECT 1 FROM bought x WHERE x.customer_id = b.customer_id
                                          AND x.product_id = a.related_product_id)
                     GROUP BY b.customer_id, a.related_product_id),
                ranked AS (
                    SELECT customer_id, product_id, ROW_NUMBER() OVER (
                           PARTITION BY customer_id ORDER BY total DESC, product_id) AS rn
                      FROM scored)
                SELECT customer_id, product_id FROM ranked WHERE rn <= %s ORDER BY customer_id, rn""",
            [*sorted(live), n],
        )
        for customer_id, product_id in cursor.fetchall():
            found[customer_id].append(product_id)
    popular_ids: list[int] = []
    if any(len(found[pk]) < n for pk in live):
        popular = DashboardSummary.objects.filter(chart="popular_products", key=f"{POPULAR_DAYS}d").first()
        popular_ids = list(popular.data.get("product_ids", [])) if popular else []
    for pk in live:
        ranked = found[pk]
        for product_id in popular_ids:
            if len(ranked) >= n:
                break
            if product_id not in owned[pk] and product_id not in ranked:
                ranked.append(product_id)
    products = Product.objects.in_bulk({p for ranked in found.values() for p in ranked})
    return {pk: [products[p] for p in found[pk] if p in products] if pk in live else [] for pk in ids}
