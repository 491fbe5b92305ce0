"""The nightly win-back selection: ranking within budget and capacity (a hand-checked example), the
exclusions, the holdout (stable and unbiased), idempotent reruns and a crash mid-run resumed without
enrolling anyone twice."""

from __future__ import annotations

import hashlib
import math
import random
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from journeys.models import Enrollment, WinbackAssignment, WinbackRun
from journeys.services import winback as winback_service
from journeys.services.winback import winback_preview, winback_run
from tests.journeys.winback_helpers import coupon_programme_make, dormant_customers, morning, programme_make

pytestmark = pytest.mark.django_db


def p_model(p_alive: float, cycle: float, window: float = 30) -> float:
    return p_alive * (1 - math.exp(-window / cycle))


# Hand-checked: the expected order value is `spend`; offers cost high 10, medium 5, low 10.
HAND = [
    {"key": "A", "p_alive": 0.5, "cycle": 30.0, "spend": 200, "tier": "high"},  # 0.3161*200-10 = 53.21
    {"key": "B", "p_alive": 0.8, "cycle": 60.0, "spend": 100, "tier": "medium"},  # 0.3148*100-5 = 26.48
    {"key": "C", "p_alive": 0.2, "cycle": 15.0, "spend": 500, "tier": "high"},  # 0.1729*500-10 = 76.47
    {"key": "D", "p_alive": 0.6, "cycle": 30.0, "spend": 20, "tier": "low"},  # 0.3793*20-10 < 0
    {"key": "E", "p_alive": 0.4, "cycle": 30.0, "spend": 150, "tier": "medium", "channel": "email"},  # 32.93
    {"key": "F", "p_alive": 0.4, "cycle": 30.0, "spend": 900, "tier": "high", "channel": "none"},
    {"key": "G", "p_alive": 0.95, "cycle": 30.0, "spend": 900, "tier": "high"},  # alive: not dormant
    {"key": "H", "p_alive": 0.4, "cycle": 30.0, "spend": 900, "tier": "high", "days": 50},  # 50 < 2.5 x 30
]
OFFERS = {"high": {"cost": Decimal("10")}, "medium": {"cost": Decimal("5")}, "low": {"cost": Decimal("10")}}


def _hand_world(now, **programme_fields):
    customers = dormant_customers(HAND, now=now)
    by_key = {row["key"]: c.pk for row, c in zip(HAND, customers, strict=True)}
    programme = programme_make(offers=OFFERS, holdout_percent=0, max_p_alive=0.9, **programme_fields)
    return programme, by_key


def _selected(run) -> list[tuple[int, int]]:
    return list(WinbackAssignment.objects.filter(run=run).order_by("rank").values_list("customer_id", "rank"))


def test_a_money_budget_takes_the_best_scores_first_and_stops_at_the_budget():
    now = morning()
    programme, key = _hand_world(now, budget_kind="money", budget_amount=Decimal("20"))

    run = winback_run(programme=programme, now=now)

    # C (76.47) and A (53.21) cost 10 each: the budget of 20 is spent; E (32.93) and B (26.48) are left out.
    assert _selected(run) == [(key["C"], 1), (key["A"], 2)]
    a = WinbackAssignment.objects.get(run=run, customer_id=key["A"])
    assert a.p_reactivation == pytest.approx(p_model(0.5, 30))
    assert a.score == pytest.approx(p_model(0.5, 30) * 200 - 10)
    assert run.budget_spent == Decimal("20.00")
    assert run.considered == 8
    assert run.eligible == 4  # A, B, C, E: D passes the rules and exclusions but scores below zero
    assert run.suppressed == {"no_consent": 1, "not_worth_it": 1, "budget_or_capacity": 2}
    assert run.selected == 2 and run.held_out == 0 and run.enrolled == 2


def test_channel_capacity_is_applied_within_each_channel_before_the_budget():
    now = morning()
    programme, key = _hand_world(now, budget_offers=10, sms_capacity=1)

    run = winback_run(programme=programme, now=now)

    # SMS takes one customer, its best (C); A and B are over SMS capacity; E opens on email.
    assert _selected(run) == [(key["C"], 1), (key["E"], 2)]
    assert dict(WinbackAssignment.objects.filter(run=run).values_list("customer_id", "channel")) == {
        key["C"]: "sms",
        key["E"]: "email",
    }


def test_an_offers_budget_counts_offers_not_money():
    now = morning()
    programme, key = _hand_world(now, budget_offers=3)

    run = winback_run(programme=programme, now=now)

    assert _selected(run) == [(key["C"], 1), (key["A"], 2), (key["E"], 3)]
    assert run.budget_spent == Decimal("3")


def test_the_preview_counts_what_the_run_then_selects_and_writes_nothing():
    now = morning()
    programme, _key = _hand_world(now, budget_offers=10)

    preview = winback_preview(programme=programme, now=now)

    assert (preview.considered, preview.dormant, preview.eligible) == (8, 6, 4)
    assert preview.suppressed == {"no_consent": 1, "not_worth_it": 1}
    assert not WinbackRun.objects.exists()
    assert winback_run(programme=programme, now=now).selected == 4


def test_customers_messaged_recently_or_in_another_winback_are_left_out():
    from campaigns.services.outbox import MessageRequest, messages_enqueue
    from campaigns.services.sending import template_variants
    from journeys.services.winback_journey import winback_templates_ensure

    now = morning()
    customers = dormant_customers([{"spend": 300}, {"spend": 200}, {"spend": 100}], now=now)
    first = programme_make(name="高价值唤醒", holdout_percent=0)
    other = programme_make(name="另一个唤醒", holdout_percent=0)
    winback_templates_ensure()
    sms = template_variants(["winback_day0"])["winback_day0"]["sms"]
    messages_enqueue(
        rows=[
            MessageRequest(
                customer_id=customers[0].pk,
                channel="sms",
                template_id=sms.pk,
                source_kind="api",
                source_ref="test",
                occurrence="recent",
                purpose="marketing",
            )
        ],
        now=now - timedelta(days=2),
    )
    winback_run(programme=other, now=now - timedelta(days=3))  # selects all three
    WinbackAssignment.objects.filter(programme=other).exclude(customer_id=customers[1].pk).delete()

    run = winback_run(programme=first, now=now)

    assert _selected(run) == [(customers[2].pk, 1)]
    assert run.suppressed["recently_messaged"] == 1
    assert run.suppressed["in_other_winback"] == 1


def test_a_customer_selected_this_cycle_is_not_selected_again_until_the_cycle_ends():
    now = morning()
    dormant_customers([{"spend": 300}], now=now)
    programme = programme_make(holdout_percent=0, cooldown_days=30)

    assert winback_run(programme=programme, now=now - timedelta(days=10)).selected == 1
    again = winback_run(programme=programme, now=now)
    assert again.selected == 0 and again.suppressed == {"cooldown": 1}
    assert winback_run(programme=programme, now=now + timedelta(days=25)).selected == 1


def _bucket(run_id: int, customer_id: int) -> int:
    return int(hashlib.md5(f"{run_id}:{customer_id}".encode()).hexdigest()[:6], 16) % 10000


def test_the_holdout_is_stable_and_unbiased_over_a_large_sample():
    now = morning()
    rng = random.Random(5)
    n = 20_000
    dormant_customers(
        [{"spend": rng.randint(50, 2000), "p_alive": rng.uniform(0.05, 0.85)} for _ in range(n)], now=now
    )
    programme = programme_make(holdout_percent=20, budget_offers=n)
    winback_service.ENROLL_BATCH, saved = n, winback_service.ENROLL_BATCH
    try:
        run = winback_run(programme=programme, now=now)
    finally:
        winback_service.ENROLL_BATCH = saved

    arms = dict(WinbackAssignment.objects.filter(run=run).values_list("customer_id", "arm"))
    assert len(arms) == n
    # Stable: the arm is the md5 of (run, customer), recomputed here in Python, for every customer.
    assert all((arm == "holdout") == (_bucket(run.pk, c) < 2000) for c, arm in arms.items())
    # The share held out is 20% within 4 standard errors.
    held = sum(1 for arm in arms.values() if arm == "holdout")
    assert abs(held / n - 0.2) < 4 * math.sqrt(0.2 * 0.8 / n)
    # Unbiased: the arms' mean scores agree within 4 standard errors of their difference.
    scores = {arm: [] for arm in ("treated", "holdout")}
    for arm, score in WinbackAssignment.objects.filter(run=run).values_list("arm", "score"):
        scores[arm].append(score)

    def mean_var(xs):
        m = sum(xs) / len(xs)
        return m, sum((x - m) ** 2 for x in xs) / (len(xs) - 1)

    (mt, vt), (mh, vh) = mean_var(scores["treated"]), mean_var(scores["holdout"])
    assert abs(mt - mh) < 4 * math.sqrt(vt / len(scores["treated"]) + vh / len(scores["holdout"]))
    # And nobody held out entered the journey.
    holdout_ids = [c for c, arm in arms.items() if arm == "holdout"]
    assert not Enrollment.objects.filter(customer_id__in=holdout_ids).exists()


def test_a_holdout_customer_takes_their_place_in_the_ranking_without_spending_the_budget():
    now = morning()
    customers = dormant_customers([{"spend": 1000 - i} for i in range(200)], now=now)
    programme = programme_make(holdout_percent=30, budget_offers=50)

    run = winback_run(programme=programme, now=now)

    treated = WinbackAssignment.objects.filter(run=run, arm="treated").count()
    held = WinbackAssignment.objects.filter(run=run, arm="holdout")
    assert treated == 50
    # The holdout comes from the same top of the ranking: no holdout customer ranks below the last treated.
    last_treated = max(
        WinbackAssignment.objects.filter(run=run, arm="treated").values_list("rank", flat=True)
    )
    assert held.exists() and all(rank < last_treated for rank in held.values_list("rank", flat=True))
    assert run.budget_spent == Decimal("50")
    del customers


def test_rerunning_a_night_changes_nothing():
    now = morning()
    dormant_customers([{"spend": 100 + i} for i in range(40)], now=now)
    programme = programme_make(
        holdout_percent=20,
        offers={
            "high": {"cost": Decimal("5"), "points_bonus": 50, "coupon_programme": coupon_programme_make()}
        },
        budget_offers=30,
    )
    first = winback_run(programme=programme, now=now)
    counts = (
        WinbackAssignment.objects.count(),
        Enrollment.objects.count(),
        _coupons(),
        _ledger_entries(),
    )

    again = winback_run(programme=programme, now=now + timedelta(hours=1))

    assert again.pk == first.pk and WinbackRun.objects.count() == 1
    assert (
        WinbackAssignment.objects.count(),
        Enrollment.objects.count(),
        _coupons(),
        _ledger_entries(),
    ) == counts
    assert counts[2] == first.enrolled > 0


def _coupons() -> int:
    from loyalty.models import Coupon

    return Coupon.objects.count()


def _ledger_entries() -> int:
    from loyalty.models import LedgerEntry

    return LedgerEntry.objects.count()


def test_a_run_that_crashed_mid_enrollment_resumes_without_enrolling_anyone_twice():
    from crm.services.leases import leases_reap

    now = morning()
    dormant_customers([{"spend": 100 + i} for i in range(45)], now=now)
    programme = programme_make(
        holdout_percent=10,
        offers={
            "high": {"cost": Decimal("5"), "points_bonus": 20, "coupon_programme": coupon_programme_make()}
        },
    )
    saved = winback_service.ENROLL_BATCH
    winback_service.ENROLL_BATCH = 10
    try:
        with pytest.raises(winback_service._SimulatedCrash):
            winback_run(programme=programme, now=now, crash_after_batches=2)
        run = WinbackRun.objects.get()
        assert run.status == "running" and run.lease_token is not None
        assert WinbackAssignment.objects.filter(run=run, enrolled_at__isnull=False).count() == 20
        # Another worker cannot take it while the lease holds...
        assert winback_run(programme=programme, now=now).status == "running"
        # ...but once it lapses (the worker died) the reaper hands it on, and the run carries on.
        WinbackRun.objects.update(lease_expires_at=timezone.now() - timedelta(seconds=1))
        assert leases_reap().resumed["journeys.winbackrun"] == [run.pk]
        winback_service.winback_run_resume(run.pk)
    finally:
        winback_service.ENROLL_BATCH = saved

    run.refresh_from_db()
    treated = WinbackAssignment.objects.filter(run=run, arm="treated")
    assert run.status == "done" and run.lease_claims == 2
    assert treated.filter(enrolled_at__isnull=True).count() == 0
    customers = list(Enrollment.objects.values_list("customer_id", flat=True))
    assert len(customers) == len(set(customers)) == treated.count() == run.enrolled
    assert _coupons() == treated.count()
    assert _ledger_entries() == treated.count()


def test_once_a_run_has_matured_its_measured_uplift_per_tier_and_channel_is_blended_in():
    now = morning()
    dormant_customers([{"spend": 200, "p_alive": 0.5} for _ in range(400)], now=now)
    programme = programme_make(holdout_percent=50, budget_offers=400, reactivation_days=30)
    past = winback_run(programme=programme, now=now - timedelta(days=40))
    # Measured: 40% of the treated came back, 10% of the holdout: an uplift of 0.30 for (high, sms).
    for arm, share in (("treated", 0.4), ("holdout", 0.1)):
        ids = list(
            WinbackAssignment.objects.filter(run=past, arm=arm).order_by("pk").values_list("pk", flat=True)
        )
        WinbackAssignment.objects.filter(pk__in=ids[: round(len(ids) * share)]).update(
            returned_at=now - timedelta(days=35)
        )
    treated = WinbackAssignment.objects.filter(run=past, arm="treated").count()
    held = WinbackAssignment.objects.filter(run=past, arm="holdout").count()
    programme.cooldown_days = 1  # the past run's customers may be selected again tonight
    programme.save()
    learned = winback_service.winback_uplift_learned(programme=programme, now=now)
    cell = learned[("high", "sms")]
    assert cell["uplift"] == pytest.approx(round(treated * 0.4) / treated - round(held * 0.1) / held)
    n = min(treated, held)
    assert cell["weight"] == pytest.approx(n / (n + winback_service.UPLIFT_PRIOR_WEIGHT))

    run = winback_run(programme=programme, now=now)

    a = WinbackAssignment.objects.filter(run=run).first()
    w = cell["weight"]
    assert a.p_reactivation == pytest.approx(w * cell["uplift"] + (1 - w) * p_model(0.5, 30))
    assert run.uplift["high:sms"]["treated"] == treated


def test_decline_prevention_takes_at_risk_customers_only():
    now = morning()
    at_risk, dormant = dormant_customers(
        [{"stage": "at_risk", "days": 80}, {"stage": "dormant", "days": 80}], now=now
    )
    programme = programme_make(audience="at_risk", holdout_percent=0, cycles_without_order=Decimal("1.5"))

    run = winback_run(programme=programme, now=now)

    assert _selected(run) == [(at_risk.pk, 1)]
    del dormant
