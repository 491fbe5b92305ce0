"""The member portal on a phone, as members open it from WeChat: a 390 px wide screen, a touch browser
that asks for zh-CN (or en), and no JavaScript needed. The tiers page, the history and the confirmation
before a redemption, in both languages; a screenshot of each page at 390 px and on a desktop, in
SCREENSHOT_DIR (default: the test's temporary directory)."""

from __future__ import annotations

import os
import re
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from crm.clock import business_day_start, business_today
from crm.models import OrderLine
from loyalty.models import LoyaltyAccount, PointLot
from loyalty.models.rewards import RewardRedemption
from loyalty.services.coupons import code_display
from tests.conftest import PAGE_TIMEOUT_MS
from tests.loyalty.ledger_helpers import order_make, process, programme_setup
from tests.loyalty.test_member_support import (
    MEMBER_URLS,
    PASSWORD,
    member_make,
    member_test_setup,  # noqa: F401
    reward_make,
)

pytestmark = pytest.mark.urls(MEMBER_URLS)

PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 900}
WECHAT_UA = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Mobile/15E148 MicroMessenger/8.0.47(0x18002f2c) NetType/WIFI Language/zh_CN"
)
# What each language's pages say, so one test body checks both.
TEXT = {
    "en": {
        "locale": "en-GB",
        "tiers_title": "Tiers and benefits",
        "your_tier": "Your tier",
        "progress": "Spend ¥2799.00 more within 12 months to reach 金卡 Gold.",
        "birthday": "800 points on your birthday",
        "history_title": "Points history",
        "order": "Order TM-2001",
        "balance": "Balance",
        "confirm_title": "Confirm redemption",
        "spend": "Spend 500 points",
        "redeemed": "Redeemed!",
        "qr_hint": "show the QR code at the till",
    },
    "zh-hans": {
        "locale": "zh-CN",  # what WeChat's browser asks for; Django answers it in zh-hans
        "tiers_title": "会员等级与权益",
        "your_tier": "您的等级",
        "progress": "在 12 个月内再消费 ¥2799.00 即可升级为 金卡 Gold。",
        "birthday": "生日赠送 800 积分",
        "history_title": "积分记录",
        "order": "订单 TM-2001",
        "balance": "余额",
        "confirm_title": "确认兑换",
        "spend": "确认使用 500 积分",
        "redeemed": "兑换成功",
        "qr_hint": "出示二维码",
    },
}


def _shots(tmp_path) -> Path:
    target = Path(os.environ.get("SCREENSHOT_DIR") or tmp_path)
    target.mkdir(parents=True, exist_ok=True)
    return target


def _member_with_history():
    """A silver member with two orders (the first of two lines) and points to spend."""
    now = timezone.now()
    tiers, _base = programme_setup(return_window_days=15)
    tiers["gold"].birthday_gift_points = 800
    tiers["gold"].free_shipping = True
    tiers["gold"].save()
    tiers["silver"].earn_multiplier = 1  # round figures below: a point per yuan
    tiers["silver"].save()
    login = member_make(points=900, tier=tiers["silver"])
    first = order_make(
        login.customer,
        total="1899",
        lines=[("CRM-50", "skin", 1, "1599"), ("MASK-5", "skin", 3, "300")],
        placed_at=now - timedelta(days=40),
        external_id="TM-2001",
    )
    OrderLine.objects.filter(order=first, line_no=1).update(name="保湿面霜 Moisturiser 50ml")
    OrderLine.objects.filter(order=first, line_no=2).update(name="补水面膜 Hydrating mask")
    second = order_make(
        login.customer,
        total="302",
        lines=[("LIP-1", "make-up", 1, "302")],
        placed_at=now - timedelta(days=25),
        external_id="TM-2002",
    )
    OrderLine.objects.filter(order=second).update(name="润唇膏 Lip balm")
    process(now)
    # The opening 900 points expire at a business midnight ten days on: usable until the day before.
    last_day = business_today(now) + timedelta(days=10)
    PointLot.objects.filter(account__customer=login.customer, points=900).update(
        expires_at=business_day_start(last_day + timedelta(days=1))
    )
    reward = reward_make(name="满100减20券 ¥20 voucher", points_price=500, stock=10)
    return login, reward


def _phone(browser, live_server, language: str):
    context = browser.new_context(
        base_url=live_server.url,
        viewport=PHONE,
        device_scale_factor=2,
        is_mobile=True,
        has_touch=True,
        user_agent=WECHAT_UA,
        locale=TEXT[language]["locale"],
        java_script_enabled=False,  # every step must work without scripts
    )
    context.set_default_timeout(PAGE_TIMEOUT_MS)
    return context


def _sign_in(page, login):
    page.goto("/member/login/")
    page.fill("#password-login input[name=email]", login.email)
    page.fill("#password-login input[name=password]", PASSWORD)
    page.click("#password-login button[type=submit]")
    expect(page).to_have_url(re.compile(r"/member/$"))


def _fits(page) -> None:
    """Nothing on the page is wider than the screen (no sideways scrolling on the phone)."""
    assert page.evaluate("document.documentElement.scrollWidth") <= page.viewport_size["width"]


@pytest.mark.parametrize("language", ["en", "zh-hans"])
def test_on_a_phone_the_member_sees_tiers_history_and_confirms_a_redemption(
    browser, live_server, tmp_path, language
):
    text = TEXT[language]
    login, reward = _member_with_history()
    shots = _shots(tmp_path)
    context = _phone(browser, live_server, language)
    page = context.new_page()
    try:
        _sign_in(page, login)
        expect(page.locator("html")).to_have_attribute("lang", language)
        last_day = business_today(timezone.now()) + timedelta(days=10)
        date = (
            f"{last_day.day} {last_day:%b} {last_day.year}"
            if language == "en"
            else f"{last_day.year}年{last_day.month}月{last_day.day}日"
        )
        expect(page.locator("#expiring-points")).to_contain_text(date)
        _fits(page)
        page.screenshot(path=shots / f"portal-home-phone-{language}.png", full_page=True)

        # Tiers: every tier, the member's marked, the way to the next.
        page.goto("/member/tiers/")
        expect(page.locator("h1")).to_have_text(text["tiers_title"])
        expect(page.locator(".tier-card")).to_have_count(4)
        current = page.locator(".tier-card[aria-current=true]")
        expect(current).to_have_attribute("data-tier", "silver")
        expect(current.locator(".badge")).to_have_text(text["your_tier"])
        expect(page.locator("#tier-progress")).to_have_text(text["progress"])
        expect(page.locator("[data-tier=gold]")).to_contain_text(text["birthday"])
        _fits(page)
        page.screenshot(path=shots / f"portal-tiers-phone-{language}.png", full_page=True)

        # History: one row per order, its products, the balance after each row.
        page.goto("/member/history/")
        expect(page.locator("h1")).to_have_text(text["history_title"])
        rows = page.locator("#history > li")
        expect(rows).to_have_count(3)  # two orders (three lines) and the opening grant
        first_order = page.locator("#history > li[data-order=TM-2001]")
        expect(first_order).to_contain_text(text["order"])
        expect(first_order).to_contain_text("保湿面霜 Moisturiser 50ml · 补水面膜 Hydrating mask ×3")
        expect(first_order.locator(".plus")).to_have_text("+1899")
        expect(first_order.locator(".balance-after")).to_contain_text(f"{text['balance']} 1899")
        # Newest first by when it happened: the grant (today), then the orders placed before it.
        expect(rows.first.locator(".balance-after")).to_contain_text(f"{text['balance']} 3101")
        expect(rows.nth(1)).to_have_attribute("data-order", "TM-2002")
        _fits(page)
        page.screenshot(path=shots / f"portal-history-phone-{language}.png", full_page=True)

        # Redeeming: the rewards page's button opens a confirmation; nothing is spent before it.
        page.goto("/member/rewards/")
        page.locator(f"[data-reward='{reward.pk}'] a.button").click()
        expect(page).to_have_url(re.compile(rf"/member/rewards/{reward.pk}/redeem/$"))
        expect(page.locator("h1")).to_have_text(text["confirm_title"])
        expect(page.locator("#confirm-remaining")).to_have_text("2601")
        assert LoyaltyAccount.objects.get(customer=login.customer).available == 3101
        assert not RewardRedemption.objects.exists()
        _fits(page)
        page.screenshot(path=shots / f"portal-confirm-phone-{language}.png", full_page=True)

        page.locator("#confirm-redeem").click()
        expect(page).to_have_url(re.compile(r"/member/redemptions/\d+/$"))
        redemption = RewardRedemption.objects.get(customer=login.customer)
        expect(page.locator(".messages")).to_contain_text(text["redeemed"])
        expect(page.locator("#coupon-code")).to_have_text(code_display(redemption.coupon.code))
        qr = page.locator("#coupon-qr svg")
        expect(qr).to_be_visible()
        box = qr.bounding_box()
        assert box["width"] >= 150 and abs(box["width"] - box["height"]) < 1  # large and square to scan
        expect(page.locator("main")).to_contain_text(text["qr_hint"])
        _fits(page)
        page.screenshot(path=shots / f"portal-coupon-phone-{language}.png", full_page=True)
        assert LoyaltyAccount.objects.get(customer=login.customer).available == 2601
    finally:
        context.close()


def test_a_double_tap_or_a_resent_confirmation_redeems_once(browser, live_server):
    """A double tap on the confirmation's button, and the same form sent once more (a retry on a flaky
    connection), spend the points once and lead to the same coupon."""
    login, reward = _member_with_history()
    context = _phone(browser, live_server, "en")
    page = context.new_page()
    try:
        _sign_in(page, login)
        page.goto(f"/member/rewards/{reward.pk}/redeem/")
        form = {
            name: page.locator(f"#redeem-confirm input[name={name}]").get_attribute("value")
            for name in ("csrfmiddlewaretoken", "idempotency_key")
        }
        page.locator("#confirm-redeem").dblclick()
        expect(page).to_have_url(re.compile(r"/member/redemptions/\d+/$"))
        again = context.request.post(
            f"/member/rewards/{reward.pk}/redeem/",
            form=form,
            headers={"Referer": f"{live_server.url}/member/rewards/{reward.pk}/redeem/"},
        )

        assert again.ok and again.url == page.url
        assert RewardRedemption.objects.filter(customer=login.customer).count() == 1
        assert LoyaltyAccount.objects.get(customer=login.customer).available == 3101 - 500
    finally:
        context.close()


@pytest.mark.parametrize("language", ["en", "zh-hans"])
def test_the_portal_pages_on_a_desktop_screen(browser, live_server, tmp_path, language):
    login, reward = _member_with_history()
    shots = _shots(tmp_path)
    context = browser.new_context(base_url=live_server.url, viewport=DESKTOP, locale=TEXT[language]["locale"])
    context.set_default_timeout(PAGE_TIMEOUT_MS)
    page = context.new_page()
    try:
        _sign_in(page, login)
        page.screenshot(path=shots / f"portal-home-desktop-{language}.png", full_page=True)
        for name, path in [("tiers", "/member/tiers/"), ("history", "/member/history/")]:
            page.goto(path)
            _fits(page)
            page.screenshot(path=shots / f"portal-{name}-desktop-{language}.png", full_page=True)
        page.goto(f"/member/rewards/{reward.pk}/redeem/")
        page.locator("#confirm-redeem").click()
        expect(page.locator("#coupon-qr svg")).to_be_visible()
        page.screenshot(path=shots / f"portal-coupon-desktop-{language}.png", full_page=True)
        page.goto("/member/")
        expect(page.locator("#available-points")).to_have_text("2601")
    finally:
        context.close()
