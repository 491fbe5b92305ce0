"""Rows the tracking tests share: a template with a version, a message in a given state, consent."""

from __future__ import annotations

import itertools

from django.utils import timezone

from campaigns.models import Message, MessageTemplate, TemplateVersion
from crm.models import ConsentStatus
from crm.services.consent import consent_set

_numbers = itertools.count(1)


def template_make(*, code: str = "", channel: str = "email", purpose: str = "marketing") -> MessageTemplate:
    code = code or f"tpl{next(_numbers)}"
    template = MessageTemplate.objects.create(
        code=code, name=f"Template {code}", channel=channel, purpose=purpose
    )
    version = TemplateVersion.objects.create(
        template=template,
        number=1,
        content={"zh-hans": {"subject": "你好", "html": "<p>{{ customer.name }}</p>", "text": "你好"}},
        fingerprint=f"{next(_numbers):064d}",
    )
    template.current_version = version
    template.save(update_fields=["current_version"])
    return template


def message_make(
    *,
    customer,
    template: MessageTemplate | None = None,
    channel: str = "email",
    status: str = "sent",
    purpose: str = "marketing",
    links: list[str] | None = None,
    source_kind: str = "campaign",
    source_ref: str = "7",
    address: str = "",
    provider_message_id: str = "",
) -> Message:
    now = timezone.now()
    return Message.objects.create(
        customer=customer,
        channel=channel,
        purpose=purpose,
        source_kind=source_kind,
        source_ref=source_ref,
        occurrence=f"occ-{next(_numbers)}",
        template=template or template_make(channel=channel),
        status=status,
        due_at=now,
        sent_at=now if status in ("sent", "delivered", "opened", "clicked") else None,
        address=address or (customer.email if channel == "email" else customer.phone),
        links=links,
        provider="email",
        provider_message_id=provider_message_id,
        history=[{"status": status, "at": now.isoformat(), "reason": "", "params": {}}],
    )


def opted_in(customer, *channels: str) -> None:
    for channel in channels:
        consent_set(customer=customer, channel=channel, status=ConsentStatus.OPTED_IN, source="signup")
