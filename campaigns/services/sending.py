"""Creating outbox rows for the send API and the transactional notices.

`messages_create` and `_send_one` are the seam to the outbox helper's module (campaigns/services/outbox.py,
branch outbox): when it is there they call its `messages_enqueue` (bulk, idempotent on the unique key)
and `message_send_now` (the API's message goes through the pipeline at once, in the request); until it
is merged, the same idempotent insert is done here (ON CONFLICT DO NOTHING) and the dispatcher sends
the row later.

Templates: a template code names one template on one channel (MessageTemplate.channel); its variants for
other channels are the templates coded `<code>.<channel>` (`points_earned` on WeChat, `points_earned.sms`,
`points_earned.email`), which is what channel "best" chooses among.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from django.db import transaction
from django.utils.translation import gettext as _

from campaigns.models import Channel, Message, MessageStatus, MessageTemplate
from campaigns.services.channels import channel_best
from crm.services.events import CustomerRef, customer_ids_find

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class MessageRequest:
    customer_id: int
    channel: str
    template_id: int
    purpose: str
    source_kind: str
    source_ref: str
    occurrence: str
    data: dict = field(default_factory=dict)
    priority: int = 0
    source_label: str = ""
    payload_fingerprint: str = ""
    due_at: datetime | None = None

    @property
    def key(self) -> tuple[int, str, str, str]:
        return (self.customer_id, self.source_kind, self.source_ref, self.occurrence)


def _outbox():
    try:
        from campaigns.services import outbox
    except ImportError:  # not merged yet
        return None
    return outbox


def _outbox_request(outbox, r: MessageRequest):
    return outbox.MessageRequest(
        customer_id=r.customer_id,
        channel=r.channel,
        template_id=r.template_id,
        purpose=r.purpose,
        source_kind=r.source_kind,
        source_ref=r.source_ref,
        occurrence=r.occurrence,
        data=r.data,
        priority=r.priority,
        source_label=r.source_label,
        payload_fingerprint=r.payload_fingerprint,
        due_at=r.due_at,
    )


def _send_one(request: MessageRequest, now: datetime) -> int | None:
    """The id of the message for `request`, created (and, with the outbox, sent at once) or there before;
    None when the key's row belongs to another customer (the API key's own unique key)."""
    outbox = _outbox()
    if outbox is not None:
        try:
            message, _created = outbox.message_send_now(request=_outbox_request(outbox, request), now=now)
        except IndexError:  # enqueue reported no id: the API key constraint, another customer's row
            return None
        except Exception:
            # The row is committed before the pipeline runs; if sending it at once fails (a stage down),
            # the message is the dispatcher's like any other (a claimed one is taken back by the reaper),
            # and the caller still gets its id rather than a 500 for a message that exists.
            logger.exception(
                "send API: sending message %s at once failed; left to the dispatcher", request.key
            )
            return _message_id(request)
        return message.pk if message.customer_id == request.customer_id else None
    with transaction.atomic():
        return messages_create(rows=[request], now=now).get(request.key)


def _message_id(request: MessageRequest) -> int | None:
    return (
        Message.objects.filter(
            customer_id=request.customer_id,
            source_kind=request.source_kind,
            source_ref=request.source_ref,
            occurrence=request.occurrence,
        )
        .values_list("pk", flat=True)
        .first()
    )


def messages_create(*, rows: Sequence[MessageRequest], now: datetime) -> dict[tuple, int]:
    """Insert the rows not stored yet (by their unique key) as queued messages, due now unless they say
    when; returns {key: message id} for every row, new or already there. Batches of 1,000."""
    result: dict[tuple, int] = {}
    outbox = _outbox()
    for start in range(0, len(rows), 1000):
        chunk = rows[start : start + 1000]
        if outbox is not None:
            outbox.messages_enqueue(rows=[_outbox_request(outbox, r) for r in chunk], now=now)
        else:
            _insert(chunk, now)
        wanted = {r.key for r in chunk}
        found = Message.objects.filter(
            customer_id__in={r.customer_id for r in chunk},
            source_kind__in={r.source_kind for r in chunk},
            source_ref__in={r.source_ref for r in chunk},
            occurrence__in={r.occurrence for r in chunk},
        ).values_list("customer_id", "source_kind", "source_ref", "occurrence", "pk")
        for customer_id, kind, ref, occurrence, pk in found:
            if (customer_id, kind, ref, occurrence) in wanted:
                result[(customer_id, kind, ref, occurrence)] = pk
    return result


def _insert(chunk: Sequence[MessageRequest], now: datetime) -> None:
    Message.objects.bulk_create(
        [
            Message(
                customer_id=r.customer_id,
                channel=r.channel,
                purpose=r.purpose,
                source_kind=r.source_kind,
                source_ref=r.source_ref,
                occurrence=r.occurrence,
                source_label=r.source_label,
                payload_fingerprint=r.payload_fingerprint,
                template_id=r.template_id,
                data=r.data,
                priority=r.priority,
                status=MessageStatus.QUEUED,
                due_at=r.due_at or now,
                created_at=now,
                history=[{"status": MessageStatus.QUEUED, "at": now.isoformat(), "reason": "", "params": {}}],
            )
            for r in chunk
        ],
        ignore_conflicts=True,
    )


# --- Templates -----------------------------------------------------------------------------------------


def template_variants(codes: Sequence[str]) -> dict[str, dict[str, MessageTemplate]]:
    """For each code, its templates by channel (the code's own and its `<code>.<channel>` variants); a code
    with no template of its own is absent. One query."""
    names = {code: code for code in codes}
    for code in codes:
        for channel in Channel.values:
            names[f"{code}.{channel}"] = code
    found: dict[str, dict[str, MessageTemplate]] = {}
    own: set[str] = set()
    for template in MessageTemplate.objects.filter(code__in=list(names)):
        base = names[template.code]
        if template.code == base:
            own.add(base)
        variants = found.setdefault(base, {})
        # The code's own template wins its channel over a variant that names the same channel.
        if template.code == base or template.channel not in variants:
            variants[template.channel] = template
    return {code: variants for code, variants in found.items() if code in own}


# --- The send API --------------------------------------------------------------------------------------


class SendRefused(Exception):
    """The request cannot be sent; `field` and `code` for the API's error, `status` its HTTP status."""

    def __init__(self, *, field: str, code: str, message: str, status: int = 400):
        super().__init__(message)
        self.field, self.code, self.message, self.status = field, code, message, status


@dataclass(frozen=True)
class SendAccepted:
    message: Message
    created: bool


def payload_fingerprint(payload: dict) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def _replayed(*, source_ref: str, idempotency_key: str, fingerprint: str) -> Message | None:
    previous = Message.objects.filter(
        source_kind="api", source_ref=source_ref, occurrence=idempotency_key
    ).first()
    if previous is not None and previous.payload_fingerprint != fingerprint:
        raise SendRefused(
            field="idempotency_key",
            code="idempotency_conflict",
            message=_("This idempotency key was already used for a different request."),
            status=409,
        )
    return previous


def message_send_api(
    *,
    source_ref: str,
    idempotency_key: str,
    customer: CustomerRef,
    channel: str,
    template_code: str,
    data: dict,
    purpose: str | None,
    priority: int,
    fingerprint: str,
    now: datetime,
) -> SendAccepted:
    """One message asked for through POST /api/v1/messages/: the same key and payload again returns the
    first message (created=False), the same key with another payload raises SendRefused (409). The
    customer must exist already: the send API never creates customers."""
    previous = _replayed(source_ref=source_ref, idempotency_key=idempotency_key, fingerprint=fingerprint)
    if previous is not None:
        return SendAccepted(message=previous, created=False)
    customer_id = customer_ids_find(refs=[customer])[0]
    if customer_id is None:
        raise SendRefused(
            field="customer",
            code="customer_not_found",
            message=_("No customer matches these identifiers."),
            status=404,
        )
    variants = template_variants([template_code]).get(template_code)
    if not variants:
        raise SendRefused(
            field="template",
            code="template_not_found",
            message=_("No template has the code %(code)s.") % {"code": template_code},
        )
    if channel == "best":
        own = next(t for t in variants.values() if t.code == template_code)
        candidates = [own.channel, *sorted(c for c in variants if c != own.channel)]
        chosen = channel_best(customer_ids=[customer_id], candidates=candidates)[customer_id]
        channel = chosen or own.channel
    elif channel not in variants:
        raise SendRefused(
            field="channel",
            code="no_template_for_channel",
            message=_("Template %(code)s has no %(channel)s version (a template coded %(code)s.%(channel)s).")
            % {"code": template_code, "channel": channel},
        )
    template = variants[channel]
    if template.current_version_id is None:
        raise SendRefused(
            field="template",
            code="template_empty",
            message=_("Template %(code)s has no saved content yet.") % {"code": template.code},
        )
    request = MessageRequest(
        customer_id=customer_id,
        channel=channel,
        template_id=template.pk,
        purpose=purpose or template.purpose,
        source_kind="api",
        source_ref=source_ref,
        occurrence=idempotency_key,
        data=data,
        priority=priority,
        source_label=template.name,
        payload_fingerprint=fingerprint,
    )
    message_id = _send_one(request, now)
    if message_id is None:
        # Another request with this key (for another customer, since the key is the caller's) won the
        # insert: answer as its replay would.
        previous = _replayed(source_ref=source_ref, idempotency_key=idempotency_key, fingerprint=fingerprint)
        if previous is None:  # pragma: no cover - a conflict means a row exists
            raise RuntimeError("message insert conflicted but no row was found")
        return SendAccepted(message=previous, created=False)
    message = Message.objects.get(pk=message_id)
    created = message.created_at == now and message.payload_fingerprint == fingerprint
    if message.payload_fingerprint != fingerprint:
        raise SendRefused(
            field="idempotency_key",
            code="idempotency_conflict",
            message=_("This idempotency key was already used for a different request."),
            status=409,
        )
    return SendAccepted(message=message, created=created)
