"""The update_attribute node writes through crm's audit history (crm.services.customers
.customers_attribute_set), set-based, as every other change to a customer does."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from crm.models import Customer
from crm.services.customers import customers_attribute_set
from journeys.models import EnrollmentStep
from tests.factories import CustomerFactory
from tests.journeys.engine_helpers import enter, published, run
from tests.journeys.graphs import chain, entry, node

# A fixed moment: the audit rows are found by it (nothing here waits on the clock).
T0 = datetime(2027, 3, 10, 2, 0, tzinfo=UTC)

pytestmark = pytest.mark.django_db


def test_the_node_leaves_an_audit_row_per_customer_it_changed_and_none_for_the_others(
    django_assert_max_num_queries,
):
    changing = [CustomerFactory(city="Beijing") for _ in range(20)]
    already = CustomerFactory(city="Shanghai")
    version = published(
        chain(entry(), node("u", "update_attribute", attribute="city", value="Shanghai"), node("x", "exit")),
        name="Move to Shanghai",
        now=T0,
    )
    enter(version, [*changing, already], now=T0)
    before = Customer.history.count()
    run(T0)
    assert set(Customer.objects.values_list("city", flat=True)) == {"Shanghai"}
    rows = Customer.history.filter(history_date=T0).order_by("id")
    assert Customer.history.count() - before == 20 == rows.count()
    assert {r.id for r in rows} == {c.pk for c in changing}
    assert {(r.history_type, r.city, r.history_change_reason) for r in rows} == {
        ("~", "Shanghai", "journey: Move to Shanghai (u)")
    }
    # The customer's page diffs the row against the one before: the change reads Beijing -> Shanghai.
    newest, older = Customer.history.filter(id=changing[0].pk).order_by("-history_date", "-history_id")[:2]
    assert [(c.field, c.old, c.new) for c in newest.diff_against(older).changes] == [
        ("city", "Beijing", "Shanghai")
    ]
    steps = dict(EnrollmentStep.objects.filter(node_id="u").values_list("enrollment__customer_id", "detail"))
    assert steps[already.pk] == {"changed": False} and steps[changing[0].pk] == {"changed": True}


def test_setting_an_attribute_on_many_customers_takes_the_same_few_queries_for_any_number(
    django_assert_num_queries,
):
    few = [CustomerFactory(region="North").pk for _ in range(3)]
    many = [CustomerFactory(region="North").pk for _ in range(60)]
    with django_assert_num_queries(5):  # savepoint, lock and read, update, history, release
        customers_attribute_set(
            customer_ids=few, attribute="region", value="East", change_reason="test", now=T0
        )
    with django_assert_num_queries(5):
        customers_attribute_set(
            customer_ids=many, attribute="region", value="East", change_reason="test", now=T0
        )


def test_identifiers_are_refused():
    with pytest.raises(ValueError, match="email"):
        customers_attribute_set(customer_ids=[1], attribute="email", value="a@b.cn", change_reason="x")
