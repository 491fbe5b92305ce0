"""The customer 360 page (the customer's change view): its panels, a query count that does not grow with
the customer's data, edits through the services, and what a read-only role may do."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.contrib.auth.models import Group
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from crm.admin import customer_360 as crm_admin
from crm.models import (
    ConsentChannel,
    ConsentStatus,
    CustomerIdentity,
    CustomerMerge,
    CustomerTag,
    OrderLine,
    PrivacyRequest,
    Refund,
    Tag,
)
from crm.selectors import customer_360 as c360_selectors
from crm.services.consent import consent_set
from tests.factories import CustomerFactory, EventFactory, OrderFactory

pytestmark = pytest.mark.django_db


def url_of(customer):
    return reverse("admin:crm_customer_change", args=[customer.pk])


def give_data(customer, *, size: int):
    """`size` orders (two lines each, one refunded), events, identifiers, tags, consents, merges."""
    now = timezone.now()
    for i in range(size):
        order = OrderFactory(customer=customer, placed_at=now - timedelta(days=i), total=Decimal("120.00"))
        OrderLine.objects.create(
            order=order, line_no=1, sku=f"SKU-{i}", name="婴儿湿巾", quantity=2, unit_price=50, line_total=100
        )
        OrderLine.objects.create(
            order=order, line_no=2, sku="SKU-X", name="Folic acid", unit_price=20, line_total=20
        )
        if i % 2:
            Refund.objects.create(
                order=order, external_id=f"R-{customer.pk}-{i}", amount=20, refunded_at=now, fingerprint="f"
            )
        EventFactory(customer=customer, type="page_view", properties={"path": f"/p/{i}"})
        EventFactory(customer=customer, type="add_to_cart", properties={"sku": f"SKU-{i}"})
        CustomerIdentity.objects.create(
            customer=customer, kind="app_device_id", value=f"dev-{customer.pk}-{i}"
        )
        tag = Tag.objects.create(name=f"tag-{customer.pk}-{i}")
        CustomerTag.objects.create(customer=customer, tag=tag)
        CustomerMerge.objects.create(
            survivor=customer,
            merged_customer_id=10_000 + i,
            merged_snapshot={"name": "旧"},
            trigger="identity",
        )
        PrivacyRequest.objects.create(customer=customer, kind="export")
    for channel in ConsentChannel.values[: min(size, 4)]:
        consent_set(customer=customer, channel=channel, status=ConsentStatus.OPTED_IN, source="signup")
    for i in range(size):
        customer.city = f"城市{i}"
        customer.save()


def count_queries(client, url):
    with CaptureQueriesContext(connection) as captured:
        response = client.get(url)
    assert response.status_code == 200
    return len(captured), response


# The customer row, then one query per panel: timeline, orders (with lines and refunds: three), consents,
# tags, tag choices, identifiers, consent history, order count, merges, privacy requests, and the audit
# history of the customer, its identifiers and its tags; the product names of the timeline's SKUs,
# loyalty's points panel (here a customer without an account: one query), campaigns' messages panel
# (one query, pinned in tests/campaigns/test_messages_panel.py) and journeys' panel (two: the win-back
# history and the enrollments, pinned in
# tests/journeys/test_journeys_panel.py).
QUERIES_OF_THE_360_PAGE = 20


def test_360_page_query_count_does_not_grow_with_the_customers_data(
    admin_client, django_assert_max_num_queries
):
    small, big = CustomerFactory(), CustomerFactory()
    give_data(small, size=1)
    give_data(big, size=30)
    admin_client.get(url_of(small))  # warm-up: the first request of a process fills the content-type cache
    small_count, _ = count_queries(admin_client, url_of(small))
    big_count, _ = count_queries(admin_client, url_of(big))
    assert big_count == small_count
    # Every admin page pays for the session, the user and whatever the sidebar's apps ask: measure that on
    # the admin index, so the pin is on what the 360 page itself reads.
    baseline, _ = count_queries(admin_client, reverse("admin:index"))
    with django_assert_max_num_queries(baseline + QUERIES_OF_THE_360_PAGE):
        admin_client.get(url_of(big))


def test_360_page_shows_every_panel(admin_client):
    customer = CustomerFactory(name="王芳", phone="+8613800138000")
    give_data(customer, size=3)
    response = admin_client.get(url_of(customer))
    html = response.content.decode()
    for anchor in ("identities", "consents", "tags", "orders", "timeline", "history", "merges", "privacy"):
        assert f'id="{anchor}"' in html, anchor
    for slot in ("points", "messages", "journeys", "metrics"):
        assert f'id="panel-{slot}"' in html
    # Every slot is filled by its app (points, messages, journeys, metrics): no placeholder is left; the
    # journeys slot lists enrollments, then the win-back history.
    assert html.count("c360-card c360-placeholder") == 0 and "Journeys module" not in html
    assert 'data-testid="journeys-empty"' in html and 'data-testid="winback-empty"' in html
    assert "王芳" in html and "+8613800138000" in html
    order = customer.orders.order_by("-placed_at").first()
    assert order.external_id in html and "婴儿湿巾" in html
    assert "Added to cart" in html and "add_to_cart" not in html.replace('title="add_to_cart"', "")
    assert "−20.00" in html  # the refund under its order
    assert "dev-" in html  # identifiers
    assert "城市2" in html and "城市1" in html  # the history diff: old → new city


def test_orders_panel_is_capped_with_a_link_to_all_orders(admin_client):
    customer = CustomerFactory()
    give_data(customer, size=c360_selectors.ORDERS_SHOWN + 2)
    response = admin_client.get(url_of(customer))
    c360 = response.context["c360"]
    assert len(c360["orders"]) == c360_selectors.ORDERS_SHOWN
    assert c360["orders_total"] == c360_selectors.ORDERS_SHOWN + 2
    assert f"customer__id__exact={customer.pk}" in c360["orders_url"]
    assert admin_client.get(c360["orders_url"]).status_code == 200
    orders = [o.placed_at for o in c360["orders"]]
    assert orders == sorted(orders, reverse=True)  # latest first


def test_timeline_pages_by_query_parameter_without_counting(admin_client, monkeypatch):
    monkeypatch.setattr(c360_selectors, "TIMELINE_PAGE_SIZE", 3)
    customer = CustomerFactory()
    now = timezone.now()
    for i in range(7):
        EventFactory(customer=customer, type=f"event_{i}", occurred_at=now - timedelta(minutes=i))
    first = admin_client.get(url_of(customer)).context["c360"]
    assert [e["event"].type for e in first["events"]] == ["event_0", "event_1", "event_2"]
    assert first["timeline_has_older"]
    third = admin_client.get(url_of(customer), {"timeline": 3}).context["c360"]
    assert [e["event"].type for e in third["events"]] == ["event_6"]
    assert not third["timeline_has_older"]
    assert admin_client.get(url_of(customer), {"timeline": "junk"}).status_code == 200


def test_profile_edit_records_the_staff_user_in_the_audit_history(admin_client, admin_user):
    customer = CustomerFactory(name="李娜", phone="+8613900000000", city="上海")
    data = {
        "name": "李娜",
        "email": "LiNa@Example.CN",
        "phone": "139 0000 0001",
        "birthday": "",
        "gender": "female",
        "city": "杭州",
        "region": "",
        "time_zone": "Asia/Shanghai",
        "acquisition_channel": "",
        "utm_source": "",
        "utm_medium": "",
        "utm_campaign": "",
    }
    response = admin_client.post(url_of(customer), data)
    assert response.status_code == 302, response.context["adminform"].form.errors
    customer.refresh_from_db()
    assert customer.city == "杭州"
    assert customer.email == "lina@example.cn" and customer.phone == "+8613900000001"
    latest = customer.history.order_by("-history_date").first()
    assert latest.history_user == admin_user
    delta = latest.diff_against(latest.prev_record)
    assert {c.field for c in delta.changes} >= {"city", "email", "phone", "gender"}
    page = admin_client.get(url_of(customer)).content.decode()
    assert "上海" in page and "杭州" in page and admin_user.username in page
    history = admin_client.get(reverse("admin:crm_customer_history", args=[customer.pk]))
    assert history.status_code == 200 and "杭州" in history.content.decode()


def test_tags_added_and_removed_from_the_360_page(admin_client, admin_user):
    customer = CustomerFactory()
    vip = Tag.objects.create(name="VIP 会员")
    tags_url = reverse("admin:crm_customer_tags", args=[customer.pk])
    assert admin_client.post(tags_url, {"op": "add", "tag": vip.pk}).status_code == 302
    assert customer.customer_tags.filter(tag=vip).exists()
    assert (
        CustomerTag.history.filter(customer_id=customer.pk, history_type="+").get().history_user == admin_user
    )
    assert "VIP 会员" in admin_client.get(url_of(customer)).content.decode()
    assert admin_client.post(tags_url, {"op": "remove", "tag": vip.pk}).status_code == 302
    assert not customer.customer_tags.exists()
    assert (
        CustomerTag.history.filter(customer_id=customer.pk, history_type="-").get().history_user == admin_user
    )


def test_tag_form_rejects_nonsense_without_an_error_page(admin_client):
    customer = CustomerFactory()
    tags_url = reverse("admin:crm_customer_tags", args=[customer.pk])
    assert admin_client.post(tags_url, {"op": "add", "tag": "abc"}).status_code == 302
    assert admin_client.post(tags_url, {"op": "add", "tag": "²"}).status_code == 302  # isdigit(), not int()
    assert admin_client.post(tags_url, {"op": "explode", "tag": "1"}).status_code == 302
    assert admin_client.get(tags_url).status_code == 405
    assert not customer.customer_tags.exists()


@pytest.fixture
def analyst_client(client, django_user_model):
    analyst = django_user_model.objects.create_user("analyst1", password="x", is_staff=True)
    analyst.groups.add(Group.objects.get(name="analyst"))
    client.force_login(analyst)
    return client


def test_analyst_views_the_360_page_read_only_and_gets_403_on_change(analyst_client):
    customer = CustomerFactory(name="赵敏")
    give_data(customer, size=2)
    response = analyst_client.get(url_of(customer))
    assert response.status_code == 200
    html = response.content.decode()
    assert "赵敏" in html
    assert 'name="_save"' not in html  # read-only form
    c360 = response.context["c360"]
    assert not (c360["can_set_consent"] or c360["can_add_tags"] or c360["can_erase"] or c360["can_export"])
    assert analyst_client.post(url_of(customer), {"name": "changed"}).status_code == 403
    consent_url = reverse("admin:crm_customer_consent", args=[customer.pk])
    post = {"channel": "sms", "status": "opted_in", "source": "x"}
    assert analyst_client.post(consent_url, post).status_code == 403
    tags_url = reverse("admin:crm_customer_tags", args=[customer.pk])
    assert analyst_client.post(tags_url, {"op": "add", "tag": Tag.objects.first().pk}).status_code == 403
    assert analyst_client.post(reverse("admin:crm_customer_erase", args=[customer.pk])).status_code == 403
    assert analyst_client.post(reverse("admin:crm_customer_export", args=[customer.pk])).status_code == 403
    customer.refresh_from_db()
    assert customer.name == "赵敏"


def test_analyst_can_view_other_models_but_not_change_them(analyst_client):
    order = OrderFactory()
    assert analyst_client.get(reverse("admin:crm_order_changelist")).status_code == 200
    assert analyst_client.get(reverse("admin:crm_order_change", args=[order.pk])).status_code == 200
    assert analyst_client.get(reverse("admin:crm_tag_add")).status_code == 403
    assert analyst_client.get(reverse("admin:crm_product_add")).status_code == 403
    assert analyst_client.get(reverse("admin:crm_apikey_add")).status_code == 403


def test_add_customer_view_is_the_plain_form(admin_client):
    response = admin_client.get(reverse("admin:crm_customer_add"))
    assert response.status_code == 200
    assert "c360" not in response.context


def test_a_later_app_fills_a_slot_with_a_registered_panel(admin_client, monkeypatch, tmp_path, settings):
    template_dir = tmp_path / "templates"
    (template_dir / "points").mkdir(parents=True)
    (template_dir / "points" / "panel.html").write_text("<p>Balance: {{ panel_context.balance }} pts</p>")
    settings.TEMPLATES = [{**settings.TEMPLATES[0], "DIRS": [*settings.TEMPLATES[0]["DIRS"], template_dir]}]
    monkeypatch.setattr(crm_admin, "_customer_360_panels", {})
    crm_admin.customer_360_panel_register(
        crm_admin.Customer360Panel(
            slot="points",
            title="Points",
            template_name="points/panel.html",
            context=lambda r, c: {"balance": 1200},
        )
    )
    with pytest.raises(ValueError):
        crm_admin.customer_360_panel_register(crm_admin.Customer360Panel("nowhere", "x", "x.html"))
    html = admin_client.get(url_of(CustomerFactory())).content.decode()
    assert "Balance: 1200 pts" in html


def test_360_page_of_a_customer_without_audit_history(admin_client):
    # Customers loaded in bulk (COPY, bulk_create, a seed) have no history rows at all.
    customer = CustomerFactory(name="批量导入")
    customer.history.all().delete()
    response = admin_client.get(url_of(customer))
    assert response.status_code == 200 and "批量导入" in response.content.decode()


def test_recent_changes_show_the_latest_diffs_only(admin_client):
    customer = CustomerFactory(city="c0")
    for i in range(1, c360_selectors.HISTORY_SHOWN + 3):
        customer.city = f"c{i}"
        customer.save()
    changes = admin_client.get(url_of(customer)).context["c360"]["changes"]
    assert len(changes) == c360_selectors.HISTORY_SHOWN
    assert all(change["fields"] for change in changes)  # every change shown has its before/after
    last = c360_selectors.HISTORY_SHOWN + 2
    assert changes[0]["fields"][0]["old"] == f"c{last - 1}" and changes[0]["fields"][0]["new"] == f"c{last}"


def test_profile_edit_adds_the_new_phone_as_an_identifier_and_refuses_another_customers(admin_client):
    from crm.models import CustomerIdentity
    from tests.factories import CustomerFactory

    customer, other = CustomerFactory(phone=""), CustomerFactory()
    CustomerIdentity.objects.create(customer=other, kind="email", value="taken@example.cn")
    url = f"/admin/crm/customer/{customer.pk}/change/"
    form = {
        "name": customer.name,
        "email": customer.email,
        "phone": "139 1234 5678",
        "gender": "",
        "time_zone": "Asia/Shanghai",
        "acquisition_channel": "",
    }
    response = admin_client.post(url, form)
    assert response.status_code == 302, response.content.decode()[:2000]
    assert CustomerIdentity.objects.filter(customer=customer, kind="phone", value="+8613912345678").exists()

    response = admin_client.post(url, {**form, "email": "Taken@Example.cn"})
    assert response.status_code == 200
    assert f"already identifies customer #{other.pk}" in response.content.decode()
