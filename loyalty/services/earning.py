"""How many points an order line earns, and how a refund takes them back: pure computation, no queries.

An order's base points are worked out on the whole paid order (`floor(total × points per unit)`) and
shared out over its lines in proportion to their value (largest remainder), so splitting an order into
lines never loses a point to rounding. Each line then adds, on its own base:

- product bonus = floor(base × (product or category multiplier − 1))   (the highest match, no stacking)
- tier bonus    = floor(base × (tier multiplier − 1))
- promotion     = floor(base × (promotion multiplier − 1))               (the highest match)

The parts are stored on the earn entry, so a refund of part of a line reverses that share of each part,
and `loyalty_audit` can recompute every order's points from what was recorded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_FLOOR, Decimal
from fractions import Fraction

PARTS = ("base", "product", "tier", "promotion")


@dataclass(frozen=True)
class OrderData:
    id: int
    external_id: str
    customer_id: int
    placed_at: datetime
    currency: str
    total: Decimal
    refunded_amount: Decimal
    status: str


@dataclass(frozen=True)
class LineData:
    id: int | None  # None for the stand-in line of an order without lines
    line_no: int
    sku: str
    category: str
    quantity: int
    line_total: Decimal
    refunded_quantity: int


@dataclass
class LineEarning:
    order: OrderData
    line: LineData
    parts: dict = field(default_factory=dict)
    rule_id: int | None = None

    @property
    def total(self) -> int:
        return sum(self.parts[p] for p in PARTS)

    @property
    def key(self) -> str:
        return earn_key(self.order.external_id, self.line.line_no)


def earn_key(order_external_id: str, line_no: int) -> str:
    return f"order:{order_external_id}:line:{line_no}"


def floor_int(value: Decimal) -> int:
    return int(value.to_integral_value(rounding=ROUND_FLOOR))


def share_out(total: int, weights: list[Decimal]) -> list[int]:
    """Split `total` points over `weights` proportionally; the shares sum exactly to `total`."""
    weight_sum = sum(weights)
    if total <= 0 or weight_sum <= 0:
        return [0] * len(weights)
    exact = [Decimal(total) * w / weight_sum for w in weights]
    shares = [floor_int(x) for x in exact]
    left = total - sum(shares)
    # Largest remainder first; ties go to the earlier line so the result is deterministic.
    order = sorted(range(len(weights)), key=lambda i: (-(exact[i] - shares[i]), i))
    for i in order[:left]:
        shares[i] += 1
    return shares


def effective_lines(order: OrderData, lines: list[LineData]) -> list[LineData]:
    """The lines points are earned on; an order without lines earns on one stand-in line 0."""
    if lines:
        return sorted(lines, key=lambda ln: ln.line_no)
    return [
        LineData(
            id=None,
            line_no=0,
            sku="",
            category="",
            quantity=1,
            line_total=order.total,
            refunded_quantity=0,
        )
    ]


def order_earnings(*, ruleset, order: OrderData, lines: list[LineData], tier) -> list[LineEarning]:
    """The points each line of `order` earns under `ruleset` for a member at `tier` (zero lines omitted)."""
    base_rule = ruleset.base_rule(order.placed_at, order.currency)
    if base_rule is None or order.total <= 0:
        return []
    lines = effective_lines(order, lines)
    order_base = floor_int(order.total * base_rule.points_per_unit)
    bases = share_out(order_base, [max(ln.line_total, Decimal(0)) for ln in lines])
    tier_multiplier = tier.earn_multiplier if tier is not None else Decimal(1)
    out = []
    for line, base in zip(lines, bases, strict=True):
        product_rule = ruleset.product_rule(order.placed_at, line.sku, line.category)
        promotion = ruleset.promotion(order.placed_at, line.category)
        product_multiplier = product_rule.multiplier if product_rule else Decimal(1)
        promotion_multiplier = promotion.multiplier if promotion else Decimal(1)
        parts = {
            "base": base,
            "product": floor_int(base * (product_multiplier - 1)),
            "tier": floor_int(base * (tier_multiplier - 1)),
            "promotion": floor_int(base * (promotion_multiplier - 1)),
        }
        earning = LineEarning(order=order, line=line, rule_id=base_rule.pk)
        earning.parts = {
            **parts,
            "total": sum(parts.values()),
            "order_base": order_base,
            "rate": str(base_rule.points_per_unit),
            "line_value": str(line.line_total),
            "product_multiplier": str(product_multiplier),
            "product_rule": product_rule.pk if product_rule else None,
            "tier_multiplier": str(tier_multiplier),
            "tier_id": tier.pk if tier is not None else None,
            "promotion_multiplier": str(promotion_multiplier),
            "promotion_id": promotion.pk if promotion else None,
        }
        if earning.total > 0:
            out.append(earning)
    return out


def refunded_fraction(order: OrderData, line: LineData, any_line_refunded: bool) -> Fraction:
    """How much of a line has been refunded, exactly (a Fraction: a third stays a third): by quantity
    when refunds name lines, else by amount."""
    if order.status == "refunded":
        return Fraction(1)
    if line.id is not None and any_line_refunded:
        return Fraction(line.refunded_quantity, line.quantity) if line.quantity else Fraction(0)
    if order.total <= 0:
        return Fraction(0)
    return min(Fraction(order.refunded_amount) / Fraction(order.total), Fraction(1))


def reversal_target(earned_parts: dict, fraction: Fraction) -> dict:
    """The cumulative points a refund of `fraction` of a line takes back, part by part. Rounded down, so
    a partial refund never takes more than its share, and a full refund takes exactly everything."""
    target = {p: math.floor(int(earned_parts.get(p, 0)) * fraction) for p in PARTS}
    target["total"] = sum(target[p] for p in PARTS)
    return target
