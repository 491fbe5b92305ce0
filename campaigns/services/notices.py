"""Transactional notices from loyalty's events: points earned, points about to expire, a tier upgrade.

A consumer of crm's event log (`event_log_read`, consumer "campaigns.notices"): each batch of events
becomes transactional messages (templates `points_earned`, `points_expiring`, `tier_upgraded`, channel
the customer's best), in the transaction that moves the cursor. The message key is (customer, notice,
event type, event id): reading the same events again (a cursor reset for a replay, a batch retried after
a crash) makes no second message.

Loyalty writes `points_earned` (with the ledger entries, one per account and write), `points_expiring`
and `tier_changed` (loyalty/event_types.py; a downgrade sends nothing).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.db import transaction

from campaigns.models import MessagePurpose
from campaigns.services.channels import channel_best
from campaigns.services.outbox import MessageRequest, messages_enqueue
from campaigns.services.sending import template_variants
from crm.services.event_log import LoggedEvent, event_log_read
from loyalty.event_types import POINTS_EARNED, POINTS_EXPIRING, TIER_CHANGED

CONSUMER = "campaigns.notices"

# event type -> template code
NOTICE_TEMPLATES = {
    POINTS_EARNED: "points_earned",
    POINTS_EXPIRING: "points_expiring",
    TIER_CHANGED: "tier_upgraded",
}


@dataclass(frozen=True)
class NoticesRun:
    events: int  # read from the log
    messages: int  # asked for (new or already there)
    skipped: int  # no template with that code, no customer, or a tier downgrade


def _template_code(event: LoggedEvent) -> str | None:
    if event.customer_id is None:
        return None
    if event.type == TIER_CHANGED and event.properties.get("direction") != "up":
        return None
    return NOTICE_TEMPLATES.get(event.type)


def notices_run(*, now: datetime, batch_size: int = 1000) -> NoticesRun:
    """Turn the next batch of loyalty events into transactional messages."""
    with transaction.atomic():
        events = event_log_read(
            consumer=CONSUMER, batch_size=batch_size, types=list(NOTICE_TEMPLATES), now=now
        )
        wanted = [(event, code) for event in events if (code := _template_code(event))]
        variants = template_variants(sorted({code for _e, code in wanted}))
        best: dict[str, dict[int, str | None]] = {}
        for code, templates in variants.items():
            customers = {e.customer_id for e, c in wanted if c == code}
            own = next(t for t in templates.values() if t.code == code)
            candidates = [own.channel, *sorted(c for c in templates if c != own.channel)]
            best[code] = {
                customer: channel or own.channel
                for customer, channel in channel_best(customer_ids=customers, candidates=candidates).items()
            }
        rows = []
        for event, code in wanted:
            if code not in variants:
                continue
            channel = best[code].get(event.customer_id)
            if channel is None:  # the customer was erased since the event was written
                continue
            template = variants[code][channel]
            rows.append(
                MessageRequest(
                    customer_id=event.customer_id,
                    channel=channel,
                    template_id=template.pk,
                    purpose=MessagePurpose.TRANSACTIONAL,
                    source_kind="notice",
                    source_ref=event.type,
                    occurrence=str(event.id),
                    data=dict(event.properties),
                    source_label=template.name,
                )
            )
        if rows:
            messages_enqueue(rows=rows, now=now)
    return NoticesRun(events=len(events), messages=len(rows), skipped=len(events) - len(rows))
