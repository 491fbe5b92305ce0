"""Builders shared by the ledger, earn, expiry, tier, audit and backtest tests: a programme, orders with
lines as crm stores them, and the behaviour events crm writes for them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from crm.models import Event, Order, OrderLine
from loyalty.models import EarnRule, LoyaltyAccount, PointLot, ProgrammeSettings, Promotion, Tier
from loyalty.services.accrual import events_process_all
from loyalty.services.ledger import balances_from_entries
from tests.factories import CustomerFactory

T0 = datetime(2026, 3, 1, 2, 0, tzinfo=UTC)


def programme_setup(
    *,
    return_window_days=15,
    expiry_policy="rolling_months",
    expiry_months=12,
    tier_basis="spend",
    grace_days=30,
    with_tiers=True,
    rate=Decimal("1"),
):
    ProgrammeSettings.objects.update_or_create(
        pk=1,
        defaults={
            "return_window_days": return_window_days,
            "expiry_policy": expiry_policy,
            "expiry_months": expiry_months,
            "tier_basis": tier_basis,
            "tier_window_months": 12,
            "tier_review_months": 12,
            "downgrade_grace_days": grace_days,
        },
    )
    tiers = {}
    if with_tiers:
        for rank, (code, name, spend, points, mult) in enumerate(
            [
                ("member", "会员 Member", "0", 0, "1"),
                ("silver", "银卡 Silver", "1000", 1000, "1.25"),
                ("gold", "金卡 Gold", "5000", 5000, "1.5"),
                ("platinum", "铂金 Platinum", "20000", 20000, "2"),
            ]
        ):
            tiers[code] = Tier.objects.create(
                code=code,
                name=name,
                rank=rank,
                threshold_spend=Decimal(spend),
                threshold_points=points,
                earn_multiplier=Decimal(mult),
            )
    base = EarnRule.objects.create(name="1 point per CNY", kind="base", points_per_unit=rate)
    return tiers, base


def order_make(customer, *, total, lines=None, placed_at=None, external_id=None, event=True):
    """An order as crm stores it. `lines`: [(sku, category, quantity, line_total)], default one line."""
    placed_at = placed_at or T0
    total = Decimal(str(total))
    order = Order.objects.create(
        external_id=external_id or f"O-{Order.objects.count() + 1:06d}-{customer.pk}",
        customer=customer,
        placed_at=placed_at,
        total=total,
        fingerprint="x" * 64,
        channel="tmall",
    )
    for n, (sku, category, quantity, line_total) in enumerate(
        lines or [("SKU-1", "baby", 1, total)], start=1
    ):
        line_total = Decimal(str(line_total))
        OrderLine.objects.create(
            order=order,
            line_no=n,
            sku=sku,
            category=category,
            quantity=quantity,
            unit_price=line_total / quantity,
            line_total=line_total,
        )
    if event:
        # crm names the order by its external id (crm.services.orders._order_event_properties).
        event_write(customer, "order_placed", {"order_external_id": order.external_id}, placed_at)
    return order


def refund_make(order, *, amount=None, lines=None, at=None, event=True):
    """Refund `lines` ({line_no: quantity}) or an amount of `order`, as crm records it."""
    at = at or order.placed_at + timedelta(days=1)
    refunded = Decimal(0)
    for line_no, quantity in (lines or {}).items():
        line = order.lines.get(line_no=line_no)
        line.refunded_quantity += quantity
        line.save(update_fields=["refunded_quantity"])
        refunded += line.unit_price * quantity
    if amount is not None:
        refunded = Decimal(str(amount))
    order.refunded_amount += refunded
    order.status = "refunded" if order.refunded_amount >= order.total else "partially_refunded"
    order.save(update_fields=["refunded_amount", "status"])
    if event:
        props = {"order_external_id": order.external_id, "amount": str(refunded)}
        event_write(order.customer, "order_refunded", props, at)
    return order


def event_write(customer, type_, properties, occurred_at):
    return Event.objects.create(
        customer=customer,
        type=type_,
        properties=properties,
        occurred_at=occurred_at,
        received_at=occurred_at - timedelta(minutes=1),
    )


def process(now):
    return events_process_all(now=now)


def account_of(customer) -> LoyaltyAccount:
    return LoyaltyAccount.objects.get(customer=customer)


def assert_consistent(account: LoyaltyAccount):
    """Cached balances are the sums of the entries, and the lots hold exactly those balances."""
    account.refresh_from_db()
    sums = balances_from_entries(account_id=account.pk)
    assert (account.available, account.pending, account.owed) == (
        sums["available"],
        sums["pending"],
        sums["owed"],
    )
    lots = PointLot.objects.filter(account=account)
    assert sum(lot.remaining for lot in lots if lot.state == "available") == account.available
    assert sum(lot.remaining for lot in lots if lot.state == "pending") == account.pending
    assert account.available >= 0


def customer_make(**kwargs):
    return CustomerFactory(**kwargs)


__all__ = [
    "T0",
    "programme_setup",
    "order_make",
    "refund_make",
    "event_write",
    "process",
    "account_of",
    "assert_consistent",
    "customer_make",
    "Promotion",
]
