"""Manual merges: the admin's "Merge into…" action with its side-by-side confirmation, and the command."""

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.core.management import CommandError, call_command
from django.urls import reverse
from django.utils import timezone

from crm.models import Consent, ConsentStatus, Customer, CustomerMerge, CustomerTag, Event, Order, Tag
from crm.services.consent import consent_set
from tests.factories import CustomerFactory, EventFactory, OrderFactory

pytestmark = pytest.mark.django_db

URL = reverse("admin:crm_customer_changelist")


@pytest.fixture
def pair():
    keep = CustomerFactory(name="王芳", city="")
    drop = CustomerFactory(name="王芳 (duplicate)", city="上海")
    OrderFactory(customer=drop, external_id="TM-DROP-1")
    EventFactory(customer=drop, type="page_view")
    consent_set(customer=drop, channel="sms", status=ConsentStatus.OPTED_IN, source="store")
    CustomerTag.objects.create(customer=drop, tag=Tag.objects.create(name="孕妈"))
    return keep, drop


def post_action(client, customers, **extra):
    data = {"action": "merge_selected", ACTION_CHECKBOX_NAME: [c.pk for c in customers], **extra}
    return client.post(URL, data)


def test_merge_action_shows_both_customers_side_by_side_first(admin_client, pair):
    keep, drop = pair
    response = post_action(admin_client, pair)
    assert response.status_code == 200
    html = response.content.decode()
    assert "王芳 (duplicate)" in html and "上海" in html
    assert f'value="{keep.pk}"' in html and f'value="{drop.pk}"' in html
    assert Customer.objects.filter(pk=drop.pk).exists()  # nothing merged yet


def test_merge_action_moves_orders_events_consents_tags_and_records_the_merge(admin_client, admin_user, pair):
    keep, drop = pair
    drop_id = drop.pk
    response = post_action(admin_client, pair, post="yes", survivor=keep.pk, reason="same phone, called in")
    assert response.status_code == 302
    assert response["Location"] == reverse("admin:crm_customer_change", args=[keep.pk])
    assert not Customer.objects.filter(pk=drop_id).exists()
    assert Order.objects.get(external_id="TM-DROP-1").customer_id == keep.pk
    assert Event.objects.filter(customer=keep).count() == 1
    assert Consent.objects.get(customer=keep, channel="sms").status == ConsentStatus.OPTED_IN
    assert CustomerTag.objects.filter(customer=keep, tag__name="孕妈").exists()
    merge = CustomerMerge.objects.get(survivor=keep)
    assert merge.merged_customer_id == drop_id
    assert merge.trigger == CustomerMerge.Trigger.MANUAL
    assert merge.performed_by == admin_user
    assert merge.reason == "same phone, called in"
    assert merge.merged_snapshot["name"] == "王芳 (duplicate)"
    keep.refresh_from_db()
    assert keep.city == "上海"  # blank fields filled from the merged customer
    page = admin_client.get(reverse("admin:crm_customer_change", args=[keep.pk])).content.decode()
    assert f"#{drop_id}" in page and "TM-DROP-1" in page


def test_staff_may_keep_the_newer_customer(admin_client, pair):
    keep, drop = pair
    post_action(admin_client, pair, post="yes", survivor=drop.pk, reason="newer record is right")
    assert Customer.objects.filter(pk=drop.pk).exists() and not Customer.objects.filter(pk=keep.pk).exists()


def test_merge_needs_a_reason(admin_client, pair):
    keep, drop = pair
    response = post_action(admin_client, pair, post="yes", survivor=keep.pk, reason="")
    assert response.status_code == 200 and response.context["form"].errors
    assert Customer.objects.filter(pk=drop.pk).exists()


def test_merge_needs_exactly_two_customers(admin_client, pair):
    third = CustomerFactory()
    response = post_action(admin_client, [*pair, third], post="yes", survivor=pair[0].pk, reason="x")
    assert response.status_code == 302
    assert Customer.objects.count() == 3


def test_erased_customer_cannot_be_merged(admin_client, pair):
    keep, drop = pair
    Customer.objects.filter(pk=drop.pk).update(erased_at=timezone.now())
    post_action(admin_client, pair, post="yes", survivor=keep.pk, reason="x")
    assert Customer.objects.filter(pk=drop.pk).exists()
    with pytest.raises(CommandError, match="erased"):
        call_command("merge_customers", keep.pk, drop.pk, reason="x")


def test_merge_customers_command(pair, capsys):
    keep, drop = pair
    drop_id = drop.pk
    call_command("merge_customers", keep.pk, drop_id, reason="ticket 42")
    assert not Customer.objects.filter(pk=drop_id).exists()
    merge = CustomerMerge.objects.get(survivor=keep)
    assert merge.trigger == CustomerMerge.Trigger.MANUAL and merge.reason == "ticket 42"
    assert Order.objects.get(external_id="TM-DROP-1").customer_id == keep.pk
    assert f"Customer {drop_id} merged into {keep.pk}" in capsys.readouterr().out


def test_merge_customers_command_refuses_unknown_or_same_ids(pair):
    keep, _drop = pair
    with pytest.raises(CommandError):
        call_command("merge_customers", keep.pk, keep.pk, reason="x")
    with pytest.raises(CommandError, match="No customer"):
        call_command("merge_customers", keep.pk, 987654, reason="x")
