"""The send API's messages and the templates they name.

A message asked for through the API goes through the outbox's `message_send_now` (queued under its
unique key, then put through the pipeline at once, in the request); the transactional notices queue
theirs with `messages_enqueue` (campaigns/services/notices.py).

Templates: a template code names one template on one channel (MessageTemplate.channel); its variants for
other channels are the templates coded `<code>.<channel>` (`points_earned` on WeChat, `points_earned.sms`,
`points_earned.email`), which is what channel "best" chooses among.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from django.utils.translation import gettext as _

from campaigns.models import Channel, Message, MessageTemplate
from campaigns.services.channels import channel_best
from campaigns.services.outbox import MessageRequest, message_send_now
from crm.services.events import CustomerRef, customer_ids_find

logger = logging.getLogger(__name__)


def _send_one(request: MessageRequest, now: datetime) -> int | None:
    """The id of the message for `request`, created and sent at once, or there before; None when the
    key's row belongs to another customer (the API key's own unique key)."""
    try:
        message, _created = message_send_now(request=request, now=now)
    except IndexError:  # enqueue reported no id: the API key constraint, another customer's row
        return None
    except Exception:
        # The row is committed before the pipeline runs; if sending it at once fails (a stage down), the
        # message is the dispatcher's like any other (a claimed one is taken back by the reaper), and the
        # caller still gets its id rather than a 500 for a message that exists.
        key = (request.customer_id, request.source_kind, request.source_ref, request.occurrence)
        logger.exception("send API: sending message %s at once failed; left to the dispatcher", key)
        return _message_id(request)
    return message.pk if message.customer_id == request.customer_id else None


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
