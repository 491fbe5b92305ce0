"""Message events into crm's behaviour-event log, in bulk: the outbox records sent/failed for a whole batch
with one call, tracking records deliveries, opens, clicks and unsubscribes.

Each event is named (`external_id`), so that a webhook delivered twice, a pixel loaded ten times or an
outbox batch recorded again after a crash writes it once: one sent/delivered/opened/failed/unsubscribed
per message, one click per message and link."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from django.utils import timezone

from campaigns.event_types import MESSAGE_CLICKED, MESSAGE_EVENT_TYPES
from campaigns.models import Message
from crm.db import AnyOf
from crm.services.event_log import NewEvent, events_append

# crm's Event.channel is where a touch happened (crm.models.Channel): an app push happened in the app.
_EVENT_CHANNEL = {"push": "app"}


@dataclass(frozen=True, slots=True)
class MessageEvent:
    """One thing that happened to a message; only `message.pk` is read from the message (the rest comes
    from one query for the whole batch)."""

    type: str
    message: Message
    occurred_at: datetime | None = None
    properties: dict = field(default_factory=dict)  # url and link for clicks, reason for failures, how


def _normalise(event: MessageEvent | Mapping) -> tuple[str, int, datetime | None, dict]:
    """(type, message id, when, extra properties) of either form: a MessageEvent, or the outbox's dict
    {type, message_id, customer_id, channel, occurred_at, properties}."""
    if isinstance(event, MessageEvent):
        return event.type, event.message.pk, event.occurred_at, dict(event.properties)
    return (
        event["type"],
        int(event["message_id"]),
        event.get("occurred_at"),
        dict(event.get("properties") or {}),
    )


def message_events_record(events: Iterable[MessageEvent | Mapping], *, now: datetime | None = None) -> int:
    """Append the events to the log in the caller's transaction: one query for the messages' template codes
    and sources, one insert per 2,000 events; repeats of an already recorded event are skipped. An event
    of a message that no longer exists (erased) is left out. Returns how many were written or skipped."""
    items = [_normalise(e) for e in events]
    if not items:
        return 0
    now = now or timezone.now()
    for type_, *_rest in items:
        if type_ not in MESSAGE_EVENT_TYPES:
            raise ValueError(f"{type_!r} is not a message event type")
    rows = {
        pk: (customer_id, channel, purpose, kind, ref, code)
        for pk, customer_id, channel, purpose, kind, ref, code in Message.objects.filter(
            AnyOf("id", sorted({message_id for _t, message_id, _w, _p in items}))
        ).values_list(
            "pk", "customer_id", "channel", "purpose", "source_kind", "source_ref", "template__code"
        )
    }
    new = []
    for type_, message_id, occurred_at, extra in items:
        if message_id not in rows:
            continue
        customer_id, channel, purpose, kind, ref, code = rows[message_id]
        properties = {
            "message_id": message_id,
            "channel": channel,
            "source_kind": kind,
            "source_ref": ref,
            "purpose": purpose,
            "template": code,
        }
        if kind == "campaign":
            properties["campaign_id"] = ref
        properties.update(extra)
        external_id = f"campaigns:{type_}:{message_id}"
        if type_ == MESSAGE_CLICKED:
            external_id += f":{extra.get('link', 0)}"
        new.append(
            NewEvent(
                type=type_,
                customer_id=customer_id,
                occurred_at=occurred_at or now,
                properties=properties,
                channel=_EVENT_CHANNEL.get(channel, channel),
                external_id=external_id,
            )
        )
    return events_append(events=new, now=now, skip_existing=True)
