"""Staff retry a dead letter (a message that failed for good): a new message, queued through the outbox as a
new attempt under its own key, so that the failed row stays as it was (the record of what happened) and
retrying the same dead letter twice queues one message, not two."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from django.db import transaction

from campaigns.models import Message, MessageStatus


@dataclass(frozen=True)
class RetryResult:
    queued: list[int]  # ids of the new messages
    already: list[int]  # dead letters retried before: their retry's id
    refused: list[int]  # not dead letters (not failed), left alone


def retry_occurrence(message_id: int) -> str:
    """The retry's occurrence: one per dead letter, so the outbox's unique key makes a retry idempotent."""
    return f"retry-of-{message_id}"


def _request_fields(message: Message, *, now: dt.datetime) -> dict:
    return {
        "customer_id": message.customer_id,
        "channel": message.channel,
        "purpose": message.purpose,
        "source_kind": message.source_kind,
        "source_ref": message.source_ref,
        "occurrence": retry_occurrence(message.pk),
        "source_label": message.source_label,
        "payload_fingerprint": message.payload_fingerprint,
        "template_id": message.template_id,
        "language": message.language,
        "data": message.data,
        "priority": message.priority,
        "on_cap": message.on_cap,
        "due_at": now,
        # A retry staff asked for is not held to the first attempt's deadline.
        "expires_at": None,
        "reason": "retry_of",
        "reason_params": {"message": message.pk},
    }


def _enqueue(rows: list[dict], *, now: dt.datetime) -> None:
    """Queue the retries through the outbox (an existing key is left alone), each saying in its first
    history entry which dead letter it retries."""
    from campaigns.services.outbox import MessageRequest, messages_enqueue

    notes = {}
    requests = []
    for row in rows:
        row = dict(row)
        notes[(row["customer_id"], row["occurrence"])] = (row.pop("reason"), row.pop("reason_params"))
        requests.append(MessageRequest(**row))
    result = messages_enqueue(rows=requests, now=now)
    for message in Message.objects.filter(pk__in=result.created_ids):
        reason, params = notes[(message.customer_id, message.occurrence)]
        message.reason, message.reason_params = reason, params
        message.history = [{"status": "queued", "at": now.isoformat(), "reason": reason, "params": params}]
        message.save(update_fields=["reason", "reason_params", "history"])


def dead_letters_retry(*, message_ids: list[int], user, now: dt.datetime) -> RetryResult:
    """Queue a new attempt of each dead letter among `message_ids`, and write on each dead letter who
    retried it and as which message."""
    with transaction.atomic():
        # Locked in id order (DESIGN.md §5): two staff retrying overlapping selections wait for each other
        # instead of both writing the dead letter's history.
        letters = list(Message.objects.select_for_update().filter(pk__in=message_ids).order_by("pk"))
        dead = [m for m in letters if m.status == MessageStatus.FAILED]
        refused = sorted(set(message_ids) - {m.pk for m in dead})
        _enqueue([_request_fields(m, now=now) for m in dead], now=now)
        retries = dict(
            Message.objects.filter(
                customer_id__in={m.customer_id for m in dead},
                occurrence__in=[retry_occurrence(m.pk) for m in dead],
            ).values_list("occurrence", "id")
        )
        queued, already = [], []
        for m in dead:
            retry_id = retries.get(retry_occurrence(m.pk))
            if any(h.get("reason") == "retried" for h in m.history or []):
                already.append(retry_id)
                continue
            queued.append(retry_id)
            m.history = [
                *(m.history or []),
                {
                    "status": m.status,
                    "at": now.isoformat(),
                    "reason": "retried",
                    "params": {"as": retry_id, "by": user.get_username()},
                },
            ]
            Message.objects.filter(pk=m.pk).update(history=m.history)
    return RetryResult(queued=queued, already=already, refused=refused)


def retried_as(message: Message) -> int | None:
    """The id of the retry queued for a dead letter, from its history; None when never retried."""
    for entry in reversed(message.history or []):
        if entry.get("reason") == "retried":
            return (entry.get("params") or {}).get("as")
    return None
