"""Bought-together recommendations from order lines."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from crm.models import OrderLine, ProductAffinity
from crm.recommendations.selectors import recommendations_for_customer
from crm.recommendations.services import recommendations_refresh
from tests.factories import CustomerFactory, OrderFactory, ProductFactory

NOW = datetime(2026, 11, 20, tzinfo=UTC)


def buy(customer, *products, days_ago=10, status="paid", refunded_quantity=0):
    order = OrderFactory(
        customer=customer,
        placed_at=NOW - timedelta(days=days_ago),
        status=status,
        refunded_amount=Decimal("199.00") if status == "refunded" else Decimal(0),
    )
    for n, product in enumerate(products, start=1):
        OrderLine.objects.create(
            order=order,
            line_no=n,
            product=product,
            sku=product.sku,
            category=product.category,
            quantity=1,
            refunded_quantity=refunded_quantity,
            unit_price=product.price,
            line_total=product.price,
        )
    return order


@pytest.fixture
def shop(db):
    wipes, formula, bottle, cream, lipstick = ProductFactory.create_batch(5)
    customers = CustomerFactory.create_batch(8)
    # Baby shoppers buy wipes with formula, often with a bottle; beauty shoppers buy cream with lipstick.
    for c in customers[:4]:
        buy(c, wipes, formula)
    for c in customers[:3]:
        buy(c, bottle, days_ago=30)  # another order: baskets are per customer, not per order
    for c in customers[4:7]:
        buy(c, cream, lipstick)
    return {
        "wipes": wipes,
        "formula": formula,
        "bottle": bottle,
        "cream": cream,
        "lipstick": lipstick,
    }, customers


def related(product) -> list[tuple[int, int]]:
    return list(
        ProductAffinity.objects.filter(product=product)
        .order_by("-score")
        .values_list("related_product_id", "customers")
    )


def test_affinities_link_products_bought_by_the_same_customers(shop):
    p, _customers = shop
    result = recommendations_refresh(now=NOW)

    assert related(p["wipes"]) == [(p["formula"].pk, 4), (p["bottle"].pk, 3)]
    assert related(p["cream"]) == [(p["lipstick"].pk, 3)]
    wipes_formula = ProductAffinity.objects.get(product=p["wipes"], related_product=p["formula"])
    assert wipes_formula.score == pytest.approx(4 / (4 + 4 - 4))  # Jaccard of the two buyer sets
    wipes_bottle = ProductAffinity.objects.get(product=p["wipes"], related_product=p["bottle"])
    assert wipes_bottle.score == pytest.approx(3 / (4 + 3 - 3))
    assert result["pairs"] == ProductAffinity.objects.count()


def test_refunds_erased_customers_old_orders_and_single_pairs_do_not_count(shop):
    p, customers = shop
    loner = CustomerFactory()
    buy(loner, p["wipes"], p["lipstick"])  # one customer only: below the minimum support
    refunder = CustomerFactory()
    buy(refunder, p["cream"], p["bottle"], status="refunded")
    erased = CustomerFactory(erased_at=NOW)
    buy(erased, p["cream"], p["bottle"])
    old = CustomerFactory()
    buy(old, p["cream"], p["bottle"], days_ago=400)
    returned = CustomerFactory()
    buy(returned, p["cream"], p["bottle"], refunded_quantity=1)

    recommendations_refresh(now=NOW)

    assert p["lipstick"].pk not in dict(related(p["wipes"]))
    assert p["bottle"].pk not in dict(related(p["cream"]))


def test_refresh_replaces_the_previous_affinities(shop):
    p, customers = shop
    recommendations_refresh(now=NOW)
    OrderLine.objects.filter(product=p["bottle"]).delete()
    recommendations_refresh(now=NOW)
    assert related(p["wipes"]) == [(p["formula"].pk, 4)]


def test_a_customer_gets_what_goes_with_their_purchases_and_nothing_they_bought(
    shop, django_assert_max_num_queries
):
    p, customers = shop
    newcomer = CustomerFactory()
    buy(newcomer, p["wipes"])
    recommendations_refresh(now=NOW)

    with django_assert_max_num_queries(5):
        recommended = recommendations_for_customer(newcomer.pk, 2)
    assert recommended == [p["formula"], p["bottle"]]

    # Someone who bought wipes and formula is offered the bottle, then bestsellers to fill up.
    assert recommendations_for_customer(customers[3].pk, 3) == [p["bottle"], p["cream"], p["lipstick"]]


def test_customers_without_history_get_bestsellers_and_erased_ones_nothing(shop):
    p, _customers = shop
    recommendations_refresh(now=NOW)
    stranger = CustomerFactory()
    top = recommendations_for_customer(stranger.pk, 2)
    assert top == [p["wipes"], p["formula"]]  # bought by the most customers in the last 90 days
    erased = CustomerFactory(erased_at=NOW)
    assert recommendations_for_customer(erased.pk, 3) == []
    assert recommendations_for_customer(999_999, 3) == []
    assert recommendations_for_customer(stranger.pk, 0) == []
