"""The outbox: enqueue messages, claim due ones in batches, hand them to the provider, record what it said,
take back what a dead worker held, and withdraw what should no longer go.

One batch goes through these steps (`batch_process`), and the order is the exactly-once argument:

1. claim (short transaction): the due rows, highest priority first, `FOR UPDATE SKIP LOCKED` on
   PostgreSQL (an IMMEDIATE transaction on SQLite, settings.DATABASES), become `sending` with a fresh
   claim token and a lease (`claimed_until`, on the database's clock so hosts need not agree on the time);
   the claim commits before anything else happens, so no row lock is held over a network call.
2. screen and render, outside the claim's transaction (campaigns/services/stages.py names who does
   them; the screen's cap step takes its own short one, with the customers' advisory locks, to mark the
   messages it lets through: campaigns/services/rules.py).
3. hand (one UPDATE), only for a provider that ignores repeats: the rows still ours (same claim token)
   get `handed_at`, and only the rows that UPDATE returned go to the provider. A batch the reaper took
   back before this point is not sent. A provider that dedupes by the idempotency key skips this write:
   a message sent twice (by this worker and by the one that took the batch over) reaches the customer
   once, and the record (5) writes `handed_at` and the rendered columns instead.
4. send: the provider's `send_batch`, outside any transaction.
5. record (short transaction): every status in one UPDATE conditional on the claim token, so a batch taken
   over by another worker is never recorded twice, with the history entry, reason code, back-off, and
   the behaviour events in the same transaction (an event exists exactly when its status does).

A worker killed between 3 and 5 leaves handed rows in `sending` with a lapsing lease; `messages_reap`
puts them back in the queue when the provider dedupes by the idempotency key (the message id, the same
on every attempt), and otherwise marks them `unknown` (reason `no_answer`) for reconciliation: never
resent blindly. A worker killed before 3 leaves rows that were never handed: they are simply queued again
(for a deduping provider, perhaps sent already: the resend is the provider's no-op).
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import uuid
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import InterfaceError, OperationalError, connection, transaction
from django.db.models import F
from django.db.models.functions import Now

from campaigns.models import Message, MessagePurpose, MessageStatus
from campaigns.models.outbox import DUE_STATUSES, MessageSource, OnCap
from campaigns.providers.base import Outcome, OutgoingMessage, SendResult
from campaigns.services import stages
from crm.db import AnyOf, server_binding_cursor
from crm.services.bulk_sql import staging_copy

logger = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 500
DEFAULT_CLAIM_SECONDS = 120.0
DEFAULT_MAX_ATTEMPTS = 8
DEFAULT_RETRY_BASE_SECONDS = 30.0
DEFAULT_RETRY_MAX_SECONDS = 3600.0
# A message the rules left without a decision, or the rate limit held back, is tried again this soon.
RELEASE_DELAY_SECONDS = 1.0

_DUE = tuple(str(s) for s in DUE_STATUSES)
# A record may land on a row the reaper already marked unknown (the answer came late): it resolves it.
_RECORDABLE = (str(MessageStatus.SENDING), str(MessageStatus.UNKNOWN))


def _setting(name: str, default):
    return getattr(settings, name, default)


def batch_size_default() -> int:
    return int(_setting("MESSAGING_BATCH_SIZE", DEFAULT_BATCH_SIZE))


def claim_duration() -> timedelta:
    return timedelta(seconds=float(_setting("MESSAGING_CLAIM_SECONDS", DEFAULT_CLAIM_SECONDS)))


def _pg() -> bool:
    return connection.vendor == "postgresql"


# --- Enqueue --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MessageRequest:
    """One message to queue. The unique key is (customer_id, source_kind, source_ref, occurrence);
    `payload_fingerprint` (see `payload_fingerprint()`) lets a caller tell a replay of its request from a
    different request reusing the key."""

    customer_id: int
    channel: str
    template_id: int
    source_kind: str
    source_ref: str
    occurrence: str
    purpose: str = MessagePurpose.MARKETING
    source_label: str = ""
    data: dict = field(default_factory=dict)
    priority: int = 0
    on_cap: str = OnCap.DEFER
    due_at: datetime | None = None  # None: now
    expires_at: datetime | None = None
    language: str = ""
    address: str = ""  # a test send's staff address; otherwise the rules fill it in when screening
    payload_fingerprint: str = ""


@dataclass
class EnqueueResult:
    created_ids: list[int]
    existing_ids: list[int]
    # Existing rows whose fingerprint differs from the request's (both non-empty): the key was reused
    # for a different payload (the send API answers 409).
    conflicting_ids: list[int]

    @property
    def created(self) -> int:
        return len(self.created_ids)


def payload_fingerprint(payload: dict) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


class EnqueueRefused(ValueError):
    """A request names a channel, purpose, source or cap rule that does not exist; nothing was written."""


def _choices() -> dict[str, frozenset]:
    return {
        "channel": frozenset(v for v, _ in Message._meta.get_field("channel").choices),
        "purpose": frozenset(MessagePurpose.values),
        "source_kind": frozenset(MessageSource.values),
        "on_cap": frozenset(OnCap.values),
    }


def _check(position: int, r: MessageRequest, choices: dict[str, frozenset]) -> None:
    # `choices` is built once per call: a million requests are checked on the enqueue's hot path.
    for name, options in choices.items():
        value = getattr(r, name)
        if value not in options:
            raise EnqueueRefused(f"message {position}: {name} {value!r} is not one of {sorted(options)}")
    for name in ("source_ref", "occurrence"):
        value = getattr(r, name)
        if not value or len(value) > 100:
            raise EnqueueRefused(f"message {position}: {name} must be 1 to 100 characters")


# The columns enqueue stages, with their types for the binary COPY (_enqueue_pg writes the status, the
# first history entry and the other columns as constants of its INSERT ... SELECT). COPY
# carries only these, so a million rows move as a narrow binary stream (see BENCHMARKS.md, outbox enqueue).
_ENQUEUE_STAGED = (
    ("customer_id", "int8"),
    ("channel", "text"),
    ("purpose", "text"),
    ("source_kind", "text"),
    ("source_ref", "text"),
    ("occurrence", "text"),
    ("source_label", "text"),
    ("payload_fingerprint", "text"),
    ("template_id", "int8"),
    ("language", "text"),
    ("data", "text"),
    ("priority", "int2"),
    ("on_cap", "text"),
    ("due_at", "timestamptz"),
    ("expires_at", "timestamptz"),
    ("address", "text"),
)
_ENQUEUE_COLUMNS = tuple(name for name, _type in _ENQUEUE_STAGED)
_KEY = ("customer_id", "source_kind", "source_ref", "occurrence")


def messages_enqueue(*, rows: Iterable[MessageRequest], now: datetime, chunk: int = 200_000) -> EnqueueResult:
    """Queue messages in bulk, idempotently: a request whose key is already in the outbox is left out
    (ON CONFLICT DO NOTHING, on either unique key), and reported among `existing_ids`. Requests are checked
    before anything is written: one bad request refuses the whole call (EnqueueRefused)."""
    created: list[int] = []
    existing: list[int] = []
    conflicting: list[int] = []
    batch: list[MessageRequest] = []
    position = 0
    choices = _choices()
    for request in rows:
        _check(position, request, choices)
        position += 1
        batch.append(request)
        if len(batch) >= chunk:
            _enqueue_chunk(batch, now, created, existing, conflicting)
            batch = []
    if batch:
        _enqueue_chunk(batch, now, created, existing, conflicting)
    return EnqueueResult(created_ids=created, existing_ids=existing, conflicting_ids=conflicting)


def _initial_history(r: MessageRequest, now: datetime) -> list:
    return [{"status": "queued", "at": now.isoformat(), "reason": "", "params": {}}]


def _enqueue_chunk(batch, now, created, existing, conflicting) -> None:
    with transaction.atomic():
        if _pg():
            ids = _enqueue_pg(batch, now)
        else:
            ids = _enqueue_portable(batch, now)
        created.extend(ids)
        if len(ids) < len(batch):
            _existing(batch, set(ids), existing, conflicting)


def _enqueue_pg(batch, now) -> list[int]:
    history_now = json.dumps(_initial_history(None, now))
    columns = ", ".join(_ENQUEUE_COLUMNS)
    with connection.cursor() as cursor:
        staging_copy(
            cursor,
            staging="outbox_enqueue",
            columns=_ENQUEUE_COLUMNS,
            types=[t for _name, t in _ENQUEUE_STAGED],
            rows=(
                (
                    r.customer_id,
                    r.channel,
                    r.purpose,
                    r.source_kind,
                    r.source_ref,
                    r.occurrence,
                    r.source_label,
                    r.payload_fingerprint,
                    r.template_id,
                    r.language,
                    json.dumps(r.data, ensure_ascii=False, default=str) if r.data else "{}",
                    r.priority,
                    r.on_cap,
                    r.due_at or now,
                    r.expires_at,
                    r.address,
                )
                for r in batch
            ),
        )
        # ON CONFLICT without a target: either unique key (the message key, the send API's key) makes
        # the row a replay. Inserted in the key's order, so two concurrent enqueues of overlapping rows
        # take the unique index's locks in the same order and one waits for the other instead of
        # deadlocking.
        selected = ", ".join("data::jsonb" if c == "data" else c for c in _ENQUEUE_COLUMNS)
        cursor.execute(
            f"INSERT INTO campaigns_message ({columns}, status, history, reason, reason_params, attempts, "
            "provider, provider_message_id, error_code, error_detail, subject, created_at) "
            f"SELECT {selected}, 'queued', %s::jsonb, '', '{{}}'::jsonb, 0, '', '', '', '', '', %s "
            "FROM outbox_enqueue ORDER BY customer_id, source_kind, source_ref, occurrence "
            "ON CONFLICT DO NOTHING RETURNING id",
            [history_now, now],
        )
        return [row[0] for row in cursor.fetchall()]


def _enqueue_portable(batch, now) -> list[int]:
    # SQLite (the embedded default): the IMMEDIATE transaction holds the database's one write lock, so
    # reading which keys exist and then inserting the others cannot race another writer.
    keys, api_keys = set(), set()
    customer_ids = sorted({r.customer_id for r in batch})
    for start in range(0, len(customer_ids), 500):
        keys.update(
            Message.objects.filter(customer_id__in=customer_ids[start : start + 500]).values_list(*_KEY)
        )
    api_refs = sorted({r.source_ref for r in batch if r.source_kind == MessageSource.API})
    if api_refs:
        api_keys.update(
            Message.objects.filter(source_kind=MessageSource.API, source_ref__in=api_refs).values_list(
                "source_ref", "occurrence"
            )
        )
    fresh = []
    for r in batch:
        key = (r.customer_id, r.source_kind, r.source_ref, r.occurrence)
        api_key = (r.source_ref, r.occurrence) if r.source_kind == MessageSource.API else None
        if key in keys or (api_key is not None and api_key in api_keys):
            continue
        keys.add(key)
        if api_key is not None:
            api_keys.add(api_key)
        fresh.append(_message(r, now))
    created = Message.objects.bulk_create(fresh, batch_size=500)
    return [m.pk for m in created]


def _message(r: MessageRequest, now: datetime) -> Message:
    return Message(
        customer_id=r.customer_id,
        channel=r.channel,
        purpose=r.purpose,
        source_kind=r.source_kind,
        source_ref=r.source_ref,
        occurrence=r.occurrence,
        source_label=r.source_label,
        payload_fingerprint=r.payload_fingerprint,
        template_id=r.template_id,
        language=r.language,
        data=r.data,
        priority=r.priority,
        on_cap=r.on_cap,
        status=MessageStatus.QUEUED,
        due_at=r.due_at or now,
        expires_at=r.expires_at,
        address=r.address,
        created_at=now,
        history=_initial_history(r, now),
    )


def _existing(batch, created_ids: set[int], existing: list, conflicting: list) -> None:
    wanted = {(r.customer_id, r.source_kind, r.source_ref, r.occurrence): r for r in batch}
    api_wanted = {(r.source_ref, r.occurrence): r for r in batch if r.source_kind == MessageSource.API}
    found: dict[int, tuple] = {}
    if _pg():
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT m.id, m.payload_fingerprint, e.payload_fingerprint FROM outbox_enqueue e "
                "JOIN campaigns_message m ON m.customer_id = e.customer_id AND m.source_kind = e.source_kind "
                "AND m.source_ref = e.source_ref AND m.occurrence = e.occurrence "
                "UNION ALL SELECT m.id, m.payload_fingerprint, e.payload_fingerprint FROM outbox_enqueue e "
                "JOIN campaigns_message m ON m.source_kind = 'api' AND e.source_kind = 'api' "
                "AND m.source_ref = e.source_ref AND m.occurrence = e.occurrence AND m.customer_id <> e.customer_id"
            )
            for pk, stored, given in cursor.fetchall():
                found[pk] = (stored, given)
    else:
        for (customer_id, kind, ref, occurrence), r in wanted.items():
            for pk, stored in Message.objects.filter(
                customer_id=customer_id, source_kind=kind, source_ref=ref, occurrence=occurrence
            ).values_list("id", "payload_fingerprint"):
                found[pk] = (stored, r.payload_fingerprint)
        for (ref, occurrence), r in api_wanted.items():
            for pk, stored in Message.objects.filter(
                source_kind="api", source_ref=ref, occurrence=occurrence
            ).values_list("id", "payload_fingerprint"):
                found.setdefault(pk, (stored, r.payload_fingerprint))
    for pk, (stored, given) in sorted(found.items()):
        if pk in created_ids:
            continue
        existing.append(pk)
        if stored and given and stored != given:
            conflicting.append(pk)


# --- Claim ----------------------------------------------------------------------------------------


@dataclass
class Claim:
    token: uuid.UUID
    messages: list[Message]


def messages_claim(*, now: datetime, batch_size: int | None = None, ids: list[int] | None = None) -> Claim:
    """Claim up to `batch_size` due messages (or exactly the due ones among `ids`), highest priority first
    then oldest due, and commit: they are `sending` under a new claim token with a lease, attempts + 1.
    Call outside a transaction: the claim must be visible to other workers (and the reaper) at once."""
    size = batch_size or batch_size_default()
    token = uuid.uuid4()
    lease_seconds = claim_duration().total_seconds()
    with transaction.atomic():
        if _pg():
            with connection.cursor() as cursor:
                # The statuses as literals: the partial claim index's predicate must be provable from them.
                where = "status IN ('queued', 'deferred') AND due_at <= %s"
                params: list = [now]
                if ids is not None:
                    where += " AND id = ANY(%s)"
                    params.append(list(ids))
                # SKIP LOCKED: concurrent claimers take different rows instead of queuing behind each
                # other; the ORDER BY matches the campaigns_message_claim index.
                cursor.execute(
                    "UPDATE campaigns_message m SET status = 'sending', claim_token = %s, "
                    "claimed_until = now() + make_interval(secs => %s), attempts = m.attempts + 1, "
                    "screened_at = NULL "
                    f"FROM (SELECT id FROM campaigns_message WHERE {where} "
                    "ORDER BY priority DESC, due_at LIMIT %s FOR UPDATE SKIP LOCKED) c "
                    "WHERE m.id = c.id RETURNING m.id",
                    [token, lease_seconds, *params, size],
                )
                claimed = [row[0] for row in cursor.fetchall()]
        else:
            # The IMMEDIATE transaction (settings.DATABASES) holds SQLite's one write lock from BEGIN:
            # a second claimer waits for this one to commit and then sees the rows as sending.
            due = Message.objects.filter(status__in=_DUE, due_at__lte=now)
            if ids is not None:
                due = due.filter(id__in=ids)
            claimed = list(due.order_by("-priority", "due_at").values_list("id", flat=True)[:size])
            if claimed:
                Message.objects.filter(id__in=claimed).update(
                    status=MessageStatus.SENDING,
                    claim_token=token,
                    claimed_until=Now() + claim_duration(),
                    attempts=F("attempts") + 1,
                    screened_at=None,
                )
    if not claimed:
        return Claim(token=token, messages=[])
    messages = list(Message.objects.filter(AnyOf("id", claimed)).order_by("-priority", "due_at", "id"))
    return Claim(token=token, messages=messages)


# --- One batch ------------------------------------------------------------------------------------


@dataclass
class BatchStats:
    claimed: int = 0
    sent: int = 0
    retried: int = 0
    failed: int = 0
    suppressed: int = 0
    deferred: int = 0
    unknown: int = 0
    released: int = 0
    lost: int = 0  # rows taken over by another worker before this one could hand or record them

    def add(self, other: BatchStats) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass
class _Outcome:
    """What the record step writes for one message."""

    message: Message
    status: str
    reason: str = ""
    params: dict = field(default_factory=dict)
    due_at: datetime | None = None
    release: bool = False  # back to the queue: claim and hand-over cleared
    provider_message_id: str = ""
    error_code: str = ""
    error_detail: str = ""
    sent: bool = False
    final: bool = False
    event: str = ""  # message_sent / message_failed
    result: SendResult | None = None
    # False when the message went back without being tried (deferred by the rules, held back by the rate
    # limit or a provider's cool-down, left without a decision): the claim's attempt is given back, so
    # MESSAGING_MAX_ATTEMPTS counts tries, not how often a message waited its turn.
    attempted: bool = True
    # Handed to a provider that dedupes without a hand UPDATE first (_send_channel): the record writes
    # what the hand would have (handed_at, provider, address, subject, links, version, language).
    handed_here: bool = False


def _iso(moment: datetime | None) -> str:
    return moment.isoformat() if moment else ""


def retry_delay(attempts: int) -> float:
    """Exponential back-off with jitter: base * 2^(attempts-1), capped, then a random point in its upper
    half, so that the messages of a provider outage do not all come back in the same second."""
    base = float(_setting("MESSAGING_RETRY_BASE_SECONDS", DEFAULT_RETRY_BASE_SECONDS))
    ceiling = float(_setting("MESSAGING_RETRY_MAX_SECONDS", DEFAULT_RETRY_MAX_SECONDS))
    delay = min(ceiling, base * (2 ** max(0, attempts - 1)))
    return delay * random.uniform(0.5, 1.0)


def batch_process(*, claim: Claim, now: datetime) -> BatchStats:
    """Screen, render, hand over, send and record one claimed batch (see the module docstring).

    Should the screen or the renderer raise, the batch is split in halves and each half tried again, down
    to single messages, so that one message that makes a stage raise (a poison row) holds back only
    itself. That message goes back to the queue with back-off (reason screen_error / render_error) and,
    once it has been tried MESSAGING_MAX_ATTEMPTS times, ends `failed` (screen_failed / render_failed, with
    the error): a dead letter staff can retry once the cause is fixed, never a loop. The error is logged,
    not raised: the dispatcher goes on with the next batch."""
    stats = BatchStats(claimed=len(claim.messages))
    if not claim.messages:
        return stats
    try:
        return _batch_process(claim, now, stats)
    except _DatabaseDown as down:
        # Not one message's fault: the whole batch goes back at once (if the database takes the write;
        # otherwise the reaper takes it back when the lease lapses) and the error propagates.
        _record([_release(m, now) for m in down.unhanded], claim, now, stats)
        raise down.__cause__ from None


class _DatabaseDown(Exception):
    def __init__(self, unhanded: list[Message]):
        self.unhanded = unhanded


def max_attempts() -> int:
    return int(_setting("MESSAGING_MAX_ATTEMPTS", DEFAULT_MAX_ATTEMPTS))


# A stage that raised: (the reason while it is tried again, the reason once it gives up), both codes of
# campaigns/reasons.py; the first is also the error code the dead letters show.
_STAGE_REASONS = {
    "screen": ("screen_error", "screen_failed"),
    "render": ("render_error", "render_failed"),
}


def _stage_failed(m: Message, stage: str, exc: BaseException, now: datetime) -> _Outcome:
    """A message that made the screen or the renderer raise even alone: back with back-off, or, at the
    attempts limit, failed for good with the error."""
    error = f"{type(exc).__name__}: {exc}"[:500]
    retrying, giving_up = _STAGE_REASONS[stage]
    if m.attempts >= max_attempts():
        return _Outcome(
            m,
            MessageStatus.FAILED,
            reason=giving_up,
            params={"error": error, "attempts": m.attempts},
            error_code=retrying,
            error_detail=error,
            final=True,
            event="message_failed",
        )
    retry_at = now + timedelta(seconds=retry_delay(m.attempts))
    return _Outcome(
        m,
        MessageStatus.QUEUED,
        reason=retrying,
        params={"error": error, "until": _iso(retry_at)},
        due_at=retry_at,
        release=True,
        error_code=retrying,
        error_detail=error,
    )


def _isolating(stage: str, call, messages: list[Message]):
    """`call(messages)`'s results, and [(message, exception)] for the messages that make it raise: on an
    exception the batch is halved and each half tried again, so k poison messages cost about
    k * log2(batch) calls while every other message gets its answer."""
    try:
        return list(call(messages)), []
    except (OperationalError, InterfaceError):
        raise  # the database is unreachable: halving the batch would only ask it again 2n times
    except Exception as exc:
        if len(messages) == 1:
            logger.exception("%s raised for message %s", stage, messages[0].pk)
            return [], [(messages[0], exc)]
    half = len(messages) // 2
    done, failed = _isolating(stage, call, messages[:half])
    more, more_failed = _isolating(stage, call, messages[half:])
    return done + more, failed + more_failed


def _batch_process(claim: Claim, now: datetime, stats: BatchStats) -> BatchStats:
    outcomes: list[_Outcome] = []
    pending: list[Message] = []
    for m in claim.messages:
        if m.expires_at is not None and m.expires_at <= now:
            outcomes.append(_Outcome(m, MessageStatus.SUPPRESSED, reason="expired", final=True))
        else:
            pending.append(m)

    try:
        to_render, outgoing_by_channel = _screen_and_render(pending, outcomes, now)
    except (OperationalError, InterfaceError) as exc:
        raise _DatabaseDown(pending) from exc

    for channel, items in outgoing_by_channel.items():
        outcomes.extend(_send_channel(channel, items, claim, now, stats))

    _record(outcomes, claim, now, stats)
    return stats


def _screen_and_render(pending: list[Message], outcomes: list, now: datetime):
    # Screening (consent, suppression, address, caps, priority, quiet hours) for the whole batch.
    to_render: list[Message] = []
    if pending:
        screened, failed = _isolating("screen", lambda ms: stages.screen(messages=ms, now=now), pending)
        outcomes.extend(_stage_failed(m, "screen", exc, now) for m, exc in failed)
        decisions = {d.message_id: d for d in screened}
        failed_ids = {m.pk for m, _exc in failed}
        for m in pending:
            d = decisions.get(m.pk)
            if m.pk in failed_ids:
                continue
            if d is None:
                outcomes.append(_release(m, now, attempted=False))
            elif d.action == "send":
                if getattr(d, "address", ""):
                    m.address = d.address
                to_render.append(m)
            elif d.action == "defer":
                outcomes.append(
                    _Outcome(
                        m,
                        MessageStatus.DEFERRED,
                        reason=d.reason,
                        params=dict(d.params or {}),
                        due_at=d.until or now + timedelta(seconds=RELEASE_DELAY_SECONDS),
                        release=True,
                        attempted=False,
                    )
                )
            else:
                outcomes.append(
                    _Outcome(
                        m, MessageStatus.SUPPRESSED, reason=d.reason, params=dict(d.params or {}), final=True
                    )
                )

    outgoing_by_channel: dict[str, list[tuple[Message, OutgoingMessage]]] = defaultdict(list)
    if to_render:
        results, failed = _isolating("render", lambda ms: stages.render(messages=ms, now=now), to_render)
        outcomes.extend(_stage_failed(m, "render", exc, now) for m, exc in failed)
        failed_ids = {m.pk for m, _exc in failed}
        rendered = {r.message_id: r for r in results}
        for m in to_render:
            if m.pk in failed_ids:
                continue
            r = rendered.get(m.pk)
            if r is None or getattr(r, "content", None) is None:
                # The template cannot render for this customer: it would fail the same way every time,
                # so it is failed for good at once (a dead letter with the error), not retried blindly.
                error = str(getattr(r, "error", "") or "no rendering") if r is not None else "no rendering"
                outcomes.append(
                    _Outcome(
                        m,
                        MessageStatus.FAILED,
                        reason="render_failed",
                        params={"error": error[:500]},
                        error_code=str(getattr(r, "code", "") or "render_failed")[:64],
                        error_detail=error,
                        final=True,
                        event="message_failed",
                    )
                )
                continue
            # The language the variant was rendered in, before tracking: the opt-out and unsubscribe words
            # tracking adds must speak it (an English SMS ending in 回T退订 was the bug).
            m.language = getattr(r, "language", "") or m.language
            try:
                content, links = stages.track(m.pk, dict(r.content), m.channel, m.purpose, m.language)
            except Exception as exc:
                logger.exception("tracking raised for message %s", m.pk)
                outcomes.append(_stage_failed(m, "render", exc, now))
                continue
            headers = content.pop("headers", {}) if isinstance(content, dict) else {}
            m.subject = (getattr(r, "subject", "") or "")[:300]
            m.links = list(links) if links else None
            m.template_version_id = getattr(r, "version_id", None) or m.template_version_id
            outgoing_by_channel[m.channel].append(
                (
                    m,
                    OutgoingMessage(
                        message_id=m.pk,
                        idempotency_key=str(m.pk),
                        channel=m.channel,
                        address=m.address,
                        content=content,
                        headers=dict(headers or {}),
                        language=m.language,
                    ),
                )
            )
    return to_render, outgoing_by_channel


def _release(
    m: Message, now: datetime, *, reason: str = "", params: dict | None = None, attempted: bool = True
) -> _Outcome:
    return _Outcome(
        m,
        MessageStatus.QUEUED if m.status != MessageStatus.DEFERRED else MessageStatus.DEFERRED,
        reason=reason,
        params=params or {},
        due_at=now + timedelta(seconds=RELEASE_DELAY_SECONDS),
        release=True,
        attempted=attempted,
    )


def _send_channel(channel, items, claim: Claim, now: datetime, stats: BatchStats) -> list[_Outcome]:
    outcomes: list[_Outcome] = []
    provider = stages.provider_for(channel)
    code = provider.code
    cooling = stages.provider_cooling(code, now)
    if cooling is not None and cooling > now:
        for m, _ in items:
            outcomes.append(
                _Outcome(
                    m,
                    MessageStatus.QUEUED,
                    reason="provider_retry",
                    params={"error": "cooling down", "until": _iso(cooling)},
                    due_at=cooling,
                    release=True,
                    attempted=False,
                )
            )
        return outcomes
    granted = stages.rate_limit_take(code, len(items), now)
    if granted < len(items):
        for m, _ in items[granted:]:
            retry_at = now + timedelta(seconds=RELEASE_DELAY_SECONDS)
            outcomes.append(
                _Outcome(
                    m,
                    MessageStatus.QUEUED,
                    reason="rate_limited",
                    params={"until": _iso(retry_at)},
                    due_at=retry_at,
                    release=True,
                    attempted=False,
                )
            )
        items = items[:granted]
    if not items:
        return outcomes

    # A provider that dedupes by the idempotency key turns a second send of a message into a no-op, so
    # the hand UPDATE (which makes sure no row another worker took over is sent) is not needed for it:
    # a row the reaper took back meanwhile may be sent by both workers, the provider keeps one, and only
    # the worker still holding the claim token records it. Claim -> send -> record: two writes a message,
    # not three (BENCHMARKS.md, outbox dispatch). A provider that ignores repeats is handed first, as before.
    handed_here = bool(provider.supports_idempotency)
    if not handed_here:
        handed = _hand(items, code, claim, now)
        stats.lost += len(items) - len(handed)
        items = [(m, out) for m, out in items if m.pk in handed]
        if not items:
            return outcomes
    for m, _ in items:
        m.provider = code

    results: dict[int, SendResult] = {}
    try:
        with provider:
            for result in provider.send_batch([out for _, out in items], now=now):
                results[result.message_id] = result
    except Exception as exc:  # the provider's bug or a dropped connection: what was sent is not known
        logger.exception(
            "provider %s raised during send_batch; answers missing for the rest of the batch", code
        )
        missing_error = f"{type(exc).__name__}: {exc}"[:500]
    else:
        missing_error = "no answer"
    for m, _ in items:
        result = results.get(m.pk)
        if result is None:
            # Handed over, no answer for this one. With an idempotency key a resend is a no-op at the
            # provider, so it is retried; without one it may have gone out: reconcile, never resend.
            result = SendResult(
                message_id=m.pk,
                outcome=Outcome.RETRY if provider.supports_idempotency else Outcome.UNKNOWN,
                error_code="no_answer",
                error_detail=missing_error,
            )
        outcome = _from_result(m, result, now)
        outcome.handed_here = handed_here
        outcomes.append(outcome)
        if result.cool_down:
            stages.provider_cool_down(
                code, result.retry_after or retry_delay(1), result.error_code or "cool_down"
            )
    return outcomes


def _from_result(m: Message, result: SendResult, now: datetime) -> _Outcome:
    if result.outcome == Outcome.SENT:
        return _Outcome(
            m,
            MessageStatus.SENT,
            provider_message_id=result.provider_message_id,
            sent=True,
            final=True,
            event="message_sent",
            result=result,
        )
    error = result.error_code or result.error_detail or "error"
    if result.outcome == Outcome.RETRY:
        if m.attempts >= max_attempts():
            return _Outcome(
                m,
                MessageStatus.FAILED,
                reason="retries_exhausted",
                params={"attempts": m.attempts, "error": error},
                error_code=result.error_code,
                error_detail=result.error_detail,
                final=True,
                event="message_failed",
                result=result,
            )
        delay = max(retry_delay(m.attempts), float(result.retry_after or 0))
        retry_at = now + timedelta(seconds=delay)
        return _Outcome(
            m,
            MessageStatus.QUEUED,
            reason="provider_retry",
            params={"error": error, "until": _iso(retry_at)},
            due_at=retry_at,
            release=True,
            error_code=result.error_code,
            error_detail=result.error_detail,
            result=result,
        )
    if result.outcome == Outcome.PERMANENT:
        return _Outcome(
            m,
            MessageStatus.FAILED,
            reason="provider_rejected",
            params={"error": error},
            error_code=result.error_code,
            error_detail=result.error_detail,
            final=True,
            event="message_failed",
            result=result,
        )
    return _Outcome(
        m,
        MessageStatus.UNKNOWN,
        reason="no_answer",
        error_code=result.error_code,
        error_detail=result.error_detail,
        final=True,
        result=result,
    )


def _hand(items, code: str, claim: Claim, now: datetime) -> set[int]:
    """Mark the rows handed over (and renew their lease) in one UPDATE conditional on the claim token;
    returns the ids it changed, the only ones that may be sent."""
    lease_seconds = claim_duration().total_seconds()
    if _pg():
        with server_binding_cursor() as cursor:
            cursor.execute(
                "UPDATE campaigns_message m SET handed_at = %s, provider = %s, "
                "claimed_until = now() + make_interval(secs => %s), address = v.address, subject = v.subject, "
                "links = v.links::jsonb, template_version_id = v.version_id, language = v.language "
                # The arrays in binary (%b): psycopg's text form quotes every element, which was a third
                # of a 1,000-message batch's recording CPU (see BENCHMARKS.md, outbox dispatch).
                "FROM unnest(%b::bigint[], %b::text[], %b::text[], %b::text[], %b::bigint[], %b::text[]) "
                "AS v(id, address, subject, links, version_id, language) "
                "WHERE m.id = v.id AND m.claim_token = %s AND m.status = 'sending' RETURNING m.id",
                [
                    now,
                    code,
                    lease_seconds,
                    [m.pk for m, _ in items],
                    [m.address for m, _ in items],
                    [m.subject for m, _ in items],
                    [json.dumps(m.links) if m.links is not None else None for m, _ in items],
                    [m.template_version_id for m, _ in items],
                    [m.language for m, _ in items],
                    claim.token,
                ],
            )
            return {row[0] for row in cursor.fetchall()}
    handed = set()
    with transaction.atomic():
        for m, _ in items:
            if Message.objects.filter(pk=m.pk, claim_token=claim.token, status=MessageStatus.SENDING).update(
                handed_at=now,
                provider=code,
                claimed_until=Now() + claim_duration(),
                address=m.address,
                subject=m.subject,
                links=m.links,
                template_version_id=m.template_version_id,
                language=m.language,
            ):
                handed.add(m.pk)
    return handed


def _entry(o: _Outcome, now: datetime) -> dict:
    entry = {"status": str(o.status), "at": now.isoformat(), "reason": o.reason, "params": o.params}
    if o.due_at is not None and o.release:
        entry["until"] = o.due_at.isoformat()
    return entry


def _record(outcomes: list[_Outcome], claim: Claim, now: datetime, stats: BatchStats) -> None:
    if not outcomes:
        return
    with transaction.atomic():
        if _pg():
            recorded = _record_pg(outcomes, claim, now)
        else:
            recorded = _record_portable(outcomes, claim, now)
        done = [o for o in outcomes if o.message.pk in recorded]
        stats.lost += len(outcomes) - len(done)
        problems = [(o.message, o.result) for o in done if o.result is not None and o.result.address_problem]
        if problems:
            stages.address_problems_record(problems=problems, now=now)
        events = [_event(o, now) for o in done if o.event]
        if events:
            stages.message_events_record(events=events)
    for o in done:
        if o.status == MessageStatus.SENT:
            stats.sent += 1
        elif o.status == MessageStatus.FAILED:
            stats.failed += 1
        elif o.status == MessageStatus.SUPPRESSED:
            stats.suppressed += 1
        elif o.status == MessageStatus.UNKNOWN:
            stats.unknown += 1
        elif o.status == MessageStatus.DEFERRED:
            stats.deferred += 1
        elif o.reason == "provider_retry" and o.error_code:
            stats.retried += 1
        else:
            stats.released += 1


def _event(o: _Outcome, now: datetime) -> dict:
    m = o.message
    properties = {
        "message_id": m.pk,
        "channel": m.channel,
        "source_kind": m.source_kind,
        "source_ref": m.source_ref,
    }
    if m.source_label:
        properties["source_label"] = m.source_label
    if o.event == "message_failed":
        properties.update(reason=o.reason, error_code=o.error_code)
    elif o.provider_message_id:
        properties["provider_message_id"] = o.provider_message_id
    return {
        "type": o.event,
        "message_id": m.pk,
        "customer_id": m.customer_id,
        "channel": m.channel,
        "occurred_at": now,
        "properties": properties,
    }


def _record_pg(outcomes: list[_Outcome], claim: Claim, now: datetime) -> set[int]:
    with server_binding_cursor() as cursor:
        cursor.execute(
            "UPDATE campaigns_message m SET status = v.status, reason = v.reason, reason_params = v.params::jsonb, "
            "due_at = COALESCE(v.due_at, m.due_at), "
            "provider_message_id = CASE WHEN v.pid = '' THEN m.provider_message_id ELSE v.pid END, "
            "error_code = v.ecode, error_detail = v.edetail, "
            "sent_at = CASE WHEN v.sent THEN %s ELSE m.sent_at END, "
            "finished_at = CASE WHEN v.final THEN %s ELSE m.finished_at END, "
            "handed_at = CASE WHEN v.release THEN NULL WHEN v.handed THEN %s ELSE m.handed_at END, "
            "claim_token = CASE WHEN v.release THEN NULL ELSE m.claim_token END, claimed_until = NULL, "
            "attempts = CASE WHEN v.tried THEN m.attempts ELSE GREATEST(m.attempts - 1, 0) END, "
            "history = m.history || jsonb_build_array(v.entry::jsonb), "
            # What _hand writes, for the messages handed to a deduping provider without it.
            "provider = CASE WHEN v.handed THEN v.provider ELSE m.provider END, "
            "address = CASE WHEN v.handed THEN v.address ELSE m.address END, "
            "subject = CASE WHEN v.handed THEN v.subject ELSE m.subject END, "
            "links = CASE WHEN v.handed THEN v.links::jsonb ELSE m.links END, "
            "template_version_id = CASE WHEN v.handed THEN v.version_id ELSE m.template_version_id END, "
            "language = CASE WHEN v.handed THEN v.language ELSE m.language END "
            # The arrays in binary (%b), as in _hand.
            "FROM unnest(%b::bigint[], %b::text[], %b::text[], %b::text[], %b::timestamptz[], %b::text[], "
            "%b::text[], %b::text[], %b::bool[], %b::bool[], %b::bool[], %b::text[], %b::bool[], "
            "%b::bool[], %b::text[], %b::text[], %b::text[], %b::text[], %b::bigint[], %b::text[]) "
            "AS v(id, status, reason, params, due_at, pid, ecode, edetail, sent, final, release, entry, tried, "
            "handed, provider, address, subject, links, version_id, language) "
            "WHERE m.id = v.id AND m.claim_token = %s AND m.status = ANY(%s) RETURNING m.id",
            [
                now,
                now,
                now,
                [o.message.pk for o in outcomes],
                [str(o.status) for o in outcomes],
                [o.reason for o in outcomes],
                [json.dumps(o.params, default=str) for o in outcomes],
                [o.due_at if o.release else None for o in outcomes],
                [o.provider_message_id or "" for o in outcomes],
                [(o.error_code or "")[:64] for o in outcomes],
                [o.error_detail or "" for o in outcomes],
                [o.sent for o in outcomes],
                [o.final for o in outcomes],
                [o.release for o in outcomes],
                [json.dumps(_entry(o, now), default=str) for o in outcomes],
                [o.attempted for o in outcomes],
                *_handed_columns(outcomes),
                claim.token,
                list(_RECORDABLE),
            ],
        )
        return {row[0] for row in cursor.fetchall()}


def _handed_columns(outcomes: list[_Outcome]) -> list[list]:
    """The record's arrays for the columns _hand writes; None where the message was not handed here. A
    message handed and released (retry later) keeps them too, as after _hand: one that may have gone out
    (no answer) must still resolve its clicks to its recorded links."""
    ms = [o.message if o.handed_here else None for o in outcomes]
    return [
        [o.handed_here for o in outcomes],
        [m.provider if m else None for m in ms],
        [m.address if m else None for m in ms],
        [m.subject if m else None for m in ms],
        [json.dumps(m.links) if m and m.links is not None else None for m in ms],
        [m.template_version_id if m else None for m in ms],
        [m.language if m else None for m in ms],
    ]


def _record_portable(outcomes: list[_Outcome], claim: Claim, now: datetime) -> set[int]:
    recorded = set()
    for o in outcomes:
        m = o.message
        values = {
            "status": o.status,
            "reason": o.reason,
            "reason_params": o.params,
            "error_code": (o.error_code or "")[:64],
            "error_detail": o.error_detail or "",
            "claimed_until": None,
            "history": list(m.history or []) + [json.loads(json.dumps(_entry(o, now), default=str))],
        }
        if o.handed_here:
            values.update(
                handed_at=now,
                provider=m.provider,
                address=m.address,
                subject=m.subject,
                links=m.links,
                template_version_id=m.template_version_id,
                language=m.language,
            )
        if o.release:
            values.update(due_at=o.due_at, handed_at=None, claim_token=None)
        if not o.attempted:
            values["attempts"] = max(0, m.attempts - 1)
        if o.provider_message_id:
            values["provider_message_id"] = o.provider_message_id
        if o.sent:
            values["sent_at"] = now
        if o.final:
            values["finished_at"] = now
        if Message.objects.filter(pk=m.pk, claim_token=claim.token, status__in=_RECORDABLE).update(**values):
            recorded.add(m.pk)
    return recorded


# --- One message now ------------------------------------------------------------------------------


def message_send_now(*, request: MessageRequest, now: datetime) -> tuple[Message, bool]:
    """Queue one message and put it through the pipeline at once, in this process (the send API, a staff
    test send). Returns (message, created). A replayed key sends nothing again: it returns the stored
    message as it is (the caller compares `payload_fingerprint` to refuse a different payload). A message
    the rules defer stays queued for the dispatcher, like any other."""
    result = messages_enqueue(rows=[request], now=now)
    if result.created_ids:
        pk, created = result.created_ids[0], True
        claim = messages_claim(now=now, ids=[pk], batch_size=1)
        batch_process(claim=claim, now=now)
    else:
        pk, created = result.existing_ids[0], False
    return Message.objects.get(pk=pk), created


# --- Recovery and withdrawal ----------------------------------------------------------------------


@dataclass
class ReapResult:
    requeued: int = 0  # never handed over, or handed to a provider that dedupes the resend
    unknown: int = 0  # handed over without an idempotency key: to reconcile


def _provider_code(channel: str) -> str | None:
    try:
        return stages.provider_for(channel).code
    except Exception:  # logged by _idempotent_providers
        return None


def _idempotent_providers(channels: set[str]) -> set[str]:
    codes = set()
    for channel in channels:
        try:
            provider = stages.provider_for(channel)
        except Exception:  # a channel no longer configured: treat its provider as not deduping
            logger.exception("no provider for channel %s while reaping", channel)
            continue
        if provider.supports_idempotency:
            codes.add(provider.code)
    return codes


def messages_reap(*, now: datetime, limit: int = 5000) -> ReapResult:
    """Take back the messages whose claim lapsed (their worker died or stalled past the lease): not yet
    handed over -> queued (for a deduping provider, which is sent to without a hand-over mark, perhaps
    sent: queued all the same); handed to a provider that dedupes by the idempotency key -> queued (the resend
    carries the same key); handed to one that does not -> unknown, reason no_answer, never resent. The
    claim token is cleared on the requeued rows, so the old worker, should it wake, records nothing;
    it is kept on the unknown ones, so its late answer may still resolve them."""
    result = ReapResult()
    with transaction.atomic():
        lapsed = Message.objects.filter(status=MessageStatus.SENDING, claimed_until__lt=Now())
        if _pg():
            lapsed = lapsed.select_for_update(skip_locked=True)
        rows = list(
            lapsed.order_by("id").values_list("id", "channel", "provider", "handed_at", "history")[:limit]
        )
        if not rows:
            return result
        dedupes = _idempotent_providers({channel for _, channel, _provider, _handed, _ in rows})
        requeue, unknown = [], []
        for pk, channel, provider, handed, history in rows:
            if handed is not None and provider not in dedupes:
                unknown.append((pk, history))
                continue
            if handed is not None:
                reason = "claim_lapsed_handed"
            elif _provider_code(channel) in dedupes:
                # A deduping provider is sent to without a hand UPDATE (_send_channel): the worker may
                # have stopped before or after sending; the resend carries the same key either way.
                reason = "claim_lapsed_maybe_sent"
            else:
                reason = "claim_lapsed"
            requeue.append((pk, history, reason))
        stamp = now.isoformat()
        for pk, history, reason in requeue:
            Message.objects.filter(pk=pk, status=MessageStatus.SENDING).update(
                status=MessageStatus.QUEUED,
                claim_token=None,
                claimed_until=None,
                handed_at=None,
                due_at=now,
                history=list(history or [])
                + [{"status": "queued", "at": stamp, "reason": reason, "params": {}}],
            )
        for pk, history in unknown:
            Message.objects.filter(pk=pk, status=MessageStatus.SENDING).update(
                status=MessageStatus.UNKNOWN,
                reason="no_answer",
                reason_params={},
                claimed_until=None,
                finished_at=now,
                history=list(history or [])
                + [{"status": "unknown", "at": stamp, "reason": "no_answer", "params": {}}],
            )
        result.requeued, result.unknown = len(requeue), len(unknown)
    if result.requeued or result.unknown:
        logger.warning("outbox reaper: %s requeued, %s unknown", result.requeued, result.unknown)
    return result


def messages_cancel(
    *,
    customer_ids: Iterable[int],
    channel: str,
    purpose: str = MessagePurpose.MARKETING,
    reason: str,
    params: dict | None = None,
    now: datetime,
) -> int:
    """Withdraw the queued and deferred messages of these customers on this channel and purpose (an
    unsubscribe, a bounce, a cancelled campaign): `cancelled`, with the reason code. A message already
    claimed (sending) is in flight and is not stopped. Returns how many were cancelled."""
    ids = sorted(set(customer_ids))
    if not ids:
        return 0
    entry = {"status": "cancelled", "at": now.isoformat(), "reason": reason, "params": params or {}}
    with transaction.atomic():
        if _pg():
            with connection.cursor() as cursor:
                cursor.execute(
                    "UPDATE campaigns_message SET status = 'cancelled', reason = %s, reason_params = %s::jsonb, "
                    "finished_at = %s, history = history || jsonb_build_array(%s::jsonb) "
                    "WHERE customer_id = ANY(%s) AND channel = %s AND purpose = %s AND status = ANY(%s)",
                    [
                        reason,
                        json.dumps(params or {}),
                        now,
                        json.dumps(entry),
                        ids,
                        channel,
                        purpose,
                        list(_DUE),
                    ],
                )
                return cursor.rowcount
        count = 0
        for start in range(0, len(ids), 500):
            rows = Message.objects.filter(
                customer_id__in=ids[start : start + 500], channel=channel, purpose=purpose, status__in=_DUE
            ).values_list("id", "history")
            for pk, history in rows:
                count += Message.objects.filter(pk=pk, status__in=_DUE).update(
                    status=MessageStatus.CANCELLED,
                    reason=reason,
                    reason_params=params or {},
                    finished_at=now,
                    history=list(history or []) + [entry],
                )
        return count
