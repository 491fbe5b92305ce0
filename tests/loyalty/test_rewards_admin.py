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


@pytest.mark.parametrize("role", ["marketer", "analyst", "support"])
def test_only_administrators_may_download_coupon_codes(client, django_user_model, role):
    """Every role may look at coupons (view_coupon); exporting the codes, which spends them for whoever
    holds the file, is its own permission that only the administrator role has."""
    from django.contrib.auth.models import Group

    batch = coupon_codes_generate(programme=programme_make(), quantity=3)
    staff = django_user_model.objects.create_user(f"{role}1", is_staff=True)
    staff.groups.add(Group.objects.get(name=role))
    administrator = django_user_model.objects.create_user("administrator1", is_staff=True)
    administrator.groups.add(Group.objects.get(name="administrator"))
    url = "/admin/loyalty/couponbatch/"
    download = {"action": "download_codes", ACTION_CHECKBOX_NAME: [batch.pk]}

    client.force_login(staff)
    assert staff.has_perm("loyalty.view_coupon") and not staff.has_perm("loyalty.export_coupon")
    listing = client.get(url)
    refused = client.post(url, download)

    assert listing.status_code == 200 and b'value="download_codes"' not in listing.content
    assert "attachment" not in refused.get("Content-Disposition", "")
    assert refused.status_code in (200, 302, 403) and not getattr(refused, "streaming", False)

    client.force_login(administrator)
    assert b'value="download_codes"' in client.get(url).content
    allowed = client.post(url, download)
    rows = list(csv.reader(io.StringIO(b"".join(allowed.streaming_content).decode())))
    assert allowed["Content-Disposition"] == 'attachment; filename="coupon-codes.csv"'
    assert {r[0] for r in rows[1:]} == set(Coupon.objects.values_list("code", flat=True))
