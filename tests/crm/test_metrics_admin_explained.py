"""The metrics pages a marketer reads: amounts with their currency, model columns explained in words."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import override

from crm.services.metrics import metrics_compute
from tests.crm.metrics_helpers import place_orders
from tests.factories import CustomerFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def computed():
    today = timezone.localdate()
    for n in range(6):
        customer = CustomerFactory()
        place_orders(customer, today - timedelta(days=200 - n), today - timedelta(days=90 - 7 * n))
    place_orders(CustomerFactory(), today - timedelta(days=20))
    return metrics_compute()


def test_predicted_value_and_spend_carry_their_currency(admin_client, computed):
    page = admin_client.get(reverse("admin:crm_customermetrics_changelist")).content.decode()
    assert "200.00 CNY" in page  # two orders of 100.00
    customer = CustomerFactory._meta.model.objects.order_by("pk").first()
    panel = admin_client.get(reverse("admin:crm_customer_change", args=[customer.pk])).content.decode()
    assert "200.00 CNY" in panel


@pytest.mark.parametrize(
    ("language", "words"),
    [("en", "times a day"), ("zh-hans", "每天")],
)
def test_model_columns_explain_themselves_in_the_page_language(admin_client, computed, language, words):
    with override(language):
        url = reverse("admin:crm_metricsrun_changelist")
    page = admin_client.get(url, HTTP_ACCEPT_LANGUAGE=language).content.decode()
    assert 'title="' in page and words in page
    detail = admin_client.get(
        reverse("admin:crm_metricsrun_change", args=[computed.pk]), HTTP_ACCEPT_LANGUAGE=language
    ).content.decode()
    assert words in detail
