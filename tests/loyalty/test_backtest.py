"""Backtesting a draft rule, tier or expiry change over past orders without saving anything."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

from loyalty.models import EarnRule, LedgerEntry, ProgrammeSettings, Tier
from loyalty.services.backtest import backtest_run
from tests.loyalty.ledger_helpers import T0, customer_make, order_make, process, programme_setup

pytestmark = pytest.mark.django_db

NOW = T0 + timedelta(days=30)


def _history():
    tiers, base = programme_setup()
    for total in ("500", "900", "1500", "6000"):
        order_make(customer_make(), total=total, placed_at=T0)
    process(T0 + timedelta(hours=1))
    return tiers, base


def test_draft_base_rate_shows_points_issued_and_liability_without_saving():
    _tiers, base = _history()
    entries = LedgerEntry.objects.count()
    base.points_per_unit = Decimal("2")

    result = backtest_run(draft_rule=base, now=NOW)

    assert result.orders == 4
    assert result.points_draft == 2 * result.points_current
    assert result.liability_draft == result.liability_current + result.points_current
    assert EarnRule.objects.get(pk=base.pk).points_per_unit == 1
    assert LedgerEntry.objects.count() == entries


def test_draft_tier_threshold_counts_members_changing_tier():
    tiers, _ = _history()
    silver = Tier.objects.get(code="silver")
    silver.threshold_spend = Decimal("800")
    result = backtest_run(draft_tier=silver, now=NOW)
    assert (result.tier_up, result.tier_down) == (1, 0)
    assert result.tier_moves == {("会员 Member", "银卡 Silver"): 1}

    gold = Tier.objects.get(code="gold")
    gold.threshold_spend = Decimal("7000")
    result = backtest_run(draft_tier=gold, now=NOW)
    assert (result.tier_up, result.tier_down) == (0, 1)


def test_draft_expiry_policy_reports_points_it_would_expire():
    programme_setup(return_window_days=0, expiry_policy="never")
    order_make(customer_make(), total="300", placed_at=T0)
    process(T0 + timedelta(hours=1))
    draft = ProgrammeSettings.objects.get()
    draft.expiry_policy, draft.expiry_months = "rolling_months", 1
    result = backtest_run(draft_programme=draft, now=T0 + timedelta(days=60))
    assert result.expiry_now_draft == 300
    assert result.liability_draft == result.liability_current - 300


def test_admin_backtest_button_shows_results_and_saves_nothing(client):
    _tiers, base = _history()
    user = get_user_model().objects.create_superuser("boss", "b@example.cn", "pw-boss-12345")
    client.force_login(user)
    url = reverse("admin:loyalty_earnrule_change", args=[base.pk])
    data = {
        "name": base.name,
        "kind": "base",
        "is_active": "on",
        "points_per_unit": "3",
        "currency": "CNY",
        "multiplier": "1",
        "bonus_points": "0",
        "_backtest": "1",
    }
    response = client.post(url, data)
    assert response.status_code == 200
    assert b"Save this change" in response.content
    assert EarnRule.objects.get(pk=base.pk).points_per_unit == 1
    response = client.post(url, {**{k: v for k, v in data.items() if k != "_backtest"}, "_save": "1"})
    assert response.status_code == 302
    assert EarnRule.objects.get(pk=base.pk).points_per_unit == 3
