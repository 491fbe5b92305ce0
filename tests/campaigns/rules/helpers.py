"""Building customers and messages for the rules' tests, at a frozen `now` each test chooses."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, time

from campaigns.models import DeliverySettings, Message
from crm.models import Consent
from tests.factories import CustomerFactory

_refs = itertools.count(1)


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


def quiet_hours(start: time | None, end: time | None, channels: list[str] | None = None) -> DeliverySettings:
    settings = DeliverySettings.current()
    if start is None:
        start = end = time(0, 0)  # start == end: no quiet hours
    settings.quiet_start, settings.quiet_end = start, end
    settings.quiet_channels = channels or []
    settings.save()
    return settings


def customer(*, tz: str = "Asia/Shanghai", consents=("sms", "email", "wechat", "push"), **fields):
    person = CustomerFactory(time_zone=tz, **fields)
    Consent.objects.bulk_create(
        [
            Consent(customer=person, channel=channel, status="opted_in", changed_at=utc(2026, 1, 1))
            for channel in consents
        ]
    )
    return person


def message(
    template,
    person,
    *,
    due_at: datetime,
    channel: str = "sms",
    purpose: str = "marketing",
    priority: int = 0,
    on_cap: str = "defer",
    source_kind: str = "campaign",
    label: str = "双11大促",
    status: str = "queued",
    sent_at: datetime | None = None,
    expires_at: datetime | None = None,
    address: str = "",
    save: bool = True,
) -> Message:
    row = Message(
        customer=person,
        channel=channel,
        purpose=purpose,
        source_kind=source_kind,
        source_ref=f"ref-{next(_refs)}",
        occurrence="1",
        source_label=label,
        template=template,
        priority=priority,
        on_cap=on_cap,
        status=status,
        due_at=due_at,
        sent_at=sent_at,
        expires_at=expires_at,
        address=address,
    )
    if save:
        row.save()
    return row


def sent(
    template, person, at: datetime, *, channel: str = "sms", purpose: str = "marketing", label="earlier"
):
    """A message the customer already got at `at`."""
    return message(
        template, person, due_at=at, channel=channel, purpose=purpose, status="sent", sent_at=at, label=label
    )
