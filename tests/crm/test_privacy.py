"""Privacy requests: export everything held on a customer; erase a customer's personal data."""

import json
from decimal import Decimal

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.core.management import CommandError, call_command
from django.urls import reverse

from crm.models import (
    Consent,
    ConsentChange,
    ConsentStatus,
    Customer,
    CustomerIdentity,
    CustomerMerge,
    CustomerTag,
    Event,
    Order,
    OrderLine,
    PrivacyRequest,
    Refund,
    Tag,
)
from crm.services.consent import consent_set
from crm.services.customers import customer_upsert
from crm.services.privacy import ERASED_NAME, PrivacyRefused, customer_erase, customer_export_data
from tests.factories import CustomerFactory, EventFactory, OrderFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def customer():
    result = customer_upsert(
        external_id="EXT-1",
        profile={"name": "陈静", "email": "chen.jing@example.cn", "phone": "13800001111", "city": "成都"},
        identities=[("wechat_openid", "oWx-chen")],
        source="test",
    )
    customer = result.customer
    customer.birthday = "1990-05-01"
    customer.save()
    order = OrderFactory(customer=customer, external_id="JD-1", total=Decimal("300.00"))
    OrderLine.objects.create(
        order=order, line_no=1, sku="MILK", name="奶粉", quantity=1, unit_price=300, line_total=300
    )
    Refund.objects.create(
        order=order, external_id="RF-1", amount=Decimal("50.00"), refunded_at=order.placed_at, fingerprint="x"
    )
    EventFactory(customer=customer, type="page_view", properties={"path": "/milk"})
    EventFactory(customer=customer, type="add_to_cart")
    consent_set(customer=customer, channel="sms", status=ConsentStatus.OPTED_IN, source="signup")
    consent_set(customer=customer, channel="email", status=ConsentStatus.OPTED_IN, source="signup")
    CustomerTag.objects.create(customer=customer, tag=Tag.objects.create(name="孕期"))
    CustomerMerge.objects.create(
        survivor=customer,
        merged_customer_id=999_001,
        merged_snapshot={"name": "陈静 old", "email": "old@example.cn"},
        trigger="identity",
    )
    return customer


def test_export_contains_everything_held_on_the_customer(customer, admin_user):
    data = customer_export_data(customer=customer, requested_by=admin_user, via="admin")
    json.dumps(data)  # plain JSON
    assert data["customer"]["name"] == "陈静" and data["customer"]["email"] == "chen.jing@example.cn"
    assert ("wechat_openid", "oWx-chen") in {(i["kind"], i["value"]) for i in data["identities"]}
    assert {c["channel"] for c in data["consents"]} == {"sms", "email"}
    assert len(data["consent_history"]) == 2
    assert [t["tag__name"] for t in data["tags"]] == ["孕期"]
    [order] = data["orders"]
    assert order["external_id"] == "JD-1" and order["total"] == "300.00"
    assert order["lines"][0]["name"] == "奶粉" and order["refunds"][0]["amount"] == "50.00"
    assert {e["type"] for e in data["events"]} == {"page_view", "add_to_cart"}
    assert data["merges"][0]["merged_snapshot"]["name"] == "陈静 old"
    assert data["audit_history"]["customer"]  # the history of the record is the customer's data too
    request = PrivacyRequest.objects.get(pk=data["privacy_request_id"])
    assert request.kind == "export" and request.requested_by == admin_user and request.via == "admin"
    assert request.summary["orders"] == 1 and request.summary["events"] == 2


def test_export_finds_rows_of_other_relations_generically(customer):
    # StaticListMember points at Customer with related_name="+" and is not named by the export: rows of
    # apps further right (loyalty, campaigns) are found the same way.
    from crm.models import StaticList, StaticListMember

    StaticListMember.objects.create(customer=customer, static_list=StaticList.objects.create(name="VIP"))
    data = customer_export_data(customer=customer, requested_by=None, via="command")
    assert [row["customer_id"] for row in data["other"]["crm.StaticListMember"]] == [customer.pk]


def test_admin_export_action_downloads_json(admin_client, customer):
    response = admin_client.post(
        reverse("admin:crm_customer_changelist"),
        {"action": "export_selected", ACTION_CHECKBOX_NAME: [customer.pk]},
    )
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/json")
    assert f"customer-{customer.pk}-export.json" in response["Content-Disposition"]
    data = json.loads(response.content)
    assert data["orders"][0]["external_id"] == "JD-1"
    assert "陈静" in response.content.decode()  # not \u-escaped
    button = admin_client.post(reverse("admin:crm_customer_export", args=[customer.pk]))
    assert json.loads(button.content)["customer"]["id"] == customer.pk
    assert PrivacyRequest.objects.filter(customer=customer, kind="export").count() == 2


def test_export_command_writes_a_file(customer, tmp_path):
    out = tmp_path / "export.json"
    call_command("export_customer", customer.pk, out=str(out))
    data = json.loads(out.read_text(encoding="utf-8"))
    assert data["orders"][0]["external_id"] == "JD-1"
    assert PrivacyRequest.objects.get(customer=customer).via == "command"
    with pytest.raises(CommandError):
        call_command("export_customer", 987654)


def test_erase_anonymises_detaches_events_and_keeps_orders(customer, admin_user):
    customer_id = customer.pk
    request = customer_erase(
        customer=customer, requested_by=admin_user, via="admin", reason="PIPL request #7"
    )
    customer.refresh_from_db()
    assert customer.name == ERASED_NAME
    assert (customer.email, customer.phone, customer.city, customer.birthday) == ("", "", "", None)
    assert customer.external_id == f"erased-{customer_id}"
    assert customer.erased_at is not None
    assert not CustomerIdentity.objects.filter(customer=customer).exists()
    assert set(Consent.objects.filter(customer=customer).values_list("status", flat=True)) == {"opted_out"}
    assert ConsentChange.objects.filter(customer=customer, status="opted_out", source="erasure").count() == 2
    assert not CustomerTag.objects.filter(customer=customer).exists()
    assert not Event.objects.filter(customer=customer).exists()
    assert Event.objects.filter(customer__isnull=True, type="page_view").count() == 1  # kept, detached
    assert Order.objects.get(external_id="JD-1").customer_id == customer_id  # kept for accounting
    assert Refund.objects.filter(external_id="RF-1").exists()
    assert CustomerMerge.objects.get(survivor=customer).merged_snapshot == {"erased": True}
    # No history row still holds the old personal data.
    history = list(
        Customer.history.filter(id=customer_id).values("name", "email", "phone", "history_user_id")
    )
    assert history == [{"name": ERASED_NAME, "email": "", "phone": "", "history_user_id": admin_user.pk}]
    assert not CustomerIdentity.history.filter(value__in=["oWx-chen", "chen.jing@example.cn"]).exists()
    assert (
        request.kind == "erase" and request.reason == "PIPL request #7" and request.requested_by == admin_user
    )
    assert request.summary["events_detached"] == 2 and request.summary["orders_kept"] == 1


def test_erased_customer_is_not_found_again_by_old_identifiers(customer):
    customer_erase(customer=customer, requested_by=None, via="command", reason="x")
    again = customer_upsert(
        profile={"email": "chen.jing@example.cn"}, identities=[("wechat_openid", "oWx-chen")]
    )
    assert again.created and again.customer.pk != customer.pk
    again = customer_upsert(external_id="EXT-1", profile={"name": "someone"})
    assert again.customer.pk != customer.pk


def test_erase_twice_is_refused(customer):
    customer_erase(customer=customer, requested_by=None, via="command", reason="x")
    with pytest.raises(PrivacyRefused):
        customer_erase(customer=customer, requested_by=None, via="command", reason="again")


def test_admin_erase_action_confirms_first_then_erases(admin_client, admin_user, customer):
    url = reverse("admin:crm_customer_changelist")
    data = {"action": "erase_selected", ACTION_CHECKBOX_NAME: [customer.pk]}
    page = admin_client.post(url, data)
    assert page.status_code == 200
    html = page.content.decode()
    assert "Orders, order lines and refunds" in html and "Every identifier" in html  # kept / erased named
    customer.refresh_from_db()
    assert not customer.is_erased
    assert (
        admin_client.post(url, {**data, "post": "yes", "reason": "ticket 9"}).status_code == 200
    )  # no confirm
    customer.refresh_from_db()
    assert not customer.is_erased
    response = admin_client.post(url, {**data, "post": "yes", "reason": "ticket 9", "confirm": "on"})
    assert response.status_code == 302
    customer.refresh_from_db()
    assert customer.is_erased
    assert PrivacyRequest.objects.get(customer=customer, kind="erase").requested_by == admin_user
    # Erased: read-only, and no more erase button.
    change = admin_client.get(reverse("admin:crm_customer_change", args=[customer.pk]))
    assert 'name="_save"' not in change.content.decode() and not change.context["c360"]["can_erase"]


def test_admin_erase_page_of_one_customer(admin_client, customer):
    url = reverse("admin:crm_customer_erase", args=[customer.pk])
    assert admin_client.get(url).status_code == 200
    response = admin_client.post(url, {"reason": "by phone", "confirm": "on"})
    assert response.status_code == 302
    customer.refresh_from_db()
    assert customer.is_erased


def test_erase_command_needs_confirmation_or_yes(customer, monkeypatch):
    monkeypatch.setattr("builtins.input", lambda prompt: "no")
    with pytest.raises(CommandError, match="Not confirmed"):
        call_command("erase_customer", customer.pk, reason="x")
    customer.refresh_from_db()
    assert not customer.is_erased
    call_command("erase_customer", customer.pk, reason="request 3", yes=True)
    customer.refresh_from_db()
    assert customer.is_erased
    assert PrivacyRequest.objects.get(customer=customer, kind="erase").via == "command"
    with pytest.raises(CommandError, match="already erased"):
        call_command("erase_customer", customer.pk, reason="x", yes=True)


def test_erase_with_no_data_at_all():
    bare = CustomerFactory()
    request = customer_erase(customer=bare, requested_by=None, via="command", reason="x")
    assert request.summary["identities_deleted"] == 0 and request.summary["events_detached"] == 0
