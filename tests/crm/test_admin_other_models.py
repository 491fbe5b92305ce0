"""Admin of the other CDP models: read-only append-only tables, fast event filters, API keys shown once,
and a locked-out admin login that gets a clear page."""

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.urls import reverse

from crm.api.authentication import hash_secret
from crm.models import ApiKey, CustomerMerge, Event, PrivacyRequest
from tests.factories import CustomerFactory, EventFactory, OrderFactory, ProductFactory

pytestmark = pytest.mark.django_db


def test_events_are_read_only_and_filtered_by_type_and_channel(admin_client):
    customer = CustomerFactory()
    EventFactory(customer=customer, type="page_view", channel="web")
    EventFactory(customer=customer, type="purchase", channel="app")
    EventFactory(customer=None, type="purchase", channel="web")
    url = reverse("admin:crm_event_changelist")
    response = admin_client.get(url)
    assert response.status_code == 200
    type_filter = next(s for s in response.context["cl"].filter_specs if s.parameter_name == "type")
    assert [value for value, _label in type_filter.lookup_choices] == ["page_view", "purchase"]
    filtered = admin_client.get(url, {"type": "purchase", "channel__exact": "web"}).context["cl"].result_list
    assert [(e.type, e.channel) for e in filtered] == [("purchase", "web")]
    by_customer = admin_client.get(url, {"customer__id__exact": customer.pk}).context["cl"].result_list
    assert len(by_customer) == 2
    event = Event.objects.order_by("id").first()
    detail = admin_client.get(reverse("admin:crm_event_change", args=[event.pk]))
    assert detail.status_code == 200 and 'name="_save"' not in detail.content.decode()
    assert f"{customer} (#{customer.pk})" in detail.content.decode()
    assert admin_client.get(reverse("admin:crm_event_add")).status_code == 403
    assert admin_client.post(reverse("admin:crm_event_delete", args=[event.pk])).status_code == 403


def test_orders_show_lines_and_refunds_read_only(admin_client):
    order = OrderFactory(external_id="TM-777", customer=CustomerFactory(name="王芳 Wang Fang"))
    order.lines.create(line_no=1, sku="S1", name="湿巾", quantity=3, unit_price=10, line_total=30)
    order.refunds.create(external_id="R-777", amount=10, refunded_at=order.placed_at, fingerprint="x")
    response = admin_client.get(reverse("admin:crm_order_change", args=[order.pk]))
    html = response.content.decode()
    assert response.status_code == 200 and "湿巾" in html and "R-777" in html
    assert f"王芳 Wang Fang (#{order.customer_id})" in html  # whose order it is, not only a number
    assert 'name="_save"' not in html
    found = admin_client.get(reverse("admin:crm_order_changelist"), {"q": "TM-7"}).context["cl"].result_list
    assert [o.external_id for o in found] == ["TM-777"]


def test_merges_and_privacy_requests_are_read_only(admin_client):
    customer = CustomerFactory()
    merge = CustomerMerge.objects.create(
        survivor=customer, merged_customer_id=5, merged_snapshot={"name": "张伟"}, trigger="manual"
    )
    request = PrivacyRequest.objects.create(customer=customer, kind="export", summary={"orders": 0})
    for name, obj in (("customermerge", merge), ("privacyrequest", request)):
        assert admin_client.get(reverse(f"admin:crm_{name}_changelist")).status_code == 200
        detail = admin_client.get(reverse(f"admin:crm_{name}_change", args=[obj.pk]))
        assert detail.status_code == 200 and 'name="_save"' not in detail.content.decode()
        assert admin_client.get(reverse(f"admin:crm_{name}_add")).status_code == 403
    assert (
        "张伟"
        in admin_client.get(reverse("admin:crm_customermerge_change", args=[merge.pk])).content.decode()
    )


def test_products_and_tags_are_editable(admin_client):
    ProductFactory(sku="SKU-1", name="面霜")
    assert "面霜" in admin_client.get(reverse("admin:crm_product_changelist")).content.decode()
    response = admin_client.post(
        reverse("admin:crm_tag_add"), {"name": "高价值", "kind": "manual", "description": ""}
    )
    assert response.status_code == 302, response.context["adminform"].form.errors


def test_api_key_token_is_shown_once_and_only_its_hash_is_stored(admin_client, admin_user):
    response = admin_client.post(
        reverse("admin:crm_apikey_add"), {"name": "Tmall sync", "scopes": ["orders:write", "events:write"]}
    )
    assert response.status_code == 200
    token = response.context["token"]
    key = ApiKey.objects.get()
    assert token.startswith(key.prefix + ".") and token in response.content.decode()
    assert key.key_hash == hash_secret(token.split(".", 1)[1])
    assert sorted(key.scopes) == ["events:write", "orders:write"] and key.created_by == admin_user
    assert "no-store" in response["Cache-Control"]
    again = admin_client.get(reverse("admin:crm_apikey_change", args=[key.pk])).content.decode()
    assert token not in again and token.split(".", 1)[1] not in again


def test_api_key_needs_a_known_scope(admin_client):
    response = admin_client.post(reverse("admin:crm_apikey_add"), {"name": "x", "scopes": ["admin:all"]})
    assert response.status_code == 200 and response.context["adminform"].form.errors
    assert not ApiKey.objects.exists()


def test_api_keys_are_revoked_not_deleted(admin_client):
    from crm.api.authentication import api_key_create

    key, _token = api_key_create(name="old", scopes=["customers:read"])
    response = admin_client.post(
        reverse("admin:crm_apikey_changelist"), {"action": "revoke_selected", ACTION_CHECKBOX_NAME: [key.pk]}
    )
    assert response.status_code == 302
    key.refresh_from_db()
    assert key.revoked_at is not None
    assert admin_client.post(reverse("admin:crm_apikey_delete", args=[key.pk])).status_code == 403


def test_locked_out_admin_login_gets_a_clear_page_not_a_500(client, django_user_model, settings):
    django_user_model.objects.create_user("staffer", password="right-password-123", is_staff=True)
    url = reverse("admin:login")
    for _ in range(settings.AXES_FAILURE_LIMIT):
        response = client.post(url, {"username": "staffer", "password": "wrong"})
        assert response.status_code in (200, 429)
    locked = client.post(url, {"username": "staffer", "password": "right-password-123"})
    assert locked.status_code == 429
    assert "locked" in locked.content.decode().lower()
    assert "_auth_user_id" not in client.session  # the right password does not get in while locked out


def test_lockout_page_template_renders_clearly(client, django_user_model, settings):
    # The project's own lockout page (AXES_LOCKOUT_TEMPLATE); the default above is axes' plain message.
    settings.AXES_LOCKOUT_TEMPLATE = "admin/crm/lockout.html"
    django_user_model.objects.create_user("staffer2", password="right-password-123", is_staff=True)
    url = reverse("admin:login")
    for _ in range(settings.AXES_FAILURE_LIMIT + 1):
        response = client.post(url, {"username": "staffer2", "password": "wrong"})
    assert response.status_code == 429
    html = response.content.decode()
    assert "Login temporarily locked" in html and "staffer2" in html and "Try again after" in html
