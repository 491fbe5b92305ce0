"""The staff side of the ledger: each member's ledger page, manual adjustments with a required reason
(a double submit adjusts once), and the demo programme passing the audit."""

import io
import re
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.urls import reverse

from crm.models import Event
from loyalty.models import LedgerEntry, LoyaltyAccount, ManualAdjustment, MemberLogin, Reward, Tier
from loyalty.services.audit import ledger_audit
from loyalty.services.ledger import account_for_customer
from tests.loyalty.ledger_helpers import T0, customer_make, order_make, process, programme_setup

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff_client(client):
    user = get_user_model().objects.create_superuser("ops", "ops@example.cn", "pw-ops-123456")
    client.force_login(user)
    client.user = user
    return client


def test_account_page_shows_ledger_lots_and_tier_history(staff_client):
    programme_setup()
    customer = customer_make()
    order_make(customer, total="1200")
    process(T0 + timedelta(hours=1))
    account = LoyaltyAccount.objects.get(customer=customer)
    page = staff_client.get(reverse("admin:loyalty_loyaltyaccount_change", args=[account.pk]))
    assert page.status_code == 200
    body = page.content.decode()
    assert "Ledger (latest 100 entries)" in body and "Tier history" in body and "银卡 Silver" in body
    # The page's title names the member, not only ids (in the header's title and the browser tab).
    assert f"Loyalty account #{account.pk}: {customer}" in re.sub(r"\s+", " ", body)
    chinese = staff_client.get(
        reverse("admin:loyalty_loyaltyaccount_change", args=[account.pk]), HTTP_ACCEPT_LANGUAGE="zh-hans"
    )
    assert f"会员账户 #{account.pk}：{customer}" in chinese.content.decode()
    for name in (
        "ledgerentry",
        "pointlot",
        "tierchange",
        "tier",
        "earnrule",
        "promotion",
        "programmesettings",
    ):
        assert staff_client.get(reverse(f"admin:loyalty_{name}_changelist")).status_code == 200


def test_manual_adjustment_needs_a_reason_and_a_double_submit_adjusts_once(staff_client):
    programme_setup()
    account = account_for_customer(customer=customer_make())
    url = reverse("admin:loyalty_manualadjustment_add")
    form = staff_client.get(url + f"?account={account.pk}")
    token = form.context["adminform"].form["token"].value()

    missing = staff_client.post(url, {"account": account.pk, "points": 50, "reason": "", "token": token})
    assert missing.status_code == 200 and LedgerEntry.objects.count() == 0

    data = {"account": account.pk, "points": 50, "reason": "complaint #123", "token": token}
    assert staff_client.post(url, data).status_code == 302
    assert staff_client.post(url, data).status_code == 302
    account.refresh_from_db()
    assert account.available == 50
    adjustment = ManualAdjustment.objects.get()
    assert adjustment.created_by == staff_client.user and adjustment.entry.created_by == staff_client.user

    too_much = staff_client.post(
        url, {"account": account.pk, "points": -80, "reason": "error", "token": "other-token"}
    )
    assert too_much.status_code == 200 and b"Not enough points" in too_much.content
    account.refresh_from_db()
    assert account.available == 50


def test_demo_programme_seeds_idempotently_and_passes_the_audit():
    customers = [customer_make() for _ in range(3)]
    for n, customer in enumerate(customers):
        order_make(customer, total=f"{(n + 1) * 1500}", placed_at=T0)
    Event.objects.update(received_at=T0)
    call_command("loyalty_seed_demo")
    call_command("loyalty_seed_demo")
    assert Tier.objects.count() == 4
    assert LedgerEntry.objects.filter(kind="earn", idempotency_key__startswith="order:").count() == 3
    assert (
        LedgerEntry.objects.filter(kind="earn", idempotency_key__startswith="bonus:first_order").count() == 3
    )
    assert ledger_audit() == []
    call_command("loyalty_audit")


def test_demo_programme_has_a_catalogue_and_prints_a_member_login_that_signs_in(client):
    customer = customer_make(email="li.na@example.cn")
    order_make(customer, total="3000", placed_at=T0)
    out = io.StringIO()
    call_command("loyalty_seed_demo", stdout=out)
    call_command("loyalty_seed_demo", stdout=io.StringIO())

    assert Reward.objects.count() == 4 and MemberLogin.objects.count() == 1
    assert "email: li.na@example.cn  password: member-demo-2026" in out.getvalue()
    signed_in = client.post("/member/login/", {"email": "li.na@example.cn", "password": "member-demo-2026"})
    assert signed_in.status_code == 302
    assert client.get("/member/rewards/").status_code == 200
