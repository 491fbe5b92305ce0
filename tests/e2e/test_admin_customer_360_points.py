"""In a real browser, in English and Chinese: the customer 360's "Points and tier" panel for a Gold
member with points, lots about to expire and ledger entries written by jobs (stored as reason codes),
on a desktop and a phone; screenshots of the 360 and the admin home go to /work/shots/ws/ (SHOTS_DIR)
for a person to look at."""

from __future__ import annotations

import os
import re
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone, translation
from django.utils.formats import date_format
from playwright.sync_api import expect

from crm.clock import business_day_start, business_today
from loyalty.ledger_reasons import reason_code
from loyalty.models import LedgerEntry, LoyaltyAccount, PointLot
from loyalty.services.ledger import account_for_customer
from tests.factories import CustomerFactory, OrderFactory
from tests.loyalty.test_member_support import tiers_make

pytestmark = pytest.mark.e2e

PASSWORD = "pw-360-points-2026"
DESKTOP = {"width": 1440, "height": 900}
PHONE = {"width": 390, "height": 844}
SHOTS = Path(os.environ.get("SHOTS_DIR", "/work/shots/ws"))

TEXTS = {
    "en": {
        "title": "Points and tier",
        "expiring": "12,000 points expire after {day}",
        "reasons": ["Order TM-2026-1111", "Points expired", "客服补偿 goodwill"],
        "kind": "Earned",
    },
    "zh-hans": {
        "title": "积分与会员等级",
        "reasons": ["订单 TM-2026-1111", "积分已过期", "客服补偿 goodwill"],
        "kind": "获得",
    },
}


@pytest.fixture
def gold_member():
    """金卡 Gold, 20,008 available points: 12,000 gone at the business midnight ending day +20, 8,008
    later; entries written by jobs (an order's points, an expiry) and one by staff, in their words."""
    tiers = tiers_make()
    now = timezone.now()
    customer = CustomerFactory(name="王芳", email="wang.fang@example.cn", phone="+8613800138000")
    OrderFactory(customer=customer, external_id="TM-2026-1111", total=Decimal("6800.00"), placed_at=now)
    account = account_for_customer(customer=customer)
    last_day = business_today(now) + timedelta(days=20)
    lots = [(12_000, business_day_start(last_day + timedelta(days=1))), (8_008, now + timedelta(days=400))]
    entries = [
        ("earn", 12_000, reason_code("order", "TM-2026-1111"), 3),
        ("earn", 8_008 + 100, reason_code("rule", "双十一"), 2),
        ("expire", -150, reason_code("expired"), 1),
        ("adjust", 50, "客服补偿 goodwill", 0),
    ]
    earned = []
    for n, (kind, points, reason, days_ago) in enumerate(entries):
        earned.append(
            LedgerEntry.objects.create(
                account=account,
                kind=kind,
                points=points,
                reason=reason,
                idempotency_key=f"e2e-360-{n}",
                payload_hash="x",
                occurred_at=now - timedelta(days=days_ago),
            )
        )
    for entry, (points, expires_at) in zip(earned, lots, strict=False):
        PointLot.objects.create(
            account=account,
            earn_entry=entry,
            state="available",
            points=points,
            remaining=points,
            consumed=0,
            earned_at=entry.occurred_at,
            available_at=entry.occurred_at,
            expires_at=expires_at,
        )
    LoyaltyAccount.objects.filter(pk=account.pk).update(
        available=20_008, tier=tiers["gold"], tier_since=now - timedelta(days=30)
    )
    return customer, last_day


def _staff_session(browser, live_server, *, language: str, viewport: dict):
    users = get_user_model().objects
    if not users.filter(username="chief").exists():
        users.create_superuser("chief", "chief@example.cn", PASSWORD)
    context = browser.new_context(
        base_url=live_server.url, viewport=viewport, extra_http_headers={"Accept-Language": language}
    )
    context.set_default_timeout(15_000)
    page = context.new_page()
    page.goto("/admin/login/")
    page.fill("#id_username", "chief")
    page.fill("#id_password", PASSWORD)
    page.click("[type=submit]")
    expect(page).to_have_url(re.compile(r"/admin/$"))
    return context, page


def _overflow(page) -> int:
    return page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")


@pytest.mark.parametrize("language", ["en", "zh-hans"])
def test_points_panel_shows_balance_tier_expiry_and_reasons_in_the_readers_language(
    browser, live_server, gold_member, language
):
    customer, last_day = gold_member
    with translation.override(language):
        day = date_format(last_day, "SHORT_DATE_FORMAT")
    SHOTS.mkdir(parents=True, exist_ok=True)
    for size, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
        context, page = _staff_session(browser, live_server, language=language, viewport=viewport)
        try:
            page.screenshot(path=str(SHOTS / f"home_{language}_{size}.png"), full_page=True)
            assert _overflow(page) <= 1, f"the admin home overflows at {viewport}"

            page.goto(f"/admin/crm/customer/{customer.pk}/change/")
            panel = page.locator("#panel-points")
            expect(panel).to_contain_text(TEXTS[language]["title"])
            expect(panel.get_by_test_id("points-available")).to_have_text(re.compile(r"^20[,.]?008$"))
            expect(panel.get_by_test_id("points-tier")).to_have_text("金卡 Gold")
            expiring = panel.get_by_test_id("points-expiring").locator("li")
            expect(expiring).to_have_count(2)
            first = expiring.first.inner_text()
            assert day in first and re.search(r"12[,.]?000", first), first
            if language == "en":
                assert first == TEXTS["en"]["expiring"].format(day=day)
            else:
                assert "积分" in first and "expire" not in first
            entries = panel.get_by_test_id("points-entries")
            for reason in TEXTS[language]["reasons"]:
                expect(entries).to_contain_text(reason)
            expect(entries).to_contain_text(TEXTS[language]["kind"])
            if language == "zh-hans":
                text = panel.inner_text()
                for english in (
                    "Points and tier",
                    "Available points",
                    "Expiring points",
                    "Order TM",
                    "expired",
                ):
                    assert english not in text, english
            panel.scroll_into_view_if_needed()
            page.screenshot(path=str(SHOTS / f"c360_{language}_{size}.png"), full_page=True)
            assert _overflow(page) <= 1, f"the 360 page overflows at {viewport}"
        finally:
            context.close()
