"""The member portal in a real browser: sign in, see the balance, redeem a reward, read the coupon code,
switch to Chinese; on a phone-sized screen."""

import re

import pytest
from playwright.sync_api import expect

from loyalty.models.rewards import RewardRedemption
from loyalty.services.coupons import code_display
from loyalty.services.rewards import reward_redeem
from tests.loyalty.test_member_support import (
    MEMBER_URLS,
    PASSWORD,
    member_make,
    member_test_setup,  # noqa: F401
    reward_make,
    tiers_make,
)

pytestmark = pytest.mark.urls(MEMBER_URLS)


def test_member_signs_in_sees_balance_redeems_a_reward_and_gets_a_coupon(page, live_server):
    tiers_make()
    login = member_make(points=1200)
    reward = reward_make(name="满100减20券", points_price=500, stock=5)
    page.set_viewport_size({"width": 375, "height": 740})

    page.goto("/member/")
    expect(page).to_have_url(re.compile(r"/member/login/\?next="))
    page.fill("#password-login input[name=email]", login.email)
    page.fill("#password-login input[name=password]", PASSWORD)
    page.click("#password-login button[type=submit]")

    expect(page).to_have_url(re.compile(r"/member/$"))
    expect(page.locator("#available-points")).to_have_text("1200")
    expect(page.locator("#tier-name")).to_have_text("会员 Member")
    # Mobile-friendly: nothing wider than the phone's screen.
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")

    page.click("nav.tabs >> text=Rewards")
    card = page.locator(f"[data-reward='{reward.pk}']")
    expect(card).to_contain_text("满100减20券")
    card.locator("a.button").click()
    expect(page).to_have_url(re.compile(rf"/member/rewards/{reward.pk}/redeem/$"))
    assert not RewardRedemption.objects.exists()  # the confirmation spends nothing
    page.click("#confirm-redeem")

    expect(page).to_have_url(re.compile(r"/member/redemptions/\d+/$"))
    redemption = RewardRedemption.objects.get(customer=login.customer)
    expect(page.locator("#coupon-code")).to_have_text(code_display(redemption.coupon.code))
    expect(page.locator(".messages")).to_contain_text("Redeemed!")

    page.click("nav.tabs >> text=Points")
    expect(page.locator("#available-points")).to_have_text("700")
    page.click("nav.tabs >> text=Coupons")
    expect(page.locator("body")).to_contain_text(code_display(redemption.coupon.code))

    page.click("button[lang=zh-hans]")
    expect(page.locator("h1")).to_have_text("我的优惠券")
    page.click("nav.tabs >> text=积分")
    expect(page.locator(".balance")).to_contain_text("可用积分")
    reward.refresh_from_db()
    assert reward.stock == 4


def test_a_member_cannot_open_another_members_redemption_in_the_browser(page, live_server):
    alice, bob = member_make(points=1000), member_make(points=1000)
    reward = reward_make(points_price=100)
    bobs = reward_redeem(customer=bob.customer, reward_id=reward.pk, idempotency_key="bob-1").redemption

    page.goto("/member/login/")
    page.fill("#password-login input[name=email]", alice.email)
    page.fill("#password-login input[name=password]", PASSWORD)
    page.click("#password-login button[type=submit]")
    expect(page.locator("#available-points")).to_have_text("1000")

    response = page.goto(f"/member/redemptions/{bobs.pk}/")

    assert response.status == 404
    assert code_display(bobs.coupon.code) not in page.content()
