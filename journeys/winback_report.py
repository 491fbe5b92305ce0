"""The win-back proof: how many came back because of the programme, not merely after it.

Intention to treat: every assignment counts in the arm it was assigned to (treated or holdout), whether or
not a message reached it, its coupon was issued, or it left the journey early. A customer is reactivated
when they order within the programme's reactivation window after being selected (the outcome columns that
journeys.services.winback.winback_outcomes_refresh writes).

Figures per group (the whole programme, each run, each value tier, each channel):
- reactivation rate per arm and the difference with Newcombe's interval (campaigns.experiment_statistics);
- incremental reactivations, orders and revenue: (per treated - per holdout) x treated, the revenue with
  Welch's interval scaled the same way;
- cost: messages sent to the treated x the cost per message + the discounts of redeemed win-back coupons;
- ROI: (incremental revenue - cost) / cost.

One grouped query over the assignments (run x tier x channel x arm), then sums in Python over a few
hundred rows, so the report takes the same time at 200,000 assignments as at 200 (bench_winback.py).
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal

from django.db import connection

from campaigns.experiment_statistics import (
    Interval,
    proportion_difference_interval,
    welch_difference_interval,
)
from journeys.models import WinbackAssignment, WinbackProgramme, WinbackRun

CONFIDENCE = 0.95


@dataclass
class ArmFigures:
    n: int = 0
    reactivated: int = 0
    orders: int = 0
    revenue: Decimal = Decimal("0")
    revenue_sq: Decimal = Decimal("0")
    messages: int = 0
    coupons_redeemed: int = 0
    coupon_discount: Decimal = Decimal("0")

    def add(self, other: ArmFigures) -> None:
        self.n += other.n
        self.reactivated += other.reactivated
        self.orders += other.orders
        self.revenue += other.revenue
        self.revenue_sq += other.revenue_sq
        self.messages += other.messages
        self.coupons_redeemed += other.coupons_redeemed
        self.coupon_discount += other.coupon_discount

    @property
    def rate(self) -> float | None:
        return self.reactivated / self.n if self.n else None


@dataclass
class GroupResult:
    key: str
    treated: ArmFigures = field(default_factory=ArmFigures)
    holdout: ArmFigures = field(default_factory=ArmFigures)
    message_cost: Decimal = Decimal("0")
    difference: Interval | None = None
    revenue_difference: Interval | None = None  # per customer, treated - holdout

    def finish(self) -> GroupResult:
        t, h = self.treated, self.holdout
        self.difference = proportion_difference_interval(
            t.reactivated, t.n, h.reactivated, h.n, confidence=CONFIDENCE
        )
        self.revenue_difference = welch_difference_interval(
            t.n, t.revenue, t.revenue_sq, h.n, h.revenue, h.revenue_sq, confidence=CONFIDENCE
        )
        return self

    @property
    def incremental_reactivations(self) -> float | None:
        return None if self.difference is None else self.difference.estimate * self.treated.n

    @property
    def incremental_orders(self) -> float | None:
        t, h = self.treated, self.holdout
        if not t.n or not h.n:
            return None
        return (t.orders / t.n - h.orders / h.n) * t.n

    @property
    def incremental_revenue(self) -> Decimal | None:
        t, h = self.treated, self.holdout
        if not t.n or not h.n:
            return None
        return (t.revenue / t.n - h.revenue / h.n) * t.n

    @property
    def incremental_revenue_interval(self) -> tuple[float, float] | None:
        if self.revenue_difference is None:
            return None
        return (self.revenue_difference.low * self.treated.n, self.revenue_difference.high * self.treated.n)

    @property
    def cost(self) -> Decimal:
        return self.treated.messages * self.message_cost + self.treated.coupon_discount

    @property
    def roi(self) -> float | None:
        revenue = self.incremental_revenue
        if revenue is None or not self.cost:
            return None
        return float((revenue - self.cost) / self.cost)


@dataclass
class WinbackReport:
    programme: WinbackProgramme
    total: GroupResult
    runs: list[tuple[WinbackRun, GroupResult]]
    tiers: list[GroupResult]
    channels: list[GroupResult]


def _cells(run_ids: list[int]) -> list[tuple]:
    if not run_ids:
        return []
    placeholders = ", ".join(["%s"] * len(run_ids))
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            SELECT run_id, value_tier, channel, arm, count(*),
                   sum(CASE WHEN returned_at IS NOT NULL THEN 1 ELSE 0 END), sum(orders),
                   sum(revenue), sum(revenue * revenue), sum(messages),
                   sum(CASE WHEN coupon_order <> '' THEN 1 ELSE 0 END), sum(coupon_discount)
            FROM journeys_winbackassignment
            WHERE run_id IN ({placeholders})
            GROUP BY run_id, value_tier, channel, arm
            """,
            run_ids,
        )
        return cursor.fetchall()


def _decimal(value) -> Decimal:
    return Decimal(str(value)) if value is not None else Decimal("0")


def winback_report(*, programme: WinbackProgramme, run_ids: Iterable[int] | None = None) -> WinbackReport:
    runs = list(WinbackRun.objects.filter(programme=programme).order_by("run_date", "pk"))
    if run_ids is not None:
        wanted = set(run_ids)
        runs = [r for r in runs if r.pk in wanted]
    cost = programme.message_cost
    total = GroupResult("total", message_cost=cost)
    per_run = {r.pk: GroupResult(str(r.run_date), message_cost=cost) for r in runs}
    tiers: dict[str, GroupResult] = {}
    channels: dict[str, GroupResult] = {}
    for (
        run_id,
        tier,
        channel,
        arm,
        n,
        back,
        orders,
        revenue,
        revenue_sq,
        messages,
        redeemed,
        discount,
    ) in _cells([r.pk for r in runs]):
        figures = ArmFigures(
            n=int(n),
            reactivated=int(back or 0),
            orders=int(orders or 0),
            revenue=_decimal(revenue),
            revenue_sq=_decimal(revenue_sq),
            messages=int(messages or 0),
            coupons_redeemed=int(redeemed or 0),
            coupon_discount=_decimal(discount),
        )
        for group in (
            total,
            per_run[run_id],
            tiers.setdefault(tier, GroupResult(tier, message_cost=cost)),
            channels.setdefault(channel, GroupResult(channel, message_cost=cost)),
        ):
            getattr(group, "treated" if arm == "treated" else "holdout").add(figures)
    return WinbackReport(
        programme=programme,
        total=total.finish(),
        runs=[(r, per_run[r.pk].finish()) for r in runs],
        tiers=[tiers[k].finish() for k in sorted(tiers)],
        channels=[channels[k].finish() for k in sorted(channels)],
    )


CSV_COLUMNS = (
    "run_date",
    "customer_id",
    "arm",
    "value_tier",
    "channel",
    "rank",
    "score",
    "p_reactivation",
    "expected_spend",
    "offer_cost",
    "coupon_code",
    "points_bonus",
    "enrolled_at",
    "messages",
    "returned_at",
    "orders",
    "revenue",
    "coupon_order",
    "coupon_discount",
)


class _Echo:
    def write(self, value: str) -> str:
        return value


def winback_report_csv_rows(
    *, programme: WinbackProgramme, run_ids: Iterable[int] | None = None
) -> Iterator[str]:
    """The per-customer outcomes as CSV lines (streamed: a run of 50,000 is never held in memory)."""
    writer = csv.writer(_Echo())
    yield writer.writerow(CSV_COLUMNS)
    qs = WinbackAssignment.objects.filter(programme=programme)
    if run_ids is not None:
        qs = qs.filter(run_id__in=list(run_ids))
    for row in (
        qs.order_by("run__run_date", "rank")
        .values_list(
            "run__run_date",
            "customer_id",
            "arm",
            "value_tier",
            "channel",
            "rank",
            "score",
            "p_reactivation",
            "expected_spend",
            "offer_cost",
            "coupon__code",
            "points_bonus",
            "enrolled_at",
            "messages",
            "returned_at",
            "orders",
            "revenue",
            "coupon_order",
            "coupon_discount",
        )
        .iterator(chunk_size=5000)
    ):
        yield writer.writerow(["" if v is None else v for v in row])
