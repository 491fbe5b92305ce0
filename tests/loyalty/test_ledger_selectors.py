"""The hot member read (`account_summary`, behind GET /api/v1/me/points) costs a fixed number of queries."""

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from loyalty.selectors import account_summary
from loyalty.services.programme import ruleset_load
from tests.loyalty.ledger_helpers import T0, account_of, customer_make, order_make, process, programme_setup

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("orders", [1, 12])
def test_account_summary_query_count_does_not_grow_with_the_account(orders):
    programme_setup()
    customer = customer_make()
    for n in range(orders):
        order_make(customer, total="150", placed_at=T0 + timedelta(minutes=n))
    process(T0 + timedelta(hours=1))
    account = account_of(customer)
    ruleset = ruleset_load()
    with CaptureQueriesContext(connection) as queries:
        summary = account_summary(account=account, now=T0 + timedelta(hours=2), ruleset=ruleset)
    assert summary.pending == 150 * orders
    assert len(queries) == 3
