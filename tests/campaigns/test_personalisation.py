"""Personalisation: a batch of messages gets its contexts in a fixed number of queries, in the
customer's language, with loyalty, metrics, recommendations and a coupon issued once per message."""

from datetime import date, timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from campaigns.models import MessageCoupon
from campaigns.rendering import RenderError, compiled_cache_clear, render_batch
from campaigns.services.personalisation import _unsubscribe_url_function
from crm.models import CustomerMetrics, DashboardSummary, ProductAffinity
from loyalty.models import Coupon, CouponProgramme
from loyalty.services.ledger import account_for_customer, points_adjust
from tests.campaigns.helpers import message_make, template_make
from tests.factories import CustomerFactory, OrderFactory, ProductFactory
from tests.loyalty.ledger_helpers import programme_setup

pytestmark = pytest.mark.django_db

FULL = {
    "zh-hans": {
        "text": "{{ customer.name | default('亲爱的会员') }}|{{ customer.city }}|{{ customer.tier }}|"
        "{{ loyalty.balance }}|{{ loyalty.expiring_points }}|{{ loyalty.expiring_last_day }}|"
        "{{ metrics.lifecycle_stage_label }}|{{ metrics.predicted_value }}|"
        "{% for p in recommendations %}{{ p.name }},{% endfor %}|{{ coupon.code }}|{{ data.order_id }}|"
        "{{ links.unsubscribe }}"
    },
    "en": {"text": "EN {{ customer.name | default('Dear member') }}|{{ metrics.lifecycle_stage_label }}"},
}


def coupon_programme():
    return CouponProgramme.objects.create(
        name="回归礼券 ¥20", discount_kind="amount", discount_value=Decimal("20"), valid_days_after_issue=30
    )


def world(n=20):
    now = timezone.now()
    tiers, _rule = programme_setup()
    products = [ProductFactory(name=f"商品{i}") for i in range(4)]
    customers = []
    for i in range(n):
        customer = CustomerFactory(name="" if i == 0 else f"顾客{i}", language="en" if i % 2 else "")
        customers.append(customer)
        account = account_for_customer(customer=customer, now=now - timedelta(days=340))
        account.tier = tiers["gold"]
        account.save(update_fields=["tier"])
        points_adjust(
            account=account,
            points=100 + i,
            idempotency_key=f"k{i}",
            reason="test",
            now=now - timedelta(days=340),
        )
        order = OrderFactory(customer=customer)
        order.lines.create(line_no=1, product=products[0], name="x", unit_price=1, line_total=1)
        CustomerMetrics.objects.create(
            customer=customer,
            as_of=date.today(),
            computed_at=now,
            stage_since=date.today(),
            lifecycle_stage="dormant",
            predicted_clv_365d=Decimal("88.5"),
        )
    for related, score in ((products[1], 5.0), (products[2], 3.0)):
        ProductAffinity.objects.create(
            product=products[0], related_product=related, customers=3, score=score, computed_at=now
        )
    DashboardSummary.objects.create(
        chart="popular_products",
        key="90d",
        data={"product_ids": [products[0].pk, products[3].pk]},
        computed_at=now,
    )
    return now, customers, products


def test_a_batch_is_personalised_in_a_fixed_number_of_queries():
    now, customers, products = world(20)
    template = template_make(code="winback", channel="sms", content=FULL, coupon_programme=coupon_programme())
    messages = [message_make(customer=c, template=template, data={"order_id": f"O{c.pk}"}) for c in customers]
    compiled_cache_clear()
    render_batch(messages=messages[:2], now=now)  # warm: versions compiled once per process
    MessageCoupon.objects.all().delete()
    Coupon.objects.all().delete()

    def queries_for(batch):
        with CaptureQueriesContext(connection) as captured:
            results = render_batch(messages=batch, now=now)
        captured_last[:] = captured.captured_queries
        return len(captured), results

    captured_last = []

    small, _ = queries_for(messages[:3])
    large, results = queries_for(messages[3:])
    assert small == large  # never a query per message or per customer
    # Every part read and a coupon issued for each message: the worst case (two of them are the
    # coupon transaction's savepoint and release).
    assert large <= 18, "\n".join(q["sql"][:150] for q in captured_last)

    by_id = {r.message_id: r for r in results}
    zh = by_id[messages[4].pk].content["text"].split("|")  # customer 4: no language -> zh-hans
    assert zh[0] == "顾客4" and zh[2] == "金卡 Gold" and zh[3] == "104"
    assert zh[4] == "104" and zh[5]  # all 104 points expire within 30 days (12-month rolling expiry)
    assert zh[6] == "沉睡" and zh[7] == "88.50"
    assert zh[8] == f"{products[1].name},{products[2].name},{products[3].name},"
    assert len(zh[9]) == 12 and zh[10] == f"O{customers[4].pk}"
    # The signed unsubscribe link once the tracking step is installed, its placeholder until then.
    signed = _unsubscribe_url_function()
    assert zh[11] == (signed(messages[4].pk) if signed else "__UNSUBSCRIBE_URL__")
    en = by_id[messages[3].pk]
    assert en.language == "en" and en.content["text"] == "EN 顾客3|Dormant"


def test_a_customer_without_a_name_gets_the_default():
    now, customers, _ = world(1)
    template = template_make(
        code="t", channel="sms", content={"zh-hans": FULL["zh-hans"]}, coupon_programme=coupon_programme()
    )
    [result] = render_batch(messages=[message_make(customer=customers[0], template=template)], now=now)
    assert result.content["text"].startswith("亲爱的会员|")


def test_language_is_the_messages_then_the_customers_then_the_default_then_the_first_variant(settings):
    template = template_make(
        code="lang", channel="sms", content={"en": {"text": "EN"}, "zh-hans": {"text": "中"}}
    )
    only_en = template_make(code="only_en", channel="sms", content={"en": {"text": "EN only"}})
    chinese, english, nobody = (
        CustomerFactory(language="zh-hans"),
        CustomerFactory(language="en"),
        CustomerFactory(),
    )
    now = timezone.now()
    cases = [
        (message_make(customer=chinese, template=template, occurrence="a"), "中"),
        (message_make(customer=english, template=template, occurrence="b"), "EN"),
        (
            message_make(customer=nobody, template=template, occurrence="c"),
            "中",
        ),  # MESSAGING_DEFAULT_LANGUAGE
        (message_make(customer=chinese, template=template, occurrence="d", language="en"), "EN"),
        (message_make(customer=chinese, template=only_en, occurrence="e"), "EN only"),
    ]
    results = render_batch(messages=[m for m, _ in cases], now=now)
    assert [r.content["text"] for r in results] == [want for _, want in cases]
    settings.MESSAGING_DEFAULT_LANGUAGE = "en"
    [result] = render_batch(messages=[cases[2][0]], now=now)
    assert result.content["text"] == "EN"


def test_a_coupon_is_issued_once_per_message_whatever_is_retried():
    now, customers, _ = world(3)
    programme = coupon_programme()
    template = template_make(
        code="cp",
        channel="sms",
        content={"zh-hans": {"text": "{{ coupon.code }}"}},
        coupon_programme=programme,
    )
    messages = [message_make(customer=c, template=template) for c in customers]
    first = [r.content["text"] for r in render_batch(messages=messages, now=now)]
    again = [r.content["text"] for r in render_batch(messages=messages, now=now + timedelta(minutes=5))]
    assert first == again and len(set(first)) == 3
    assert Coupon.objects.filter(programme=programme).count() == 3
    for message, code in zip(messages, first, strict=True):
        coupon = Coupon.objects.get(code=code)
        assert coupon.customer_id == message.customer_id
        assert MessageCoupon.objects.get(message=message).coupon == coupon
    test = message_make(customer=customers[0], template=template, occurrence="t", purpose="test")
    [result] = render_batch(messages=[test], now=now)
    assert result.content["text"] == "TEST00000000"
    assert Coupon.objects.filter(programme=programme).count() == 3


def test_a_version_that_fails_to_render_gives_that_message_an_error_not_the_batch():
    customer = CustomerFactory()
    good = template_make(code="good", channel="sms", content={"en": {"text": "ok"}})
    bad = template_make(code="bad", channel="sms", content={"en": {"text": "{{ data.n * 2 }}"}})
    results = render_batch(
        messages=[
            message_make(customer=customer, template=bad, occurrence="1", data={"n": "x" * 200_000}),
            message_make(customer=customer, template=good, occurrence="2"),
        ],
        now=timezone.now(),
    )
    assert isinstance(results[0], RenderError)
    assert results[0].reason == "render_failed" and results[0].params["line"] == 1
    assert "value" in results[0].reason_params["error"]
    assert results[1].content == {"text": "ok"}
