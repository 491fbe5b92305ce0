"""Templates and outbox rows for the campaigns tests."""

from __future__ import annotations

from django.utils import timezone

from campaigns.models import Message, MessageStatus, MessageTemplate
from campaigns.services.templates import template_save

EMAIL_CONTENT = {
    "zh-hans": {
        "subject": "{{ customer.name | default('亲爱的会员') }}，您的订单 {{ data.order_id }} 已发货",
        "html": "<p>{{ customer.name | default('亲爱的会员') }}，您好</p><p>订单 {{ data.order_id }}</p>",
        "text": "{{ customer.name | default('亲爱的会员') }}，您好\n订单 {{ data.order_id }}",
    },
    "en": {
        "subject": "{{ customer.name | default('Dear member') }}, order {{ data.order_id }} shipped",
        "html": "<p>Hello {{ customer.name | default('Dear member') }}</p>",
        "text": "Hello {{ customer.name | default('Dear member') }}",
    },
}


def template_make(*, code="order_shipped", channel="email", content=None, coupon_programme=None, **kw):
    template = MessageTemplate(
        code=code, name=kw.pop("name", code), channel=channel, coupon_programme=coupon_programme, **kw
    )
    return template_save(template=template, content=content or EMAIL_CONTENT).template


def message_make(*, customer, template, occurrence="1", data=None, language="", purpose="marketing", **kw):
    return Message.objects.create(
        customer=customer,
        channel=template.channel,
        purpose=purpose,
        source_kind=kw.pop("source_kind", "campaign"),
        source_ref=kw.pop("source_ref", "c1"),
        occurrence=occurrence,
        template=template,
        language=language,
        data=data or {},
        status=MessageStatus.QUEUED,
        due_at=timezone.now(),
        **kw,
    )
