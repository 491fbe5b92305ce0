"""Member portal pages: a member sees only their own data; rewards redeem once per click; Chinese and
English both render."""

import re
from decimal import Decimal

import pytest
from django.utils import translation

from loyalty.models.rewards import RewardRedemption
from loyalty.services.coupons import CouponInactive, code_display, coupon_issue, coupon_redeem
from loyalty.services.ledger import account_for_customer, points_adjust
from loyalty.services.rewards import reward_redeem
from tests.loyalty.test_member_support import (
    MEMBER_URLS,
    PASSWORD,
    member_make,
    member_test_setup,  # noqa: F401
    programme_make,
    reward_make,
    tiers_make,
)

pytestmark = [pytest.mark.django_db, pytest.mark.urls(MEMBER_URLS)]


def _sign_in(client, login):
    response = client.post("/member/login/", {"email": login.email, "password": PASSWORD})
    assert response.status_code == 302


def test_every_member_page_needs_a_signed_in_member(client):
    for path in [
        "/member/",
        "/member/history/",
        "/member/rewards/",
        "/member/coupons/",
        "/member/referral/",
        "/member/redemptions/1/",
    ]:
        response = client.get(path)
        assert response.status_code == 302 and response["Location"].startswith("/member/login/?next="), path


def test_a_member_sees_only_their_own_redemptions_and_coupons(client):
    alice, bob = member_make(points=1000), member_make(points=1000)
    reward = reward_make(points_price=100)
    alices = reward_redeem(customer=alice.customer, reward_id=reward.pk, idempotency_key="a-1").redemption
    bobs = reward_redeem(customer=bob.customer, reward_id=reward.pk, idempotency_key="b-1").redemption
    _sign_in(client, alice)

    assert client.get(f"/member/redemptions/{alices.pk}/").status_code == 200
    assert client.get(f"/member/redemptions/{bobs.pk}/").status_code == 404
    coupons = client.get("/member/coupons/").content.decode()
    assert code_display(alices.coupon.code) in coupons
    assert code_display(bobs.coupon.code) not in coupons


def test_home_shows_balance_tier_progress_and_the_referral_link(client):
    tiers_make()
    login = member_make(points=321)
    _sign_in(client, login)

    page = client.get("/member/", HTTP_ACCEPT_LANGUAGE="en").content.decode()

    assert 'id="available-points">321<' in page
    assert 'id="tier-name">会员 Member<' in page
    assert "Spend ¥1000.00 more within 12 months to reach 银卡 Silver." in page
    assert re.search(r"/member/join/\?ref=[A-Z0-9]{8}", page)


def test_redeeming_from_the_rewards_page_twice_with_one_form_redeems_once(client):
    login = member_make(points=1000)
    reward = reward_make(points_price=400, stock=3)
    _sign_in(client, login)
    page = client.get(f"/member/rewards/{reward.pk}/redeem/").content.decode()
    key = re.search(r'name="idempotency_key" value="([0-9a-f]+)"', page).group(1)

    first = client.post(f"/member/rewards/{reward.pk}/redeem/", {"idempotency_key": key})
    second = client.post(f"/member/rewards/{reward.pk}/redeem/", {"idempotency_key": key})

    assert first.status_code == second.status_code == 302
    assert first["Location"] == second["Location"]
    assert RewardRedemption.objects.filter(customer=login.customer).count() == 1
    receipt = client.get(first["Location"]).content.decode()
    code = RewardRedemption.objects.get().coupon.code
    assert code_display(code) in receipt
    assert account_for_customer(customer=login.customer).available == 600


def test_a_refused_redemption_explains_itself_and_changes_nothing(client):
    login = member_make(points=100)
    reward = reward_make(points_price=400, stock=3)
    _sign_in(client, login)

    response = client.post(
        f"/member/rewards/{reward.pk}/redeem/", {"idempotency_key": "0123456789abcdef"}, follow=True
    )

    assert "Not enough points available." in response.content.decode()
    reward.refresh_from_db()
    assert reward.stock == 3 and not RewardRedemption.objects.exists()


def test_history_is_paginated(client):
    login = member_make(points=5)
    account = account_for_customer(customer=login.customer)
    for n in range(24):
        points_adjust(account=account, points=1, idempotency_key=f"p-{n}", reason=f"gift {n}")
    _sign_in(client, login)

    first = client.get("/member/history/").content.decode()
    second = client.get("/member/history/?page=2").content.decode()

    assert "gift 23" in first and "gift 3" not in first and "Page 1 of 2" in first
    assert "gift 3" in second and "test grant" in second


def test_the_portal_speaks_chinese(client):
    tiers_make()
    login = member_make(points=88)
    _sign_in(client, login)

    home = client.get("/member/", HTTP_ACCEPT_LANGUAGE="zh-hans").content.decode()
    login_page = client.get("/member/login/", HTTP_ACCEPT_LANGUAGE="zh-hans").content.decode()

    assert '<html lang="zh-hans">' in home
    assert "可用积分" in home and "积分记录" in home
    assert "登录" in login_page


def test_referral_page_shows_the_link_and_how_many_joined(client):
    login = member_make()
    _sign_in(client, login)

    page = client.get("/member/referral/", HTTP_ACCEPT_LANGUAGE="en").content.decode()

    assert 'id="referral-link"' in page and "0 friends have joined with your link." in page


def test_a_coupon_of_a_switched_off_programme_is_not_usable_in_the_portal_nor_at_the_till(client):
    login = member_make()
    live, stopped = programme_make(), programme_make(name="stopped")
    usable = coupon_issue(programme=live, customer=login.customer)
    withdrawn = coupon_issue(programme=stopped, customer=login.customer)
    stopped.is_active = False
    stopped.save(update_fields=["is_active"])
    _sign_in(client, login)

    response = client.get("/member/coupons/")
    # The locale middleware leaves the request's language active; override() puts the test's back.
    with translation.override("en"):
        chinese = client.get("/member/coupons/", HTTP_ACCEPT_LANGUAGE="zh-hans").content.decode()

    assert {item["coupon"].pk: item["usable"] for item in response.context["coupons"]} == {
        usable.pk: True,
        withdrawn.pk: False,
    }
    assert "This coupon has been withdrawn." in response.content.decode()
    assert "此优惠券已作废。" in chinese
    order = {"order_total": Decimal("200"), "currency": "CNY", "customer_id": login.customer_id}
    with pytest.raises(CouponInactive):
        coupon_redeem(code=withdrawn.code, order_reference="o-withdrawn", **order)
    assert coupon_redeem(code=usable.code, order_reference="o-live", **order).created
