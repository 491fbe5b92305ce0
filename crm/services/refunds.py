"""Refunds against stored orders, idempotent on the refund's external id: the same id with the same
payload returns the first refund, with a different payload it is refused (`RefundConflict`). The errors
are the orders service's (crm.services.orders), which the API maps to responses."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from decimal import Decimal

from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from crm.event_types import ORDER_REFUNDED
from crm.models import Order, OrderLine, OrderStatus, Refund
from crm.services.event_log import NewEvent, events_append
from crm.services.orders import (
    CLOCK_SKEW,
    OrderNotFound,
    RefundConflict,
    RefundRejected,
    money_parse,
    payload_fingerprint,
    utc_iso,
)


def refund_fingerprint(
    *,
    order_external_id: str,
    amount: Decimal | str,
    refunded_at: datetime | str,
    reason: str,
    lines: Iterable[tuple],
) -> str:
    """The fingerprint `refund_apply` stores; lines as asked: (line_no or None, sku or "", quantity)."""
    when = refunded_at if isinstance(refunded_at, str) else utc_iso(refunded_at)
    return payload_fingerprint(
        (order_external_id, str(amount), when, reason, tuple(tuple(line) for line in lines))
    )


def _refund_lines(lines: Iterable[dict]) -> list[dict]:
    normalised = []
    for n, line in enumerate(lines):
        if not isinstance(line, dict):
            raise RefundRejected(f"lines[{n}]", _("Each refunded line must be an object."))
        quantity = line.get("quantity")
        if not isinstance(quantity, int) or isinstance(quantity, bool) or quantity < 1:
            raise RefundRejected(
                f"lines[{n}].quantity", _("The quantity must be a whole number of at least 1.")
            )
        line_no, sku = line.get("line_no"), (line.get("sku") or "").strip()
        if line_no is None and not sku:
            raise RefundRejected(f"lines[{n}]", _("Name the line by line_no or sku."))
        if line_no is not None and (not isinstance(line_no, int) or isinstance(line_no, bool)):
            raise RefundRejected(f"lines[{n}].line_no", _("line_no must be a whole number."))
        normalised.append({"line_no": line_no, "sku": sku, "quantity": quantity})
    return normalised


def _replay(refund: Refund, fingerprint: str) -> Refund:
    if refund.fingerprint != fingerprint:
        raise RefundConflict(
            "refund_external_id",
            _("Refund %(id)s was already applied with different content; a refund id cannot be reused.")
            % {"id": refund.external_id},
        )
    refund.replayed = True
    return refund


def refund_apply(
    *,
    order_external_id: str,
    refund_external_id: str,
    amount: Decimal,
    refunded_at: datetime,
    reason: str = "",
    lines: Sequence[dict] = (),
    now: datetime | None = None,
) -> Refund:
    """Refund part or all of an order: `amount` of money and, optionally, quantities of its lines
    (`{"line_no": 2, "quantity": 1}` or `{"sku": "...", "quantity": 1}`).

    Idempotent on `refund_external_id`: the same id with the same payload returns the first refund (with
    `.replayed = True`); with a different payload it raises `RefundConflict`. Raises `OrderNotFound` or
    `RefundRejected` (over the remaining amount or quantity, bad input). Moves the order from paid to
    partially_refunded to refunded and writes an `order_refunded` event."""
    now = now or timezone.now()
    refund_external_id = (refund_external_id or "").strip()
    order_external_id = (order_external_id or "").strip()
    if not refund_external_id or len(refund_external_id) > 100:
        raise RefundRejected("refund_external_id", _("The refund id must be 1 to 100 characters."))
    amount, problem = money_parse(amount, allow_zero=False)
    if problem:
        raise RefundRejected("amount", problem)
    if not isinstance(refunded_at, datetime) or timezone.is_naive(refunded_at):
        raise RefundRejected("refunded_at", _("The refund time must be a date and time with a time zone."))
    if refunded_at > now + CLOCK_SKEW:
        raise RefundRejected("refunded_at", _("The refund time is in the future."))
    reason = (reason or "").strip()
    if len(reason) > 300:
        raise RefundRejected("reason", _("Longer than %(limit)d characters.") % {"limit": 300})
    wanted_lines = _refund_lines(lines)
    fingerprint = refund_fingerprint(
        order_external_id=order_external_id,
        amount=amount,
        refunded_at=refunded_at,
        reason=reason,
        lines=[(ln["line_no"], ln["sku"], ln["quantity"]) for ln in wanted_lines],
    )

    existing = Refund.objects.filter(external_id=refund_external_id).first()
    if existing is not None:
        return _replay(existing, fingerprint)
    try:
        with transaction.atomic():
            return _refund_locked(
                order_external_id=order_external_id,
                refund_external_id=refund_external_id,
                amount=amount,
                refunded_at=refunded_at,
                reason=reason,
                wanted_lines=wanted_lines,
                fingerprint=fingerprint,
                now=now,
            )
    except IntegrityError:
        # The same refund id raced in for another order (different row lock): the unique key caught it.
        existing = Refund.objects.filter(external_id=refund_external_id).first()
        if existing is None:
            raise
        return _replay(existing, fingerprint)


def _refund_locked(
    *, order_external_id, refund_external_id, amount, refunded_at, reason, wanted_lines, fingerprint, now
) -> Refund:
    order = Order.objects.select_for_update().filter(external_id=order_external_id).first()
    if order is None:
        raise OrderNotFound("order_external_id", _("No order with id %(id)s.") % {"id": order_external_id})
    # A twin request may have committed while we waited for the lock.
    existing = Refund.objects.filter(external_id=refund_external_id).first()
    if existing is not None:
        return _replay(existing, fingerprint)
    if refunded_at < order.placed_at:
        raise RefundRejected("refunded_at", _("The refund time is before the order was placed."))
    remaining = order.total - order.refunded_amount
    if amount > remaining:
        raise RefundRejected(
            "amount",
            _(
                "Refund of %(amount)s exceeds what remains refundable on order %(id)s (%(remaining)s %(currency)s)."
            )
            % {"amount": amount, "id": order.external_id, "remaining": remaining, "currency": order.currency},
        )

    applied: list[dict] = []
    if wanted_lines:
        order_lines = list(OrderLine.objects.select_for_update().filter(order=order).order_by("pk"))
        by_no = {ln.line_no: ln for ln in order_lines}
        for n, wanted in enumerate(wanted_lines):
            quantity = wanted["quantity"]
            if wanted["line_no"] is not None:
                line = by_no.get(wanted["line_no"])
                if line is None or (wanted["sku"] and line.sku != wanted["sku"]):
                    raise RefundRejected(
                        f"lines[{n}].line_no", _("Order %(id)s has no such line.") % {"id": order.external_id}
                    )
                candidates = [line]
            else:
                candidates = [ln for ln in order_lines if ln.sku == wanted["sku"]]
                if not candidates:
                    raise RefundRejected(
                        f"lines[{n}].sku",
                        _("Order %(id)s has no line with SKU %(sku)s.")
                        % {"id": order.external_id, "sku": wanted["sku"]},
                    )
            left = sum(ln.quantity - ln.refunded_quantity for ln in candidates)
            if quantity > left:
                raise RefundRejected(
                    f"lines[{n}].quantity",
                    _("Refund of %(quantity)d exceeds the %(left)d not yet refunded on that line.")
                    % {"quantity": quantity, "left": left},
                )
            for line in candidates:
                take = min(quantity, line.quantity - line.refunded_quantity)
                if take:
                    line.refunded_quantity += take
                    quantity -= take
                    applied.append({"line_no": line.line_no, "sku": line.sku, "quantity": take})
        OrderLine.objects.bulk_update(order_lines, ["refunded_quantity"])

    order.refunded_amount += amount
    order.status = (
        OrderStatus.REFUNDED if order.refunded_amount == order.total else OrderStatus.PARTIALLY_REFUNDED
    )
    order.save(update_fields=["refunded_amount", "status"])
    refund = Refund.objects.create(
        order=order,
        external_id=refund_external_id,
        amount=amount,
        refunded_at=refunded_at,
        reason=reason,
        lines=applied,
        fingerprint=fingerprint,
        created_at=now,
    )
    events_append(
        events=[
            NewEvent(
                type=ORDER_REFUNDED,
                customer_id=order.customer_id,
                occurred_at=refunded_at,
                properties={
                    "order_external_id": order.external_id,
                    "refund_external_id": refund_external_id,
                    "amount": str(amount),
                    "currency": order.currency,
                    "refunded_amount": str(order.refunded_amount),
                    "status": order.status,
                },
                channel=order.channel,
            )
        ],
        now=now,
    )
    refund.replayed = False
    return refund
