"""The template admin (Django test client, the real admin): problems on their field with the line,
versions listed read-only, a preview of every language for a chosen customer, and the test send."""

from datetime import datetime, time, timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from campaigns.models import DeliverySettings, Message, MessageTemplate, TemplateVersion
from campaigns.providers.sink import SinkProvider
from campaigns.services.outbox import MessageRequest, message_send_now
from tests.campaigns.campaign_helpers import consent_sql
from tests.campaigns.helpers import template_make
from tests.factories import CustomerFactory

pytestmark = pytest.mark.django_db


def form_data(**content):
    data = {
        "code": "order_shipped",
        "name": "订单已发货",
        "channel": "email",
        "purpose": "transactional",
        "description": "",
        "coupon_programme": "",
        "versions-TOTAL_FORMS": "0",
        "versions-INITIAL_FORMS": "0",
        "versions-MIN_NUM_FORMS": "0",
        "versions-MAX_NUM_FORMS": "1000",
        "wechat__zh_hans__kind": "template",
        "wechat__en__kind": "template",
    }
    data.update(content)
    return data


def test_a_syntax_error_and_an_unknown_variable_show_on_their_fields_with_the_line(admin_client):
    url = reverse("admin:campaigns_messagetemplate_add")
    response = admin_client.post(
        url,
        form_data(
            email__zh_hans__subject="您的订单已发货",
            email__zh_hans__html="<p>你好</p>\n<p>{% if customer.name %}</p>",
            email__zh_hans__text="第一行\n第二行\n{{ customer.nmae }}",
        ),
    )
    assert response.status_code == 200
    form = response.context["adminform"].form
    html_errors = " ".join(form.errors["email__zh_hans__html"])
    text_errors = " ".join(form.errors["email__zh_hans__text"])
    assert "line 2" in html_errors and "syntax" in html_errors
    assert "line 3" in text_errors and "customer.nmae" in text_errors
    page = response.content.decode()
    assert "customer.nmae" in page and "line 3" in page
    assert not MessageTemplate.objects.exists()


def test_saving_makes_versions_listed_read_only(admin_client):
    url = reverse("admin:campaigns_messagetemplate_add")
    response = admin_client.post(
        url,
        form_data(
            email__zh_hans__subject="{{ customer.name | default('亲爱的会员') }}，订单已发货",
            email__zh_hans__text="订单 {{ data.order_id }}",
            email__en__subject="Order shipped",
            email__en__text="Order {{ data.order_id }}",
        ),
    )
    assert response.status_code == 302, response.context["adminform"].form.errors
    template = MessageTemplate.objects.get(code="order_shipped")
    assert template.current_version.number == 1
    assert set(template.current_version.content) == {"zh-hans", "en"}
    change = reverse("admin:campaigns_messagetemplate_change", args=[template.pk])
    page = admin_client.get(change)
    assert page.context["adminform"].form.initial or True
    body = page.content.decode()
    assert "订单 {{ data.order_id }}" in body  # the current version's content fills the form
    assert "email__en__subject" in body and "sms__en__text" not in body  # its channel's fields only
    data = form_data(
        channel="",
        email__zh_hans__subject="新标题",
        email__zh_hans__text="订单 {{ data.order_id }}",
        **{
            "versions-TOTAL_FORMS": "1",
            "versions-INITIAL_FORMS": "1",
            "versions-0-id": str(template.current_version_id),
            "versions-0-template": str(template.pk),
        },
    )
    response = admin_client.post(change, data)
    assert response.status_code == 302, response.context["adminform"].form.errors
    assert TemplateVersion.objects.filter(template=template).count() == 2
    template.refresh_from_db()
    assert template.current_version.number == 2 and set(template.current_version.content) == {"zh-hans"}
    assert template.channel == "email"  # the channel is fixed once saved


def test_preview_renders_every_language_for_a_chosen_customer(admin_client):
    template = template_make()
    customer = CustomerFactory(name="王芳", phone="+8613911112222", external_id="VIP-1", language="en")
    url = reverse("admin:campaigns_messagetemplate_preview", args=[template.pk])
    for query in ("王", "+86139111", "VIP-1"):
        found = admin_client.get(url, {"q": query}).context["found"]
        assert customer in found, query
    response = admin_client.get(url, {"customer": customer.pk})
    assert response.status_code == 200
    variants = {v.language: v for v in response.context["variants"]}
    assert set(variants) == {"zh-hans", "en"}
    assert variants["en"].chosen and not variants["zh-hans"].chosen
    assert variants["zh-hans"].content["subject"].startswith("王芳，您的订单")
    assert admin_client.get(url, {"customer": "abc"}).status_code == 200  # bad input: a message, not a 500
    assert admin_client.get(url, {"customer": "999999"}).context["problem"]


def test_a_test_send_goes_through_the_pipeline_and_says_how_it_ended(admin_client):
    template = template_make()
    customer = CustomerFactory()
    url = reverse("admin:campaigns_messagetemplate_test_send", args=[template.pk])
    response = admin_client.post(url, {"customer": customer.pk, "address": "staff@example.cn"}, follow=True)
    assert response.status_code == 200
    sent = Message.objects.get(customer=customer)
    assert (sent.purpose, sent.status, sent.address) == ("test", "sent", "staff@example.cn")
    assert [str(m) for m in response.context["messages"]] == [
        f"Test message #{sent.pk} to staff@example.cn: Sent."
    ]
    # An address the channel cannot take: the message is suppressed and the page says why, never a 500.
    response = admin_client.post(url, {"customer": customer.pk, "address": "not-an-address"}, follow=True)
    refused = Message.objects.filter(customer=customer).exclude(pk=sent.pk).get()
    assert refused.status == "suppressed"
    (text,) = [str(m) for m in response.context["messages"]]
    assert text.startswith(f"Test message #{refused.pk} to not-an-address: Suppressed (invalid"), text
    assert admin_client.get(url).status_code == 405


def test_templates_are_in_the_campaigns_navigation(admin_client):
    page = admin_client.get(reverse("admin:index")).content.decode()
    assert reverse("admin:campaigns_messagetemplate_changelist") in page


SMS_OFFER = {
    "zh-hans": {"text": "{{ customer.name }}，双11预热开始"},
    "en": {"text": "{{ customer.name }}: pre-sale"},
}


@pytest.fixture
def sink(settings):
    settings.MESSAGING_PROVIDERS = {
        channel: {"BACKEND": "campaigns.providers.sink.SinkProvider", "OPTIONS": {}, "RATE": 0}
        for channel in ("email", "sms", "wechat", "push")
    }
    SinkProvider.reset()
    yield SinkProvider
    SinkProvider.reset()


def _eleven_tomorrow_in_shanghai():
    # Outside quiet hours (21:00-08:00) whenever the test runs.
    zone = timezone.get_default_timezone()
    tomorrow = timezone.now().astimezone(zone).date() + timedelta(days=1)
    return timezone.make_aware(datetime.combine(tomorrow, time(11)), zone)


def test_the_preview_of_a_marketing_sms_shows_the_opt_out_text_exactly_as_it_is_sent(admin_client, sink):
    template = template_make(code="presale", channel="sms", content=SMS_OFFER, purpose="marketing")
    customer = CustomerFactory(name="王芳", phone="+8613911112222", language="zh-hans")
    consent_sql([customer.pk], "sms")
    url = reverse("admin:campaigns_messagetemplate_preview", args=[template.pk])

    response = admin_client.get(url, {"customer": customer.pk})

    variants = {v.language: v for v in response.context["variants"]}
    assert variants["zh-hans"].content["text"] == "王芳，双11预热开始 回T退订"
    assert variants["en"].content["text"] == "王芳: pre-sale Reply T to opt out"
    assert "王芳，双11预热开始 回T退订" in response.content.decode()
    # The same customer's real marketing message, through the pipeline: what the provider gets is what the
    # preview's chosen variant showed.
    now = _eleven_tomorrow_in_shanghai()
    message, _created = message_send_now(
        request=MessageRequest(
            customer_id=customer.pk,
            channel="sms",
            template_id=template.pk,
            source_kind="campaign",
            source_ref="presale",
            occurrence="1",
        ),
        now=now,
    )
    assert message.status == "sent", message.reason
    (delivered,) = sink.delivered.values()
    chosen = next(v for v in response.context["variants"] if v.chosen)
    assert delivered.content["text"] == chosen.content["text"]


def test_the_preview_follows_the_opt_out_setting_and_leaves_other_sms_alone(admin_client):
    settings_row = DeliverySettings.current()
    settings_row.sms_opt_out_zh = "拒收请回复R"
    settings_row.save()
    customer = CustomerFactory(name="王芳")
    marketing = template_make(code="presale", channel="sms", content=SMS_OFFER, purpose="marketing")
    said_already = template_make(
        code="presale-2",
        channel="sms",
        content={"zh-hans": {"text": "双11 拒收请回复R"}, "en": {"text": "Pre-sale. Reply T to opt out"}},
        purpose="marketing",
    )
    notice = template_make(code="shipped", channel="sms", content=SMS_OFFER, purpose="transactional")

    def preview(template):
        url = reverse("admin:campaigns_messagetemplate_preview", args=[template.pk])
        variants = admin_client.get(url, {"customer": customer.pk}).context["variants"]
        return {v.language: v.content["text"] for v in variants}

    assert preview(marketing)["zh-hans"] == "王芳，双11预热开始 拒收请回复R"
    # Said in the template already: not said twice, as the pipeline does not.
    assert preview(said_already) == {"zh-hans": "双11 拒收请回复R", "en": "Pre-sale. Reply T to opt out"}
    # A transactional SMS carries no opt-out text.
    assert preview(notice) == {"zh-hans": "王芳，双11预热开始", "en": "王芳: pre-sale"}
