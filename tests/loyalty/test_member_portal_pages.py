"""The member portal's tiers page, history (one row per order, with products and a running balance),
expiring points with their true last day, the confirmation before a redemption, and the coupon's QR code."""

import re
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from crm.clock import business_day_start, business_today
from crm.models import OrderLine
from loyalty.models import EarnRule, PointLot
from loyalty.models.rewards import RewardRedemption
from loyalty.selectors import AccountHistory
from loyalty.services.coupons import code_display
from loyalty.services.ledger import account_for_customer, points_adjust
from loyalty.services.rewards import reward_redeem
from tests.loyalty.ledger_helpers import order_make, process, programme_setup, refund_make
from tests.loyalty.test_member_support import (
    MEMBER_URLS,
    PASSWORD,
    member_make,
    member_test_setup,  # noqa: F401
    reward_make,
    tiers_make,
)

pytestmark = [pytest.mark.django_db, pytest.mark.urls(MEMBER_URLS)]


def _sign_in(client, login):
    response = client.post("/member/login/", {"email": login.email, "password": PASSWORD})
    assert response.status_code == 302


def _rows(page: str) -> list[str]:
    """The history's rows as text, tags stripped, whitespace collapsed."""
    items = re.findall(r'<li data-kind="[^"]+".*?</li>\s*(?=<li data-kind|</ul>)', page, flags=re.S)
    return [" ".join(re.sub(r"<[^>]+>", " ", item).split()) for item in items]


def _orders_of(login, now):
    """Two orders a member placed (two lines, then one), their points available, and a redemption."""
    first = order_make(
        login.customer,
        total="300",
        lines=[("CRM-50", "skin", 1, "200"), ("MASK-5", "skin", 2, "100")],
        placed_at=now - timedelta(days=30),
        external_id="TM-1001",
    )
    OrderLine.objects.filter(order=first, line_no=1).update(name="保湿面霜 Moisturiser")
    OrderLine.objects.filter(order=first, line_no=2).update(name="面膜 Sheet mask")
    second = order_make(
        login.customer,
        total="50",
        lines=[("LIP-1", "make-up", 1, "50")],
        placed_at=now - timedelta(days=20),
        external_id="TM-1002",
    )
    OrderLine.objects.filter(order=second).update(name="润唇膏 Lip balm")
    process(now)
    return first, second


def test_history_shows_one_row_per_order_with_its_products_and_the_balance_after_each_row(client):
    now = timezone.now()
    programme_setup(return_window_days=15)
    login = member_make(points=100)
    _orders_of(login, now)
    reward = reward_make(points_price=400)
    reward_redeem(customer=login.customer, reward_id=reward.pk, idempotency_key="h-1")
    _sign_in(client, login)

    rows = _rows(client.get("/member/history/", HTTP_ACCEPT_LANGUAGE="en").content.decode())

    # Newest first by when each happened: the orders were placed before the grant, though accrued after.
    assert len(rows) == 4, rows  # the grant, two orders (three lines), the redemption
    redeem, grant, second, first = rows
    assert "Reward: 满100减20券 ¥20 voucher" in redeem and "-400" in redeem and "Balance 50" in redeem
    assert "test grant" in grant and "+100" in grant and "Balance 450" in grant
    assert "Order TM-1002" in second and "润唇膏 Lip balm" in second and "+50" in second
    assert "Balance 350" in second
    assert "Order TM-1001" in first and "保湿面霜 Moisturiser · 面膜 Sheet mask ×2" in first
    assert "+300" in first and "Balance 300" in first


def test_history_rows_page_by_row_not_by_entry_and_keep_their_balance_on_later_pages(client):
    now = timezone.now()
    programme_setup(return_window_days=15)
    login = member_make(points=1)
    account = account_for_customer(customer=login.customer)
    for n in range(20):
        points_adjust(account=account, points=1, idempotency_key=f"g-{n}", reason=f"gift {n}")
    _orders_of(login, now)  # 3 entries, 2 rows: 23 rows in all
    _sign_in(client, login)

    first = client.get("/member/history/", HTTP_ACCEPT_LANGUAGE="en").content.decode()
    second = _rows(client.get("/member/history/?page=2", HTTP_ACCEPT_LANGUAGE="en").content.decode())

    assert "Page 1 of 2" in first and len(_rows(first)) == 20
    assert len(second) == 3
    grant, later_order, earlier_order = second
    assert "test grant" in grant and "Balance 351" in grant
    assert "Order TM-1002" in later_order and "Balance 350" in later_order
    assert "Order TM-1001" in earlier_order and "Balance 300" in earlier_order


def test_a_bonus_and_a_partial_refund_are_rows_of_their_own_naming_what_they_are(client):
    now = timezone.now()
    programme_setup(return_window_days=0)
    EarnRule.objects.create(
        name="首单奖励 First-order bonus", kind="event", event="first_order", bonus_points=50
    )
    login = member_make()
    first, _second = _orders_of(login, now)
    refund_make(first, lines={2: 1}, at=now - timedelta(days=1))  # one sheet mask of two
    process(now)
    _sign_in(client, login)

    rows = _rows(client.get("/member/history/", HTTP_ACCEPT_LANGUAGE="en").content.decode())

    refund = next(r for r in rows if r.startswith("Refund of order TM-1001"))
    assert "面膜 Sheet mask" in refund and "保湿面霜" not in refund and "-50" in refund
    bonus = next(r for r in rows if r.startswith("首单奖励 First-order bonus"))
    assert "+50" in bonus and "保湿面霜" not in bonus
    order = next(r for r in rows if r.startswith("Order TM-1001"))
    assert "+300" in order
    assert "Balance 350" in rows[0]  # 300 + 50 + 50 - 50


def test_a_page_of_history_costs_a_fixed_number_of_queries(django_assert_num_queries):
    now = timezone.now()
    programme_setup(return_window_days=0)
    EarnRule.objects.create(name="First-order bonus", kind="event", event="first_order", bonus_points=50)
    login = member_make(points=1000)
    _orders_of(login, now)
    for n in range(3):
        reward_redeem(
            customer=login.customer, reward_id=reward_make(points_price=10).pk, idempotency_key=f"r{n}"
        )
    history = AccountHistory(account=account_for_customer(customer=login.customer))

    # The rows with their balance; the lines of their orders; the rewards redeemed; the bonus rules.
    with django_assert_num_queries(4):
        rows = history[0:20]

    assert len(rows) == 7 and {r.kind for r in rows} == {"earn", "redeem", "adjust"}


def test_points_expiring_at_a_business_midnight_show_the_last_day_they_can_be_used(client):
    """Lots of the end-of-next-year policy expire at 1 Jan 00:00 Shanghai: the member may use them on
    31 Dec. The page used to print the end of its 30-day window (today + 30 days) as their date."""
    now = timezone.now()
    last_day = business_today(now) + timedelta(days=10)
    login = member_make(points=2482)
    PointLot.objects.filter(account__customer=login.customer).update(
        expires_at=business_day_start(last_day + timedelta(days=1))
    )
    _sign_in(client, login)

    home_en = client.get("/member/", HTTP_ACCEPT_LANGUAGE="en").content.decode()
    history_zh = client.get("/member/history/", HTTP_ACCEPT_LANGUAGE="zh-hans").content.decode()

    expected_en = f"{last_day.day} {last_day:%b} {last_day.year}"
    assert f"2482 points are valid until {expected_en} (end of day)." in home_en
    window_end = business_today(now + timedelta(days=30))
    assert f"{window_end.day} {window_end:%b} {window_end.year}" not in home_en
    assert (
        f"2482 积分有效期至 {last_day.year}年{last_day.month}月{last_day.day}日（当天结束）。" in history_zh
    )


def test_points_expiring_during_a_day_show_the_time_on_the_business_clock(client):
    now = timezone.now()
    day = business_today(now) + timedelta(days=5)
    login = member_make(points=70)
    # 14:30 in Shanghai is 06:30 UTC: the page must say 14:30.
    PointLot.objects.filter(account__customer=login.customer).update(
        expires_at=business_day_start(day) + timedelta(hours=14, minutes=30)
    )
    _sign_in(client, login)

    home = client.get("/member/", HTTP_ACCEPT_LANGUAGE="zh-hans").content.decode()

    assert f"70 积分有效期至 {day.year}年{day.month}月{day.day}日 14:30。" in home


def test_tiers_page_lists_every_tier_with_its_benefits_and_the_members_place(client):
    tiers = tiers_make()
    tiers["gold"].birthday_gift_points = 500
    tiers["gold"].free_shipping = True
    tiers["gold"].earn_multiplier = "1.5"
    tiers["gold"].save()
    login = member_make(tier=tiers["silver"])
    _sign_in(client, login)

    en = client.get("/member/tiers/", HTTP_ACCEPT_LANGUAGE="en").content.decode()
    zh = client.get("/member/tiers/", HTTP_ACCEPT_LANGUAGE="zh-hans").content.decode()

    cards = re.findall(r'data-tier="(\w+)"[^>]*>', en)
    assert cards == ["member", "silver", "gold"]
    assert re.search(r'data-tier="silver" aria-current="true"', en)
    gold = en[en.index('data-tier="gold"') :]
    assert "Spend ¥5000 within 12 months." in gold
    assert "1.5× points on every order" in gold and "500 points on your birthday" in gold
    assert "Free shipping" in gold
    assert "Spend ¥5000.00 more within 12 months to reach 金卡 Gold." in en
    assert "您的等级" in zh and "包邮" in zh and "生日赠送 500 积分" in zh


def test_redeeming_asks_for_confirmation_first_and_the_confirmation_spends_nothing(client):
    login = member_make(points=1000)
    reward = reward_make(points_price=400, stock=3)
    _sign_in(client, login)

    rewards = client.get("/member/rewards/", HTTP_ACCEPT_LANGUAGE="en").content.decode()
    assert f'href="/member/rewards/{reward.pk}/redeem/"' in rewards
    assert "<form" not in rewards.split("<main>")[1].split("</main>")[0]  # no one-tap spending
    confirm = client.get(f"/member/rewards/{reward.pk}/redeem/", HTTP_ACCEPT_LANGUAGE="en")

    assert confirm.status_code == 200
    page = confirm.content.decode()
    assert 'id="confirm-price">400 points<' in page and 'id="confirm-remaining">600<' in page
    assert "csrfmiddlewaretoken" in page and "Spend 400 points" in page
    assert account_for_customer(customer=login.customer).available == 1000
    assert not RewardRedemption.objects.exists()


def test_confirming_without_the_forms_csrf_token_is_refused_and_spends_nothing():
    login = member_make(points=1000)
    reward = reward_make(points_price=400)
    client = Client(enforce_csrf_checks=True)
    page = client.get("/member/login/").content.decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    client.post("/member/login/", {"email": login.email, "password": PASSWORD, "csrfmiddlewaretoken": token})

    response = client.post(f"/member/rewards/{reward.pk}/redeem/", {"idempotency_key": "0123456789abcdef"})

    assert response.status_code == 403
    assert account_for_customer(customer=login.customer).available == 1000


def test_a_member_cannot_confirm_a_reward_that_is_not_on_offer(client):
    login = member_make(points=1000)
    reward = reward_make(points_price=400, is_active=False)
    _sign_in(client, login)

    assert client.get(f"/member/rewards/{reward.pk}/redeem/").status_code == 404
    assert client.get("/member/rewards/999999/redeem/").status_code == 404


def test_the_redeemed_coupon_shows_a_qr_code_of_its_code_beside_the_code(client):
    login = member_make(points=1000)
    reward = reward_make(points_price=100)
    redemption = reward_redeem(customer=login.customer, reward_id=reward.pk, idempotency_key="q-1").redemption
    _sign_in(client, login)

    page = client.get(f"/member/redemptions/{redemption.pk}/").content.decode()

    qr = re.search(r'<figure class="qr-box" id="coupon-qr">(<svg.*?</svg>)</figure>', page, flags=re.S)
    assert qr, "no inline SVG QR code"
    svg = qr.group(1)
    assert f"<title>{code_display(redemption.coupon.code)}</title>" in svg
    side = int(re.search(r'viewBox="0 0 (\d+) \1"', svg).group(1))
    assert side >= 21 + 8  # a regular QR code (version 1 or more, with its quiet zone), not a Micro QR
    assert "<script" not in svg and "http" not in svg.replace("http://www.w3.org/2000/svg", "")
    assert f'id="coupon-code">{code_display(redemption.coupon.code)}<' in page


def test_a_members_coupons_page_shows_qr_codes_of_their_own_coupons_only(client):
    alice, bob = member_make(points=1000), member_make(points=1000)
    reward = reward_make(points_price=100)
    alices = reward_redeem(customer=alice.customer, reward_id=reward.pk, idempotency_key="a-1").redemption
    bobs = reward_redeem(customer=bob.customer, reward_id=reward.pk, idempotency_key="b-1").redemption
    _sign_in(client, alice)

    page = client.get("/member/coupons/").content.decode()

    assert f"<title>{code_display(alices.coupon.code)}</title>" in page
    assert bobs.coupon.code not in page and code_display(bobs.coupon.code) not in page
    assert client.get(f"/member/redemptions/{bobs.pk}/").status_code == 404
