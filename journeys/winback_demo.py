"""The win-back story end to end, for `manage.py winback_demo` and the admin's button: nightly metrics,
the selection, the journey's sends through the delivery pipeline, some customers coming back with their
coupon, and the uplift report with its interval.

It runs on whatever database is configured (the embedded default: SQLite, console providers) and never
needs a worker: the engine and the outbox are driven in this process, as their beat tasks would. The night
is put 35 days back, so the 30-day window of the customers selected that night has closed today; returns
are simulated with a fixed seed: treated customers come back more often than held-out ones (the demo's
assumption, printed with the result), and a returning treated customer pays with their win-back coupon.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal

from django.utils import timezone

DEMO_PROGRAMME = "你还记得吗? 沉睡客户唤醒 (demo)"
# The simulated chances of an order within the window: the demo's assumption, not a measurement.
RETURN_IF_TREATED = 0.22
RETURN_IF_HELD_OUT = 0.08


def winback_demo(*, out: Callable[[str], None] = print, customers: int = 600, seed: int = 17) -> dict:
    from crm.models import Customer, CustomerMetrics
    from crm.services.metrics import metrics_compute
    from crm.services.orders import OrderInput, orders_ingest
    from journeys.models import Arm, WinbackAssignment, WinbackOffer, WinbackProgramme
    from journeys.services.engine import dispatch_run as journeys_dispatch
    from journeys.services.winback import winback_outcomes_refresh, winback_run
    from journeys.winback_report import winback_report
    from loyalty.services.coupons import coupon_redeem

    started = time.monotonic()

    def step(text: str) -> None:
        out(f"[{time.monotonic() - started:5.1f}s] {text}")

    now = timezone.now()
    # 10:00 in the business time zone, 35 days ago: outside quiet hours, so day 0 goes out at once.
    local = timezone.localtime(now - timedelta(days=35))
    night = local.replace(hour=10, minute=0, second=0, microsecond=0)
    if not Customer.objects.exists():
        from django.core.management import call_command

        step(f"No customers yet: seeding {customers} demo customers")
        call_command("seed_demo", customers=customers, verbosity=0)
    step("Nightly metrics (lifecycle stages, value tiers, BG/NBD p_alive) as of the night")
    metrics_compute(as_of=night.date())
    sleeping = CustomerMetrics.objects.filter(sleeping_high_value=True).count()
    step(f"{sleeping} sleeping high-value customers (沉睡的顾客——高价值)")

    from campaigns.demo_templates import winback_programme as demo_coupon_programme

    coupon_programme = demo_coupon_programme()
    programme, created = WinbackProgramme.objects.get_or_create(
        name=DEMO_PROGRAMME,
        defaults={
            "value_tiers": ["high", "medium", "low"],
            "budget_offers": 400,
            "holdout_percent": 20,
            "cycles_without_order": Decimal("2.0"),
            "max_p_alive": 0.9,
            "recent_message_days": 0,
            "reactivation_days": 30,
        },
    )
    if created:
        WinbackOffer.objects.create(
            programme=programme,
            value_tier="high",
            coupon_programme=coupon_programme,
            points_bonus=200,
            cost=30,
        )
        WinbackOffer.objects.create(
            programme=programme, value_tier="medium", coupon_programme=coupon_programme, cost=30
        )
        WinbackOffer.objects.create(programme=programme, value_tier="low", points_bonus=100, cost=5)
    step(
        "Selection: score = P(back | treated) x expected order value - offer cost, within budget and capacity"
    )
    run = winback_run(programme=programme, now=night)
    step(
        f"Run of {run.run_date}: considered {run.considered}, eligible {run.eligible}, selected {run.selected}, "
        f"held out {run.held_out}, enrolled {run.enrolled}; suppressed {run.suppressed}"
    )
    step("Journey day 0 and the delivery pipeline (console providers)")
    _drive(journeys_dispatch, lambda: night + timedelta(minutes=5))

    step("Simulating returns within the window")
    rng = random.Random(seed)
    assignments = list(WinbackAssignment.objects.filter(run=run).select_related("coupon").order_by("rank"))
    orders, redemptions = [], []
    for a in assignments:
        chance = RETURN_IF_TREATED if a.arm == Arm.TREATED else RETURN_IF_HELD_OUT
        if rng.random() >= chance:
            continue
        placed = night + timedelta(days=rng.randint(1, 20), hours=rng.randint(0, 12))
        total = (a.expected_spend or Decimal("99")).quantize(Decimal("0.01")) + Decimal("30")
        reference = f"WB-DEMO-{run.pk}-{a.customer_id}"
        orders.append(
            OrderInput(external_id=reference, placed_at=placed, total=total, customer_id=a.customer_id)
        )
        if a.coupon_id:
            redemptions.append((a, reference, total, placed))
    orders_ingest(orders=orders, source="demo", now=now)
    for a, reference, total, placed in redemptions:
        coupon_redeem(
            code=a.coupon.code,
            order_reference=reference,
            order_total=total,
            currency="CNY",
            customer_id=a.customer_id,
            now=placed,
        )
    step(f"{len(orders)} returning orders, {len(redemptions)} paid with their win-back coupon")
    step("Journey: goal exits for those who ordered, day 7 and day 14 reminders for the others")
    _drive(journeys_dispatch, lambda: night + timedelta(days=7, minutes=10))
    _drive(journeys_dispatch, lambda: night + timedelta(days=14, minutes=20))
    winback_outcomes_refresh(programme=programme, now=now)
    from journeys.services.winback import winback_run_counts_refresh

    winback_run_counts_refresh(run=run)
    report = winback_report(programme=programme, run_ids=[run.pk])
    total = report.total
    t, h = total.treated, total.holdout
    step("Report (intention to treat: every selected customer counts in the arm assigned)")
    out(f"  treated: {t.reactivated}/{t.n} reactivated ({(t.rate or 0) * 100:.1f}%)")
    out(f"  holdout: {h.reactivated}/{h.n} reactivated ({(h.rate or 0) * 100:.1f}%)")
    if total.difference is not None:
        d = total.difference
        out(
            f"  uplift: {d.estimate * 100:+.1f} pp, 95% interval [{d.low * 100:+.1f}, {d.high * 100:+.1f}] pp "
            "(Newcombe)"
        )
    out(
        f"  incremental orders: {total.incremental_orders or 0:.1f}; incremental revenue: "
        f"{total.incremental_revenue or 0:.2f} CNY; cost: {total.cost:.2f} CNY; ROI: "
        f"{'—' if total.roi is None else f'{total.roi * 100:.0f}%'}"
    )
    out(f"  coupons redeemed in returning orders, attributed to the run: {t.coupons_redeemed}")
    out(
        f"  (simulated: {RETURN_IF_TREATED:.0%} of the treated and {RETURN_IF_HELD_OUT:.0%} of the holdout order)"
    )
    step("Metrics recomputed as of today (the dashboards show today again)")
    metrics_compute()
    step("Done")
    return {"run_id": run.pk, "programme_id": programme.pk, "treated": t.n, "holdout": h.n}


def _drive(journeys_dispatch, now_fn) -> None:
    """Advance what is due at `now_fn()` and send what that queued, as the two beat tasks would."""
    from campaigns.services.dispatch import dispatch_run as messages_dispatch
    from crm.services.leases import lease_holder_name

    worker = lease_holder_name()
    for _round in range(3):
        journeys_dispatch(worker=worker, now_fn=now_fn, limit_seconds=20)
        messages_dispatch(worker=worker, now_fn=now_fn, limit_seconds=20)
