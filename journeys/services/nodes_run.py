"""What each node type does to the enrollments standing on it in one batch: one call per node per batch,
never one query per enrollment (the engine, journeys/services/engine.py, groups them).

A handler answers, for every enrollment it was given, one of:
- Move(handle): the node is done; leave through `handle`.
- Wait(due_at, waiting_for): the enrollment stays here until `due_at` (or the event, for a
  wait-for-event); the engine records a waiting step and the dispatcher wakes it.
- End(state, outcome, reason): the enrollment finishes here (an exit node, a failure).
- Park(due_at, attempts): no step yet; come back at `due_at` (a webhook is only ever called after a
  claim, outside the batch's transaction, so an enrollment arriving at one mid-batch is parked).

Side effects carry keys from (enrollment, node, visit): messages through the outbox with source "journey",
ref "<version>:<node>" and occurrence "<enrollment>:<visit>"; points with the ledger key
"journey:<enrollment>:<node>:<visit>"; webhooks with the same as their Idempotency-Key. Coupons, tags and
attributes are written in the batch's transaction together with the step, which is unique: they happen
exactly when the step is recorded.
"""

from __future__ import annotations

import hashlib
import logging
import random
import zoneinfo
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.conf import settings

from journeys.models import EnrollmentState, StepOutcome

if TYPE_CHECKING:
    from journeys.services.engine import Claim, Compiled, Live

logger = logging.getLogger(__name__)

UNITS = {"minutes": 60, "hours": 3600, "days": 86400}
WEBHOOK_MAX_ATTEMPTS = 6
WEBHOOK_RETRY_BASE_SECONDS = 30.0
WEBHOOK_RETRY_MAX_SECONDS = 3600.0


@dataclass(frozen=True)
class Move:
    handle: str = "next"
    detail: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Wait:
    due_at: datetime
    waiting_for: str = ""
    detail: dict = field(default_factory=dict)


@dataclass(frozen=True)
class End:
    state: str
    outcome: str
    reason: str = ""
    detail: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Park:
    due_at: datetime
    attempts: int | None = None


@dataclass
class NodeContext:
    version: Compiled
    node_id: str
    config: dict
    now: datetime
    webhook_results: dict = field(default_factory=dict)

    @property
    def source_ref(self) -> str:
        return f"{self.version.version_id}:{self.node_id}"


Handler = Callable[[list, NodeContext], dict[int, Any]]
_HANDLERS: dict[str, Handler] = {}


def handles(node_type: str):
    def register(fn: Handler) -> Handler:
        _HANDLERS[node_type] = fn
        return fn

    return register


def run(node_type: str, members: list[Live], ctx: NodeContext) -> dict[int, Any]:
    handler = _HANDLERS.get(node_type)
    if handler is None:
        return {e.id: _failed("node_type_unknown", {"type": node_type}) for e in members}
    return handler(members, ctx)


def _failed(reason: str, detail: dict | None = None) -> End:
    return End(EnrollmentState.FAILED, StepOutcome.FAILED, reason=reason, detail=detail or {})


def duration(value: dict) -> timedelta:
    return timedelta(seconds=int(value["value"]) * UNITS[value["unit"]])


def _hash_percent(*parts: object) -> int:
    digest = hashlib.blake2b(":".join(str(p) for p in parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % 100


# --- Flow --------------------------------------------------------------------------------------------


@handles("entry")
def _entry(members, ctx):
    return {e.id: Move() for e in members}


@handles("exit")
def _exit(members, ctx):
    return {e.id: End(EnrollmentState.COMPLETED, StepOutcome.EXITED) for e in members}


@handles("wait")
def _wait(members, ctx):
    config = ctx.config
    if config.get("mode") == "duration":
        due = ctx.now + duration(config["duration"])
        return {e.id: Wait(due) for e in members}
    zones = _zones([e.customer_id for e in members])
    hour, minute = (int(x) for x in config["local_time"].split(":"))
    weekdays = config.get("weekdays")
    return {
        e.id: Wait(next_local_time(ctx.now, zones.get(e.customer_id), hour, minute, weekdays))
        for e in members
    }


def _zones(customer_ids: list[int]) -> dict[int, str]:
    from crm.db import AnyOf
    from crm.models import Customer

    return dict(Customer.objects.filter(AnyOf("id", customer_ids)).values_list("pk", "time_zone"))


def next_local_time(now: datetime, zone_name: str | None, hour: int, minute: int, weekdays=None) -> datetime:
    """The first moment after `now` when the customer's clock shows hour:minute (on one of `weekdays`,
    0 = Monday). On a day the clocks skip that time (spring forward), it is the same instant an hour
    later local; on a day they show it twice, the first."""
    try:
        zone = zoneinfo.ZoneInfo(zone_name or settings.TIME_ZONE)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        zone = zoneinfo.ZoneInfo(settings.TIME_ZONE)
    local_now = now.astimezone(zone)
    for days in range(0, 8):
        day = (local_now + timedelta(days=days)).date()
        if weekdays and day.weekday() not in weekdays:
            continue
        # fold=0 picks the first of a repeated time; a skipped time resolves to the offset before the jump.
        candidate = datetime(day.year, day.month, day.day, hour, minute, tzinfo=zone, fold=0)
        if candidate.astimezone(zoneinfo.ZoneInfo("UTC")) > now:
            return candidate.astimezone(zoneinfo.ZoneInfo("UTC"))
    raise ValueError("no weekday chosen")  # pragma: no cover - the graph validation requires one


@handles("wait_for_event")
def _wait_for_event(members, ctx):
    due = ctx.now + duration(ctx.config["timeout"])
    return {e.id: Wait(due, waiting_for=ctx.config["event_type"]) for e in members}


@handles("condition")
def _condition(members, ctx):
    from crm.db import AnyOf
    from crm.segments.compiler import rule_queryset

    ids = [e.customer_id for e in members]
    # One query for the whole group: the rule, narrowed to this batch's customers (one array parameter).
    matched = set(
        rule_queryset(ctx.config["rule"], now=ctx.now).filter(AnyOf("id", ids)).values_list("pk", flat=True)
    )
    return {e.id: Move("yes" if e.customer_id in matched else "no") for e in members}


@handles("random_split")
def _random_split(members, ctx):
    branches = ctx.config["branches"]
    result = {}
    for e in members:
        bucket = _hash_percent(e.id, ctx.node_id)
        total = 0
        chosen = branches[-1]["id"]
        for branch in branches:
            total += int(branch["percent"])
            if bucket < total:
                chosen = branch["id"]
                break
        result[e.id] = Move(chosen)
    return result


# --- Side effects --------------------------------------------------------------------------------------

# Functions that add template data to a journey's messages: {enrollment id: {key: value}} for a batch of
# enrollment ids, one query each (the win-back adds its coupon code: journeys/services/winback.py).
_MESSAGE_DATA: list[Callable[[list[int]], dict[int, dict]]] = []


def message_data_register(fn: Callable[[list[int]], dict[int, dict]]) -> None:
    if fn not in _MESSAGE_DATA:
        _MESSAGE_DATA.append(fn)


def _message_data(enrollment_ids: list[int]) -> dict[int, dict]:
    found: dict[int, dict] = {}
    for fn in _MESSAGE_DATA:
        for enrollment_id, data in fn(enrollment_ids).items():
            found.setdefault(enrollment_id, {}).update(data)
    return found


@handles("send_message")
def _send_message(members, ctx):
    from campaigns.services.channels import channel_best
    from campaigns.services.outbox import MessageRequest, messages_enqueue
    from campaigns.services.sending import template_variants

    code = ctx.config["template"]
    variants = template_variants([code]).get(code)
    if not variants:
        return {e.id: _failed("template_missing", {"template": code}) for e in members}
    own = next(t for t in variants.values() if t.code == code)
    wanted = ctx.config.get("channel", "best")
    ids = [e.customer_id for e in members]
    if wanted == "best":
        candidates = [own.channel, *sorted(c for c in variants if c != own.channel)]
        best = channel_best(customer_ids=ids, candidates=candidates)
        chosen = {c: best.get(c) or own.channel for c in ids}
    elif wanted in variants:
        chosen = dict.fromkeys(ids, wanted)
    else:
        return {
            e.id: _failed("no_template_for_channel", {"template": code, "channel": wanted}) for e in members
        }
    priority = int(ctx.version.settings.get("priority") or 0)
    extra = _message_data([e.id for e in members])
    requests = [
        MessageRequest(
            customer_id=e.customer_id,
            channel=chosen[e.customer_id],
            template_id=variants[chosen[e.customer_id]].pk,
            source_kind="journey",
            source_ref=ctx.source_ref,
            occurrence=f"{e.id}:{e.next_visit}",
            purpose=variants[chosen[e.customer_id]].purpose,
            source_label=ctx.version.journey_name[:200],
            priority=priority,
            on_cap=ctx.config.get("on_cap", "defer"),
            data={**extra.get(e.id, {}), "journey_id": ctx.version.journey_id, "enrollment_id": e.id},
        )
        for e in members
    ]
    # One outbox insert for the whole group (COPY on PostgreSQL), idempotent on the message key.
    messages_enqueue(rows=requests, now=ctx.now)
    return {e.id: Move(detail={"channel": chosen[e.customer_id]}) for e in members}


def points_key(e: Live, node_id: str) -> str:
    return f"journey:{e.id}:{node_id}:{e.next_visit}"


@handles("award_points")
def _award_points(members, ctx):
    from loyalty.services.accrual import bonuses_award

    points = int(ctx.config["points"])
    bonuses_award(
        awards=[
            {
                "customer_id": e.customer_id,
                "rule": None,
                "key": points_key(e, ctx.node_id),
                "reason": ctx.config["reason"][:300],
                "reference": f"journey:{ctx.source_ref}",
                "extra_points": points,
            }
            for e in members
        ],
        now=ctx.now,
    )
    return {e.id: Move(detail={"points": points}) for e in members}


@handles("issue_coupon")
def _issue_coupon(members, ctx):
    from loyalty.models import CouponProgramme
    from loyalty.services.coupons import coupons_issue

    programme = CouponProgramme.objects.filter(pk=ctx.config["programme"], is_active=True).first()
    if programme is None:
        return {e.id: _failed("programme_missing", {"programme": ctx.config["programme"]}) for e in members}
    coupons = coupons_issue(programme=programme, customer_ids=[e.customer_id for e in members], now=ctx.now)
    return {e.id: Move(detail={"coupon_id": coupons[e.customer_id].pk}) for e in members}


def _tag(ctx):
    from crm.models import Tag

    return Tag.objects.filter(name=ctx.config["tag"]).first()


@handles("add_tag")
def _add_tag(members, ctx):
    from crm.services.tags import customers_tag_add

    tag = _tag(ctx)
    if tag is None:
        return {e.id: _failed("tag_missing", {"tag": ctx.config["tag"]}) for e in members}
    customers_tag_add(customer_ids=[e.customer_id for e in members], tag=tag, source="journey")
    return {e.id: Move() for e in members}


@handles("remove_tag")
def _remove_tag(members, ctx):
    from crm.services.tags import customers_tag_remove

    tag = _tag(ctx)
    if tag is None:
        return {e.id: _failed("tag_missing", {"tag": ctx.config["tag"]}) for e in members}
    customers_tag_remove(customer_ids=[e.customer_id for e in members], tag=tag)
    return {e.id: Move() for e in members}


@handles("update_attribute")
def _update_attribute(members, ctx):
    from crm.services.customers import customers_attribute_set
    from journeys.nodes import UPDATABLE_ATTRIBUTES

    attribute = ctx.config["attribute"]
    if attribute not in UPDATABLE_ATTRIBUTES:
        return {e.id: _failed("attribute_refused", {"attribute": attribute}) for e in members}
    # Through crm's audit history, so the customer's page shows who changed the attribute and when: the
    # reason names the journey and the node.
    changed = set(
        customers_attribute_set(
            customer_ids=[e.customer_id for e in members],
            attribute=attribute,
            value=ctx.config["value"],
            change_reason=f"journey: {ctx.version.journey_name} ({ctx.node_id})",
            now=ctx.now,
        )
    )
    return {e.id: Move(detail={"changed": e.customer_id in changed}) for e in members}


# --- Webhooks ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WebhookCall:
    visit: int
    ok: bool
    status: int | None
    error: str
    permanent: bool


def webhook_key(enrollment_id: int, node_id: str, visit: int) -> str:
    return f"journey:{enrollment_id}:{node_id}:{visit}"


def webhooks_call(*, claim: Claim, now: datetime) -> dict[int, WebhookCall]:
    """Call the webhooks of the claimed enrollments standing at a webhook node. Runs after the claim
    committed and before the batch's transaction: no lock is held while a remote server answers."""
    from journeys.models import Enrollment
    from journeys.services.engine import compiled
    from journeys.webhooks import webhook_post

    if not claim.webhooks_due:
        return {}
    rows = list(
        Enrollment.objects.filter(
            pk__in=claim.ids, claim_token=claim.token, state=EnrollmentState.ACTIVE
        ).values_list("id", "version_id", "node_id", "steps_taken", "customer_id", "journey_id")
    )
    versions = compiled({r[1] for r in rows})
    calls = []
    for enrollment_id, version_id, node_id, steps_taken, customer_id, journey_id in rows:
        node = versions[version_id].nodes.get(node_id) if version_id in versions else None
        if node is None or node.get("type") != "webhook":
            continue
        visit = steps_taken + 1
        payload = {
            "journey_id": journey_id,
            "version_id": version_id,
            "node_id": node_id,
            "enrollment_id": enrollment_id,
            "customer_id": customer_id,
            "visit": visit,
            "at": now.isoformat(),
        }
        calls.append(
            (enrollment_id, visit, node["config"]["url"], payload, webhook_key(enrollment_id, node_id, visit))
        )
    if not calls:
        return {}
    timestamp = int(now.timestamp())

    def call(item):
        enrollment_id, visit, url, payload, key = item
        result = webhook_post(url=url, payload=payload, idempotency_key=key, timestamp=timestamp)
        return enrollment_id, WebhookCall(visit, result.ok, result.status, result.error, result.permanent)

    with ThreadPoolExecutor(max_workers=min(8, len(calls))) as pool:
        return dict(pool.map(call, calls))


def webhook_retry_delay(attempts: int) -> timedelta:
    base = float(getattr(settings, "JOURNEYS_WEBHOOK_RETRY_BASE_SECONDS", WEBHOOK_RETRY_BASE_SECONDS))
    delay = min(WEBHOOK_RETRY_MAX_SECONDS, base * (2 ** max(0, attempts - 1)))
    return timedelta(seconds=delay * random.uniform(0.5, 1.0))


@handles("webhook")
def _webhook(members, ctx):
    max_attempts = int(getattr(settings, "JOURNEYS_WEBHOOK_MAX_ATTEMPTS", WEBHOOK_MAX_ATTEMPTS))
    result = {}
    for e in members:
        call = ctx.webhook_results.get(e.id)
        if call is None or call.visit != e.next_visit:
            # Arrived during this batch: park it, due now; the next claim calls it outside the lock.
            result[e.id] = Park(ctx.now)
        elif call.ok:
            result[e.id] = Move(detail={"status": call.status, "attempts": e.attempts + 1})
        elif call.permanent or e.attempts + 1 >= max_attempts:
            result[e.id] = _failed(
                "webhook_failed", {"status": call.status, "error": call.error, "attempts": e.attempts + 1}
            )
        else:
            attempts = e.attempts + 1
            result[e.id] = Park(ctx.now + webhook_retry_delay(attempts), attempts=attempts)
    return result
