"""Texts stored as codes and put into words when shown: consent sources (the 360 and the consent-change
admin list), and the one-line summaries of behaviour events on the 360 timeline."""

from __future__ import annotations

import pytest
from django.urls import reverse
from django.utils import translation

from crm.consent_sources import consent_source_text
from crm.models import ConsentChange, ConsentStatus, Event, Product
from crm.selectors.event_summaries import event_summaries, money_text
from crm.services.consent import consent_set
from tests.factories import CustomerFactory, EventFactory

# --- Consent sources ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stored", "en", "zh"),
    [
        ("signup", "sign-up form", "注册表单"),
        ("csv", "CSV import", "CSV 导入"),
        ("import", "CSV import", "CSV 导入"),
        ("api:k3y9", "API key k3y9", "API 密钥 k3y9"),
        ("staff:12", "staff member #12", "员工 #12"),
        ("demo sign-up", "sign-up form", "注册表单"),  # the demo data's English, stored before the codes
        ("电话回访", "电话回访", "电话回访"),  # a staff member's own words, as typed
        ("phone call", "phone call", "phone call"),
        ("", "", ""),
    ],
)
def test_consent_source_text_translates_codes_and_keeps_a_persons_words(stored, en, zh):
    with translation.override("en"):
        assert consent_source_text(stored) == en
    with translation.override("zh-hans"):
        assert consent_source_text(stored) == zh


@pytest.mark.django_db
def test_consent_change_list_shows_the_source_in_the_readers_language(admin_client):
    customer = CustomerFactory(name="王芳")
    consent_set(customer=customer, channel="sms", status=ConsentStatus.OPTED_IN, source="signup")
    consent_set(customer=customer, channel="sms", status=ConsentStatus.OPTED_OUT, source="门店登记")
    change = ConsentChange.objects.order_by("id").first()
    assert change.source == "signup"
    with translation.override("en"):
        assert change.source_display == "sign-up form"

    url = reverse("admin:crm_consentchange_changelist")
    zh = admin_client.get(url, HTTP_ACCEPT_LANGUAGE="zh-hans").content.decode()
    assert "注册表单" in zh and "门店登记" in zh
    assert ">signup<" not in zh
    en = admin_client.get(url, HTTP_ACCEPT_LANGUAGE="en").content.decode()
    assert "sign-up form" in en
    detail = admin_client.get(
        reverse("admin:crm_consentchange_change", args=[change.pk]), HTTP_ACCEPT_LANGUAGE="zh-hans"
    )
    assert "注册表单" in detail.content.decode()


# --- Event summaries ---------------------------------------------------------------------------------


@pytest.mark.django_db
def test_event_summary_reads_like_a_sentence_in_each_language(django_assert_num_queries):
    customer = CustomerFactory()
    Product.objects.create(sku="CREAM-50", name="保湿面霜", price="299.00")
    events = [
        EventFactory(
            customer=customer,
            type="add_to_cart",
            channel="wechat",
            properties={"sku": "CREAM-50", "quantity": 1, "price": "299", "currency": "CNY"},
        ),
        EventFactory(
            customer=customer,
            type="lifecycle_stage_changed",
            channel="",
            properties={"from": "active", "to": "at_risk"},
        ),
        EventFactory(customer=customer, type="page_view", channel="web", properties={"path": "/sale"}),
        EventFactory(customer=customer, type="brand_quiz_done", channel="", properties={"score": 3}),
    ]
    events = list(Event.objects.filter(pk__in=[e.pk for e in events]).order_by("id"))

    with translation.override("zh-hans"), django_assert_num_queries(1):  # the SKUs' names, once
        zh = event_summaries(events=events)
    assert zh[0] == {"label": "加入购物车", "details": ["保湿面霜 ×1", "¥299", "微信"]}
    assert zh[1] == {"label": "生命周期阶段变化", "details": ["活跃 → 有流失风险"]}
    assert zh[2]["details"] == ["/sale", "网站"]
    assert zh[3] == {"label": "brand_quiz_done", "details": []}  # a brand's own type: its code

    with translation.override("en"):
        en = event_summaries(events=events)
    assert en[0] == {"label": "Added to cart", "details": ["保湿面霜 ×1", "¥299", "WeChat"]}
    assert en[1]["details"] == ["Active → At risk"]


@pytest.mark.django_db
def test_event_summary_without_skus_reads_no_products(django_assert_num_queries):
    event = EventFactory(type="order_placed", properties={"total": "1288.50", "currency": "USD"})
    with translation.override("en"), django_assert_num_queries(0):
        (summary,) = event_summaries(events=[event])
    assert summary["details"][0] == "$1,288.50"


def test_money_text_groups_digits_and_keeps_unknown_currencies_and_bad_amounts():
    with translation.override("en"):
        assert money_text("12000", "CNY") == "¥12,000"
        assert money_text("9.9", "rmb") == "¥9.90"
        assert money_text("5", "THB") == "5 THB"
        assert money_text("n/a", "CNY") == "n/a"
