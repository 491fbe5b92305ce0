"""Recommendations for one customer, for message templates and the API."""

from __future__ import annotations

from django.db.models import Subquery, Sum

from crm.models import Customer, DashboardSummary, OrderLine, Product, ProductAffinity
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
