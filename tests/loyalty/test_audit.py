"""loyalty_audit passes on a sound ledger and names each breach otherwise."""

from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command

from loyalty.models import LedgerEntry, LoyaltyAccount, PointLot
from loyalty.services.audit import ledger_audit
from loyalty.services.ledger import points_redeem
from loyalty.services.lifecycle import points_expire_due, points_release_due
from tests.loyalty.ledger_helpers import (
    T0,
    account_of,
    customer_make,
    order_make,
    process,
    programme_setup,
    refund_make,
)

pytestmark = pytest.mark.django_db


def _busy_ledger():
    programme_setup(return_window_days=5, expiry_months=3)
    customers = [customer_make() for _ in range(3)]
    orders = []
    for n, customer in enumerate(customers):
        orders.append(
            order_make(
                customer,
                total=f"{300 + n * 500}",
                lines=[("A", "x", 2, f"{200 + n * 500}"), ("B", "y", 1, "100")],
            )
        )
    process(T0 + timedelta(hours=1))
    points_release_due(now=T0 + timedelta(days=6))
    points_redeem(account=account_of(customers[0]), points=250, idempotency_key="r", reason="reward")
    refund_make(orders[0], lines={1: 2}, at=T0 + timedelta(days=7))
    refund_make(orders[1], lines={2: 1}, at=T0 + timedelta(days=7))
    process(T0 + timedelta(days=7, hours=1))
    points_expire_due(now=T0 + timedelta(days=200))
    return customers


def test_audit_passes_on_a_ledger_with_refunds_owed_points_and_expiry(capsys):
    customers = _busy_ledger()
    assert account_of(customers[0]).owed > 0
    assert ledger_audit() == []
    call_command("loyalty_audit")
    assert "checks passed" in capsys.readouterr().out


def test_audit_names_a_cached_balance_that_drifted_from_the_entries():
    customers = _busy_ledger()
    account = account_of(customers[1])
    LoyaltyAccount.objects.filter(pk=account.pk).update(available=account.available + 5)
    breaches = ledger_audit()
    assert {b.check for b in breaches} == {"cached_balance", "lots_match_balance"}
    assert all(b.subject == f"account {account.pk}" for b in breaches)
    with pytest.raises(CommandError, match="breach"):
        call_command("loyalty_audit")


def test_audit_names_a_lot_consumed_beyond_what_it_earned():
    _busy_ledger()
    lot = PointLot.objects.filter(consumed__gt=0).first()
    PointLot.objects.filter(pk=lot.pk).update(consumed=lot.consumed + 1, points=lot.points + 1)
    assert "lot_consumption" in {b.check for b in ledger_audit()}


def test_audit_names_an_order_whose_points_do_not_match_its_rules():
    _busy_ledger()
    entry = LedgerEntry.objects.filter(kind="earn", order__isnull=False).first()
    # Bypass the append-only trigger the way only a broken migration could.
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL session_replication_role = replica")  # user triggers off
        cursor.execute(
            "UPDATE loyalty_ledgerentry SET parts = jsonb_set(parts, '{promotion}', '7') WHERE id = %s",
            [entry.pk],
        )
        cursor.execute("SET LOCAL session_replication_role = origin")
    breaches = [b for b in ledger_audit() if b.check == "order_points"]
    assert breaches and entry.idempotency_key in breaches[0].subject
