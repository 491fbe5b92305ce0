"""Staff and members read times on the business's clock (settings.TIME_ZONE, Asia/Shanghai by default)
in their language's date format, whatever UTC says."""

import zoneinfo
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.urls import reverse

from loyalty.models import Promotion
from loyalty.models.rewards import RewardRedemption
from loyalty.services.rewards import reward_redeem
from tests.loyalty.test_member_support import (
    MEMBER_URLS,
    PASSWORD,
    member_make,
    member_test_setup,  # noqa: F401
    reward_make,
)

pytestmark = pytest.mark.django_db

SHANGHAI = zoneinfo.ZoneInfo("Asia/Shanghai")


@pytest.fixture(autouse=True)
def shanghai(settings):
    settings.TIME_ZONE = "Asia/Shanghai"


def double_11() -> Promotion:
    return Promotion.objects.create(
        name="双11 Double 11",
        multiplier=Decimal("2.00"),
        starts_at=datetime(2026, 11, 11, 0, 0, tzinfo=SHANGHAI),  # 16:00 UTC on the 10th
        ends_at=datetime(2026, 11, 11, 23, 59, tzinfo=SHANGHAI),
    )


def test_the_double_11_promotion_starts_at_midnight_beijing_time_in_the_chinese_admin(admin_client):
    double_11()
    page = admin_client.get(
        reverse("admin:loyalty_promotion_changelist"), HTTP_ACCEPT_LANGUAGE="zh-hans"
    ).content.decode()
    assert "2026年11月11日 00:00" in page
    assert "2026年11月11日 23:59" in page
    assert "2026年11月10日 16:00" not in page  # UTC


def test_the_double_11_promotion_starts_at_midnight_beijing_time_in_the_english_admin(admin_client):
    double_11()
    page = admin_client.get(
        reverse("admin:loyalty_promotion_changelist"), HTTP_ACCEPT_LANGUAGE="en"
    ).content.decode()
    assert "11 Nov 2026, 00:00" in page
    assert "Nov. 10" not in page and "4 p.m." not in page


def test_the_promotion_form_shows_and_reads_times_in_beijing_time(admin_client):
    promotion = double_11()
    url = reverse("admin:loyalty_promotion_change", args=[promotion.pk])
    form = admin_client.get(url, HTTP_ACCEPT_LANGUAGE="en").content.decode()
    assert 'name="starts_at_0" value="2026-11-11"' in form
    assert 'name="starts_at_1" value="00:00:00"' in form

    response = admin_client.post(
        url,
        {
            "name": promotion.name,
            "multiplier": "2.00",
            "category": "",
            "starts_at_0": "2026-11-12",
            "starts_at_1": "08:00:00",
            "ends_at_0": "2026-11-12",
            "ends_at_1": "20:00:00",
            "is_active": "on",
        },
        HTTP_ACCEPT_LANGUAGE="en",
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    promotion.refresh_from_db()
    # What staff typed is Beijing time: 08:00 there is midnight UTC.
    assert promotion.starts_at == datetime(2026, 11, 12, 0, 0, tzinfo=UTC)


@pytest.mark.urls(MEMBER_URLS)
@pytest.mark.parametrize(
    ("language", "shown"),
    [("zh-hans", "2026年11月11日 10:02"), ("en", "11 Nov 2026, 10:02")],
)
def test_the_portal_shows_a_redemption_at_beijing_time(client, language, shown):
    login = member_make(points=1000)
    redemption = reward_redeem(
        customer=login.customer, reward_id=reward_make(points_price=100).pk, idempotency_key="d11"
    ).redemption
    # 10:02 in Beijing is 02:02 UTC, which the portal used to show.
    RewardRedemption.objects.filter(pk=redemption.pk).update(
        created_at=datetime(2026, 11, 11, 2, 2, tzinfo=UTC)
    )
    assert client.post("/member/login/", {"email": login.email, "password": PASSWORD}).status_code == 302

    page = client.get(f"/member/redemptions/{redemption.pk}/", HTTP_ACCEPT_LANGUAGE=language).content.decode()

    assert shown in page
    assert "02:02" not in page
