"""Real threads against PostgreSQL: each thread has its own connection and transaction."""

import logging
import threading
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.db import connection

from crm.models import Customer, Event, Order, OrderLine, Product, Refund
from crm.services import bulk_sql
from crm.services.orders import OrderInput, OrderLineInput, RefundRejected, orders_ingest
from crm.services.refunds import refund_apply

pytestmark = pytest.mark.django_db(transaction=True)

PLACED = datetime(2026, 6, 18, 20, 0, tzinfo=UTC)  # 618


def race(*calls):
    """Start the calls together in threads; return each one's result or exception, in order."""
    barrier = threading.Barrier(len(calls))
    outcomes: list = [None] * len(calls)

    def run(n, call):
        try:
            barrier.wait()
            outcomes[n] = call()
        except Exception as exc:  # noqa: BLE001 - handed back to the test
            outcomes[n] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(n, call)) for n, call in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return outcomes


def batch(prefix, total="199.00"):
    return [
        OrderInput(
            external_id=f"{prefix}-{n:03d}",
            placed_at=PLACED,
            total=Decimal(total),
            channel="tmall",
            customer_external_id=f"{prefix}-C{n % 7}",
            lines=(
                OrderLineInput(sku=f"{prefix}-SKU{n % 5}", quantity=1, unit_price=Decimal(total)),
                OrderLineInput(sku="GIFT", quantity=1, unit_price=Decimal("0.00")),
            ),
        )
        for n in range(200)
    ]


@pytest.fixture(params=["copy", "generic"])
def write_path(request, monkeypatch):
    if request.param == "generic":
        monkeypatch.setattr(bulk_sql, "use_copy", lambda: False)
    return request.param


def test_two_batches_racing_on_the_same_new_orders_store_each_once(write_path, caplog):
    caplog.set_level(logging.INFO, logger="crm.services.orders")
    for rnd in range(5):
        prefix = f"R{rnd}"
        same = batch(prefix)
        a, b = race(lambda: orders_ingest(orders=same), lambda: orders_ingest(orders=same))  # noqa: B023

        assert not isinstance(a, Exception), a
        assert not isinstance(b, Exception), b
        assert not a.errors and not b.errors
        ids = {o.external_id for o in batch(prefix)}
        # Every id was created by exactly one of the two and seen unchanged by the other.
        assert set(a.created) | set(b.created) == ids and not set(a.created) & set(b.created)
        assert set(a.unchanged) | set(b.unchanged) == ids
        assert Order.objects.filter(external_id__startswith=f"{prefix}-").count() == 200
        assert OrderLine.objects.filter(order__external_id__startswith=f"{prefix}-").count() == 400
        assert (
            Event.objects.filter(
                type="order_placed", properties__order_external_id__startswith=f"{prefix}-"
            ).count()
            == 200
        )
        assert Customer.objects.filter(external_id__startswith=f"{prefix}-C").count() == 7
        assert a.customers_created + b.customers_created == 7
    # The threads really did collide inside the insert at least once (not merely one after the other):
    # on the customers both batches create, or on the orders.
    assert "lost" in caplog.text


def test_two_batches_of_known_customers_racing_on_the_same_new_orders_store_each_once(write_path, caplog):
    """With the customers and products already there nothing serialises the two batches before the order insert: the
    loser's ON CONFLICT waits for the winner, and it re-reads and reports those orders as unchanged."""
    caplog.set_level(logging.INFO, logger="crm.services.orders")
    for rnd in range(5):
        prefix = f"K{rnd}"
        for n in range(7):
            Customer.objects.create(external_id=f"{prefix}-C{n}")
        for sku in [f"{prefix}-SKU{n}" for n in range(5)] + ([] if rnd else ["GIFT"]):
            Product.objects.create(sku=sku, name=sku, price=Decimal("1.00"))
        same = batch(prefix)
        a, b = race(lambda: orders_ingest(orders=same), lambda: orders_ingest(orders=same))  # noqa: B023

        assert not isinstance(a, Exception), a
        assert not isinstance(b, Exception), b
        assert not a.errors and not b.errors
        ids = {o.external_id for o in same}
        assert set(a.created) | set(b.created) == ids and not set(a.created) & set(b.created)
        assert set(a.unchanged) | set(b.unchanged) == ids
        assert a.order_ids == b.order_ids and len(a.order_ids) == 200
        assert OrderLine.objects.filter(order__external_id__startswith=f"{prefix}-").count() == 400
        assert (
            Event.objects.filter(type="order_placed", customer__external_id__startswith=prefix).count() == 200
        )
        assert a.customers_created + b.customers_created == 0
    assert "lost" in caplog.text and "insert races" in caplog.text


def test_racing_batches_with_different_content_store_one_and_report_the_other_as_conflict(write_path):
    a, b = race(
        lambda: orders_ingest(orders=batch("X", "10.00")), lambda: orders_ingest(orders=batch("X", "20.00"))
    )

    assert not isinstance(a, Exception), a
    assert not isinstance(b, Exception), b
    assert len(a.created) + len(b.created) == 200
    conflicts = [e for e in a.errors + b.errors if e.code == "conflict"]
    assert len(conflicts) == 200
    stored = set(Order.objects.filter(external_id__startswith="X-").values_list("total", flat=True))
    assert len(stored) == 1  # each batch is all-or-nothing per order; one of the two won
    assert Event.objects.filter(type="order_placed").count() == 200


def test_concurrent_refunds_never_exceed_the_order_total():
    orders_ingest(orders=batch("F")[:1])
    order = Order.objects.get()

    outcomes = race(
        *[
            (
                lambda n=n: refund_apply(
                    order_external_id=order.external_id,
                    refund_external_id=f"RF-{n}",
                    amount=Decimal("80.00"),
                    refunded_at=PLACED,
                )
            )
            for n in range(4)
        ]
    )

    assert sum(isinstance(o, Refund) for o in outcomes) == 2
    assert sum(isinstance(o, RefundRejected) for o in outcomes) == 2
    order.refresh_from_db()
    assert order.refunded_amount == Decimal("160.00") and order.status == "partially_refunded"


def test_the_same_refund_sent_twice_at_once_is_applied_once():
    orders_ingest(orders=batch("G")[:1])
    order = Order.objects.get()

    def send():
        return refund_apply(
            order_external_id=order.external_id,
            refund_external_id="RF-TWIN",
            amount=Decimal("50.00"),
            refunded_at=PLACED,
        )

    a, b = race(send, send)

    assert isinstance(a, Refund) and isinstance(b, Refund) and a.pk == b.pk
    assert {a.replayed, b.replayed} == {True, False}
    order.refresh_from_db()
    assert order.refunded_amount == Decimal("50.00")
    assert Event.objects.filter(type="order_refunded").count() == 1


def test_an_order_import_locks_the_customers_it_points_at_until_it_commits():
    """With the foreign-key triggers off (orders_postgres), statement 2 locks each customer FOR KEY SHARE
    as PostgreSQL's own check would: a concurrent delete of the customer (a merge deletes the merged one)
    waits for the import to commit instead of leaving its orders pointing at nothing."""
    customer = Customer.objects.create(external_id="LOCKED-C1")
    imported = threading.Event()
    release = threading.Event()

    def import_and_hold():
        from django.db import transaction

        with transaction.atomic():
            result = orders_ingest(
                orders=[
                    OrderInput(
                        external_id="LOCK-1",
                        placed_at=PLACED,
                        total=Decimal("88.00"),
                        customer_id=customer.pk,
                    )
                ]
            )
            imported.set()
            release.wait(10)
        return result

    def delete_the_customer():
        from django.db import OperationalError, transaction

        imported.wait(10)
        try:
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute("SET LOCAL lock_timeout = '500ms'")
                cursor.execute("DELETE FROM crm_customer WHERE id = %s", [customer.pk])
                transaction.set_rollback(True)
            return "deleted"
        except OperationalError as exc:
            return exc
        finally:
            release.set()

    result, deleted = race(import_and_hold, delete_the_customer)

    assert not isinstance(result, Exception) and result.created == ["LOCK-1"], result
    assert "lock timeout" in str(deleted), deleted
    assert Order.objects.get(external_id="LOCK-1").customer_id == customer.pk
