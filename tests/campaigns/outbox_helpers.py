"""Building outbox requests for tests."""

from __future__ import annotations

from campaigns.services.outbox import MessageRequest


def requests_for(
    customers, template, *, ref="c1", occurrence="1", channel="sms", source_kind="campaign", **extra
) -> list[MessageRequest]:
    return [
        MessageRequest(
            customer_id=c if isinstance(c, int) else c.pk,
            channel=channel,
            template_id=template if isinstance(template, int) else template.pk,
            source_kind=source_kind,
            source_ref=ref,
            occurrence=occurrence,
            **extra,
        )
        for c in customers
    ]
