"""Consent changed from the admin goes through consent_set: history kept, with the staff user."""

import pytest
from django.urls import reverse
from django.utils import timezone

from crm.models import Consent, ConsentChange, ConsentStatus, Customer
from crm.services.consent import consent_set
from tests.factories import CustomerFactory

pytestmark = pytest.mark.django_db


def consent_url(customer):
    return reverse("admin:crm_customer_consent", args=[customer.pk])


def test_opt_in_then_out_from_the_360_page_keeps_history_with_the_staff_user(admin_client, admin_user):
    customer = CustomerFactory()
    response = admin_client.post(
        consent_url(customer), {"channel": "sms", "status": "opted_in", "source": "电话"}
    )
    assert response.status_code == 302
    assert response["Location"].endswith(f"/{customer.pk}/change/#consents")
    admin_client.post(
        consent_url(customer), {"channel": "sms", "status": "opted_out", "source": "store visit"}
    )
    assert Consent.objects.get(customer=customer, channel="sms").status == ConsentStatus.OPTED_OUT
    changes = list(ConsentChange.objects.filter(customer=customer).order_by("occurred_at", "id"))
    assert [(c.previous_status, c.status, c.source) for c in changes] == [
        ("", "opted_in", "电话"),
        ("opted_in", "opted_out", "store visit"),
    ]
    assert all(c.changed_by == admin_user for c in changes)
    # simple-history also knows who it was (HistoryRequestMiddleware).
    assert {h.history_user for h in Consent.history.filter(customer_id=customer.pk)} == {admin_user}
    page = admin_client.get(reverse("admin:crm_customer_change", args=[customer.pk])).content.decode()
    assert "store visit" in page and "电话" in page and admin_user.username in page


def test_consent_form_needs_a_source_and_a_known_channel(admin_client):
    customer = CustomerFactory()
    admin_client.post(consent_url(customer), {"channel": "sms", "status": "opted_in", "source": ""})
    admin_client.post(consent_url(customer), {"channel": "fax", "status": "opted_in", "source": "x"})
    admin_client.post(consent_url(customer), {"channel": "sms", "status": "maybe", "source": "x"})
    assert not ConsentChange.objects.exists()


def test_support_role_may_set_consent_but_marketer_may_not(client, django_user_model):
    from django.contrib.auth.models import Group

    customer = CustomerFactory()
    support = django_user_model.objects.create_user("support1", is_staff=True)
    support.groups.add(Group.objects.get(name="support"))
    marketer = django_user_model.objects.create_user("marketer1", is_staff=True)
    marketer.groups.add(Group.objects.get(name="marketer"))
    data = {"channel": "email", "status": "opted_in", "source": "phone"}
    client.force_login(marketer)
    assert client.post(consent_url(customer), data).status_code == 403
    client.force_login(support)
    assert client.post(consent_url(customer), data).status_code == 302
    assert ConsentChange.objects.get(customer=customer).changed_by == support


def test_erased_customer_consent_cannot_be_given_again(admin_client):
    customer = CustomerFactory()
    Customer.objects.filter(pk=customer.pk).update(erased_at=timezone.now())
    admin_client.post(consent_url(customer), {"channel": "sms", "status": "opted_in", "source": "x"})
    assert not Consent.objects.filter(customer=customer).exists()


def test_consent_history_admin_is_read_only_and_filtered_by_customer(admin_client):
    customer, other = CustomerFactory(), CustomerFactory()
    consent_set(customer=customer, channel="sms", status="opted_in", source="a")
    consent_set(customer=other, channel="sms", status="opted_in", source="b")
    url = reverse("admin:crm_consentchange_changelist")
    response = admin_client.get(url, {"customer__id__exact": customer.pk})
    assert response.status_code == 200
    assert [c.customer_id for c in response.context["cl"].result_list] == [customer.pk]
    change = ConsentChange.objects.filter(customer=customer).get()
    detail = admin_client.get(reverse("admin:crm_consentchange_change", args=[change.pk]))
    assert detail.status_code == 200 and 'name="_save"' not in detail.content.decode()
    assert admin_client.get(reverse("admin:crm_consentchange_add")).status_code == 403
