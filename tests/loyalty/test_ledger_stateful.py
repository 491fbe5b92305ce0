"""Hypothesis drives the real ledger (orders, refunds, releases, expiry, redemptions, adjustments,
replays) and a plain-Python model of lots side by side, and checks after every step that they agree:

    earned = available + pending + spent + expired + reversed (from lots) + settled (owed paid back)
    cached balances = sums of the entries = the lots' remaining points
    replaying a request adds nothing
"""

from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import transaction
from django.db.models import Sum
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from loyalty.models import LedgerEntry, LoyaltyAccount
from loyalty.services.accrual import order_refund_reverse, orders_accrue
from loyalty.services.ledger import InsufficientPoints, account_for_customer, points_adjust, points_redeem
from loyalty.services.lifecycle import points_expire_due, points_release_due
from loyalty.services.programme import add_months
from tests.loyalty.ledger_helpers import (
    T0,
    assert_consistent,
    customer_make,
    order_make,
    programme_setup,
    refund_make,
)

RETURN_DAYS, EXPIRY_MONTHS = 10, 2


@dataclass
class Lot:
    seq: int
    points: int
    remaining: int
    pending: bool
    available_at: object
    expires_at: object
    expired: int = 0


class LedgerMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self._atomic = transaction.atomic()
        self._atomic.__enter__()
        programme_setup(
            return_window_days=RETURN_DAYS,
            expiry_policy="rolling_months",
            expiry_months=EXPIRY_MONTHS,
            with_tiers=False,
        )
        self.customer = customer_make()
        self.account = account_for_customer(customer=self.customer)
        self.now = T0
        self.lots: list[Lot] = []
        self.orders = []  # (order, lot, refunded_so_far, written_off_so_far)
        self.owed = 0
        self.spent = self.expired = self.reversed = self.settled = 0
        self.seq = 0
        self.last_redeem = None

    def teardown(self):
        transaction.set_rollback(True)
        self._atomic.__exit__(None, None, None)

    # --- model helpers ---------------------------------------------------------------------------

    def _new_lot(self, points, pending, available_at):
        self.seq += 1
        lot = Lot(self.seq, points, points, pending, available_at, add_months(self.now, EXPIRY_MONTHS))
        self.lots.append(lot)
        return lot

    def _fifo(self, points):
        for lot in sorted(self.lots, key=lambda x: (x.expires_at, x.seq)):
            if lot.pending or lot.remaining == 0:
                continue
            n = min(lot.remaining, points)
            lot.remaining -= n
            points -= n
            if points == 0:
                break
        assert points == 0

    def _settle(self):
        n = min(self.owed, self.available)
        if n > 0:
            self._fifo(n)
            self.owed -= n
            self.settled += n

    @property
    def available(self):
        return sum(lot.remaining for lot in self.lots if not lot.pending)

    @property
    def pending(self):
        return sum(lot.remaining for lot in self.lots if lot.pending)

    # --- rules -----------------------------------------------------------------------------------

    @rule(amount=st.integers(1, 400))
    def place_order(self, amount):
        order = order_make(self.customer, total=Decimal(amount), placed_at=self.now, event=False)
        orders_accrue(order_ids=[order.pk], now=self.now)
        lot = self._new_lot(amount, True, self.now + timedelta(days=RETURN_DAYS))
        self.orders.append([order, lot, 0, 0])

    @rule(points=st.integers(1, 200))
    def bonus(self, points):
        self.seq += 0
        points_adjust(
            account=self.account,
            points=points,
            idempotency_key=f"adj-{self.seq}-{points}-{self.now}",
            reason="goodwill",
            now=self.now,
        )
        self._new_lot(points, False, self.now)
        self._settle()

    @rule(points=st.integers(1, 300))
    def redeem(self, points):
        key = f"red-{self.seq}-{points}-{self.now}-{len(self.lots)}-{self.spent}"
        if points > self.available:
            with pytest.raises(InsufficientPoints):
                points_redeem(
                    account=self.account, points=points, idempotency_key=key, reason="reward", now=self.now
                )
            return
        entry = points_redeem(
            account=self.account, points=points, idempotency_key=key, reason="reward", now=self.now
        )
        self._fifo(points)
        self.spent += points
        self.last_redeem = (key, points, entry.pk)

    @precondition(lambda self: self.last_redeem is not None)
    @rule()
    def replay_last_redemption(self):
        key, points, entry_id = self.last_redeem
        entry = points_redeem(
            account=self.account, points=points, idempotency_key=key, reason="reward", now=self.now
        )
        assert entry.pk == entry_id

    @precondition(lambda self: self.orders)
    @rule(data=st.data())
    def refund(self, data):
        item = data.draw(st.sampled_from(self.orders))
        order, lot, refunded, written_off = item
        total = int(order.total)
        if refunded >= total:
            return
        amount = data.draw(st.integers(1, total - refunded))
        order.refresh_from_db()
        refund_make(order, amount=amount, at=self.now, event=False)
        order_refund_reverse(order_id=order.pk, now=self.now)
        delta = amount  # one line, 1 point per CNY: the target is the refunded amount
        from_lot = min(lot.remaining, delta)
        lot.remaining -= from_lot
        rest = delta - from_lot
        write_off = min(rest, lot.expired - written_off)
        self.owed += rest - write_off
        self.reversed += from_lot
        item[2] += amount
        item[3] += write_off

    @rule(days=st.integers(1, 45))
    def advance(self, days):
        self.now += timedelta(days=days)
        points_release_due(now=self.now)
        released = False
        for lot in self.lots:
            if lot.pending and lot.available_at <= self.now:
                lot.pending = False
                released = released or lot.remaining > 0
        if released:  # owed points are settled from points as they become available, not from older ones
            self._settle()
        points_expire_due(now=self.now)
        for lot in self.lots:
            if not lot.pending and lot.remaining and lot.expires_at <= self.now:
                lot.expired += lot.remaining
                self.expired += lot.remaining
                lot.remaining = 0

    # --- invariants ------------------------------------------------------------------------------

    @invariant()
    def ledger_matches_model(self):
        account = LoyaltyAccount.objects.get(pk=self.account.pk)
        assert (account.available, account.pending, account.owed) == (self.available, self.pending, self.owed)
        assert_consistent(account)
        earned = sum(lot.points for lot in self.lots)
        assert (
            earned == self.available + self.pending + self.spent + self.expired + self.reversed + self.settled
        )

        def total(kind, column="points"):
            return LedgerEntry.objects.filter(account=account, kind=kind).aggregate(s=Sum(column))["s"] or 0

        db_earned = total("earn") + total("earn", "pending_delta") + total("adjust")
        assert db_earned == earned
        assert -total("redeem") == self.spent
        assert -total("expire") == self.expired
        assert -(total("reverse") + total("reverse", "pending_delta")) == self.reversed
        assert -total("settle") == self.settled


LedgerMachine.TestCase.settings = settings(
    max_examples=20,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@pytest.mark.django_db
def test_ledger_agrees_with_a_simple_model():
    from hypothesis.stateful import run_state_machine_as_test

    run_state_machine_as_test(LedgerMachine, settings=LedgerMachine.TestCase.settings)
