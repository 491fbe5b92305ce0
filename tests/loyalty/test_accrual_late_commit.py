"""The accrual reads orders from crm's event log through the commit-safe cursor: an order whose transaction
commits long after younger ones still earns, once, with two accrual workers racing (real threads, each
with its own connection and transaction)."""

import threading
import time
from datetime import timedelta

import pytest
from django.db import connection, transaction

from crm.models import Order
from loyalty.models import LedgerEntry
from loyalty.services.accrual import events_process
from tests.loyalty.ledger_helpers import (
    T0,
    account_of,
    assert_consistent,
    customer_make,
    order_make,
    programme_setup,
)

pytestmark = pytest.mark.django_db(transaction=True)

HOLD_SECONDS = 10
WAIT_SECONDS = 120
NOW = T0 + timedelta(hours=1)


def test_an_order_committed_late_earns_once_while_two_workers_accrue_the_younger_ones():
    programme_setup()
    customers = [customer_make() for _ in range(6)]
    slow_open, fast_done, stop = threading.Event(), threading.Event(), threading.Event()
    errors = []

    def guarded(target):
        def run():
            try:
                target()
            except BaseException as exc:  # noqa: BLE001 - handed back to the test
                errors.append(exc)
                stop.set()
            finally:
                connection.close()

        return threading.Thread(target=run)

    def slow_import():
        # Like a large order import: its first order is written (and gets the smallest event id) long
        # before the transaction commits.
        with transaction.atomic():
            order_make(customers[0], total="300", external_id="SLOW-1")
            slow_open.set()
            started = time.monotonic()
            assert fast_done.wait(WAIT_SECONDS)
            time.sleep(max(0.0, HOLD_SECONDS - (time.monotonic() - started)))
            order_make(customers[0], total="50", external_id="SLOW-2")

    def fast_orders():
        assert slow_open.wait(WAIT_SECONDS)
        for n in range(10):
            with transaction.atomic():
                order_make(customers[1 + n % 5], total=str(100 + n), external_id=f"FAST-{n}")
        fast_done.set()

    def accrual_worker():
        deadline = time.monotonic() + WAIT_SECONDS
        while not stop.is_set() and time.monotonic() < deadline:
            if events_process(now=NOW, batch_size=4).events == 0:
                time.sleep(0.05)

    threads = [guarded(slow_import), guarded(fast_orders), guarded(accrual_worker), guarded(accrual_worker)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline and not stop.is_set():
        earned = set(LedgerEntry.objects.filter(kind="earn").values_list("order_id", flat=True))
        if len(earned) == 12:
            break
        time.sleep(0.1)
    stop.set()
    for thread in threads:
        thread.join(WAIT_SECONDS)
    if errors:
        raise errors[0]

    orders = dict(Order.objects.values_list("external_id", "id"))
    assert len(orders) == 12
    per_order = {}
    for order_id in LedgerEntry.objects.filter(kind="earn").values_list("order_id", flat=True):
        per_order[order_id] = per_order.get(order_id, 0) + 1
    assert per_order == dict.fromkeys(orders.values(), 1), "every order earns once: no miss, no duplicate"
    assert account_of(customers[0]).pending == 350
    for customer in customers:
        assert_consistent(account_of(customer))
