"""Staff manage the catalogue in the admin: generate a batch of codes for a programme, download it."""

import csv
import io

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME

from loyalty.models.rewards import Coupon, CouponBatch, MemberLogin
from loyalty.services.coupons import coupon_codes_generate
from tests.factories import CustomerFactory
from tests.loyalty.test_member_support import programme_make

pytestmark = pytest.mark.django_db


def test_generate_codes_action_asks_how_many_then_creates_them(admin_client):
    programme = programme_make(uses_per_code=2)
    url = "/admin/loyalty/couponprogramme/"

    form = admin_client.post(url, {"action": "generate_codes", ACTION_CHECKBOX_NAME: [programme.pk]})
    assert form.status_code == 200 and b'name="quantity"' in form.content
    done = admin_client.post(
        url,
        {"action": "generate_codes", ACTION_CHECKBOX_NAME: [programme.pk], "quantity": "2500"},
        follow=True,
    )

    assert done.status_code == 200 and "2500 codes generated" in done.content.decode()
    batch = CouponBatch.objects.get()
    assert Coupon.objects.filter(batch=batch, max_uses=2).count() == 2500


def test_too_many_codes_at_once_are_refused_with_the_form(admin_client):
    programme = programme_make()

    response = admin_client.post(
        "/admin/loyalty/couponprogramme/",
        {"action": "generate_codes", ACTION_CHECKBOX_NAME: [programme.pk], "quantity": "5000000"},
    )

    assert response.status_code == 200 and b"errorlist" in response.content
    assert not Coupon.objects.exists()


def test_a_batch_downloads_as_csv(admin_client):
    batch = coupon_codes_generate(programme=programme_make(), quantity=30)

    response = admin_client.post(
        "/admin/loyalty/couponbatch/", {"action": "download_codes", ACTION_CHECKBOX_NAME: [batch.pk]}
    )

    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert rows[0][0] == "code" and len(rows) == 31
    assert {r[0] for r in rows[1:]} == set(Coupon.objects.values_list("code", flat=True))


def test_staff_create_a_member_login_without_a_password(admin_client):
    customer = CustomerFactory()

    response = admin_client.post(
        "/admin/loyalty/memberlogin/add/",
        {"customer": customer.pk, "email": "Member@Example.cn", "is_active": "on"},
    )

    assert response.status_code == 302
    login = MemberLogin.objects.get()
    assert login.email == "member@example.cn" and login.password.startswith("!")


def test_admin_lists_render(admin_client):
    for model in [
        "reward",
        "couponprogramme",
        "coupon",
        "couponbatch",
        "couponredemption",
        "rewardredemption",
        "referral",
        "referralcode",
        "memberlogin",
        "memberapitoken",
    ]:
        assert admin_client.get(f"/admin/loyalty/{model}/").status_code == 200, model
    assert admin_client.get("/admin/loyalty/reward/add/").status_code == 200
