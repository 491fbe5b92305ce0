"""Message events into crm's behaviour-event log, in bulk: the outbox records sent/failed for a whole batch
with one call, tracking records deliveries, opens, clicks and unsubscribes.

Each event is named (`external_id`), so that a webhook delivered twice, a pixel loaded ten times or an
outbox batch recorded again after a crash writes it once: one sent/delivered/opened/failed/unsubscribed
per message, one click per message and link."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from django.utils import timezone

from campaigns.event_types import MESSAGE_CLICKED, MESSAGE_EVENT_TYPES
from campaigns.models import Message, MessageTemplate
from crm.services.event_log import NewEvent, events_append


@dataclass(frozen=True, slots=True)
class MessageEvent:
    """One thing that happened to a message. `message` needs id, customer_id, channel, purpose,
    source_kind, source_ref and template_id (no related rows are read through it)."""

    type: str
    message: Message
    occurred_at: datetime | None = None
    properties: dict = field(default_factory=dict)  # url and link for clicks, reason for failures, how


def message_event_properties(message: Message, template_code: str = "") -> dict:
    properties = {
        "message_id": message.pk,
        "channel": message.channel,
        "source_kind": message.source_kind,
        "source_ref": message.source_ref,
        "purpose": message.purpose,
        "template": template_code,
    }
    if message.source_kind == "campaign":
        properties["campaign_id"] = message.source_ref
    return properties


def _external_id(event: MessageEvent) -> str:
    if event.type == MESSAGE_CLICKED:
        return f"campaigns:{event.type}:{event.message.pk}:{event.properties.get('link', 0)}"
    return f"campaigns:{event.type}:{event.message.pk}"


def message_events_record(events: Sequence[MessageEvent] | Iterable[MessageEvent], *, now=None) -> int:
    """Append the events to the log in the caller's transaction (one query for the template codes, one
    insert per 2,000 events); repeats of an already recorded event are skipped. Returns how many were
    given."""
    events = list(events)
    if not events:
        return 0
    now = now or timezone.now()
    for event in events:
        if event.type not in MESSAGE_EVENT_TYPES:
            raise ValueError(f"{event.type!r} is not a message event type")
    template_ids = {e.message.template_id for e in events if e.message.template_id}
    codes = dict(MessageTemplate.objects.filter(pk__in=template_ids).values_list("pk", "code"))
    rows = [
        NewEvent(
            type=event.type,
            customer_id=event.message.customer_id,
            occurred_at=event.occurred_at or now,
            properties={
                **message_event_properties(event.message, codes.get(event.message.template_id, "")),
                **event.properties,
            },
            channel=event.message.channel,
            external_id=_external_id(event),
        )
        for event in events
    ]
    return events_append(events=rows, now=now, skip_existing=True)
