"""The engine: claim due enrollments, advance each through as many instant nodes as it can, record.

One batch, in the order that makes it exactly once:

1. claim (short transaction, committed): up to `batch_size` live enrollments whose `due_at` has come,
   `FOR UPDATE SKIP LOCKED` so concurrent workers take different rows, get a fresh `claim_token` and
   their `due_at` moved to the end of the lease. A worker killed after this leaves its rows to come due
   again when the lease ends; the next claim takes them with a new token.
2. call webhooks (no transaction, no lock): for the claimed rows standing at a webhook node.
3. advance (one transaction): lock the claimed rows that still carry our token (`FOR UPDATE`, by id),
   re-read them there, and move them node by node, grouped by node, so each node runs once per batch
   over all its enrollments (one `messages_enqueue`, one points award, one tag insert, one segment
   query); then write every step (one insert) and every enrollment (one UPDATE conditional on the token).
   Side effects write in this same transaction, so a batch that does not commit leaves nothing behind,
   and a step is unique on (enrollment, node, visit), so a batch replayed after its lease lapsed cannot
   record a step (or, through their keys, a message or points) twice.

A row the event-log consumer woke (journeys/services/events.py) carries the exit to take in
`wake_handle`; the consumer never moves an enrollment itself, so a timeout and an event are decided
under the same row lock.
"""

from __future__ import annotations

import logging
import time
import uuid
import zoneinfo
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from operator import attrgetter

from django.conf import settings
from django.db import close_old_connections, connection, transaction

from crm.db import server_binding_cursor
from journeys.models import (
    EnrollmentState,
    EnrollmentStep,
    Journey,
    JourneyStatus,
    JourneyVersion,
    StepOutcome,
)
from journeys.nodes import graph_next, graph_nodes, settings_normalised
from journeys.services import nodes_run

logger = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 10_000
DEFAULT_LEASE_SECONDS = 120.0
DEFAULT_DISPATCH_SECONDS = 20.0
# A graph without a wait-free cycle still has a longest path; this bounds one batch's work per row, and
# an enrollment still moving after it simply stays due and goes on in the next batch.
MAX_HOPS = 200


def _setting(name: str, default):
    return getattr(settings, name, default)


def lease_duration() -> timedelta:
    return timedelta(seconds=float(_setting("JOURNEYS_LEASE_SECONDS", DEFAULT_LEASE_SECONDS)))


@dataclass
class Live:
    """One claimed enrollment while its batch advances it."""

    id: int
    customer_id: int
    journey_id: int
    version_id: int
    node_id: str
    state: str
    arm: str
    occurrence: str
    steps_taken: int
    attempts: int
    wake_handle: str
    node_entered_at: datetime | None
    entered_at: datetime
    due_at: datetime | None = None
    finished_at: datetime | None = None
    waiting_for: str = ""
    reason: str = ""
    reason_params: dict = field(default_factory=dict)

    @property
    def next_visit(self) -> int:
        return self.steps_taken + 1


@dataclass(frozen=True)
class Compiled:
    """A published (so frozen) version, ready to run: safe to keep for the life of the process."""

    version_id: int
    journey_id: int
    journey_name: str
    nodes: dict[str, dict]
    next: dict[tuple[str, str], str]
    settings: dict
    published_at: datetime | None = None


_COMPILED: dict[int, Compiled] = {}


def compiled_cache_clear() -> None:
    _COMPILED.clear()


def compiled(version_ids: set[int]) -> dict[int, Compiled]:
    missing = [v for v in version_ids if v not in _COMPILED]
    if missing:
        for version in JourneyVersion.objects.filter(pk__in=missing).select_related("journey"):
            _COMPILED[version.pk] = Compiled(
                version_id=version.pk,
                journey_id=version.journey_id,
                journey_name=version.journey.name,
                nodes=graph_nodes(version.graph),
                next=graph_next(version.graph),
                settings=settings_normalised(version.settings),
                published_at=version.published_at,
            )
    return {v: _COMPILED[v] for v in version_ids if v in _COMPILED}


@dataclass
class BatchStats:
    claimed: int = 0
    advanced: int = 0  # enrollments this batch moved or finished
    steps: int = 0  # steps recorded
    lost: int = 0  # rows another worker took over before this one could lock them

    def add(self, other: BatchStats) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass
class Claim:
    token: uuid.UUID
    ids: list[int]
    # False when no claimed row stands at a webhook node (known from the claim's own RETURNING): the batch
    # then skips reading its rows again to look for webhooks to call.
    webhooks_due: bool = True


def _inactive_journeys() -> list[int]:
    return list(Journey.objects.exclude(status=JourneyStatus.PUBLISHED).values_list("pk", flat=True))


def enrollments_claim(*, now: datetime, batch_size: int | None = None) -> Claim:
    """Claim up to `batch_size` due enrollments of running journeys and commit (see the module docstring).
    A paused journey's enrollments stay due and are claimed once it is resumed."""
    size = batch_size or int(_setting("JOURNEYS_BATCH_SIZE", DEFAULT_BATCH_SIZE))
    token = uuid.uuid4()
    until = now + lease_duration()
    inactive = _inactive_journeys()
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                # The states as literals: the partial index's predicate must be provable from them.
                cursor.execute(
                    "UPDATE journeys_enrollment e SET claim_token = %s, claimed_until = %s, due_at = %s "
                    "FROM (SELECT id FROM journeys_enrollment "
                    "WHERE state IN ('active', 'waiting') AND due_at IS NOT NULL AND due_at <= %s "
                    "AND NOT (journey_id = ANY(%s)) "
                    "ORDER BY due_at LIMIT %s FOR UPDATE SKIP LOCKED) c "
                    "WHERE e.id = c.id RETURNING e.id, e.version_id, e.node_id, e.state",
                    [token, until, until, now, inactive, size],
                )
                rows = cursor.fetchall()
        else:
            from journeys.models import LIVE_STATES, Enrollment

            ids = sorted(
                Enrollment.objects.filter(state__in=LIVE_STATES, due_at__lte=now)
                .exclude(journey_id__in=inactive)
                .order_by("due_at")
                .values_list("pk", flat=True)[:size]
            )
            Enrollment.objects.filter(pk__in=ids).update(claim_token=token, claimed_until=until, due_at=until)
            return Claim(token=token, ids=ids)
    versions = compiled({row[1] for row in rows})
    webhooks_due = any(
        state == EnrollmentState.ACTIVE and (versions[v].nodes.get(node_id) or {}).get("type") == "webhook"
        for _id, v, node_id, state in rows
        if v in versions
    )
    return Claim(token=token, ids=sorted(row[0] for row in rows), webhooks_due=webhooks_due)


_LIVE_COLUMNS = (
    "id, customer_id, journey_id, version_id, node_id, state, arm, occurrence, steps_taken, attempts, "
    "wake_handle, node_entered_at, entered_at, waiting_for"
)


def _lock(claim: Claim) -> list[Live]:
    """The claimed rows still ours, locked by id (one order for every locker), read under the lock."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                f"SELECT {_LIVE_COLUMNS} FROM journeys_enrollment "
                "WHERE id = ANY(%s) AND claim_token = %s AND state IN ('active', 'waiting') "
                "ORDER BY id FOR UPDATE",
                [claim.ids, claim.token],
            )
        else:
            cursor.execute(
                f"SELECT {_LIVE_COLUMNS} FROM journeys_enrollment "
                f"WHERE id IN ({', '.join(['%s'] * len(claim.ids))}) AND claim_token = %s "
                "AND state IN ('active', 'waiting') ORDER BY id",
                [*claim.ids, claim.token.hex],
            )
        rows = cursor.fetchall()
    lives = []
    for r in rows:
        lives.append(
            Live(
                id=r[0],
                customer_id=r[1],
                journey_id=r[2],
                version_id=r[3],
                node_id=r[4],
                state=r[5],
                arm=r[6],
                occurrence=r[7],
                steps_taken=r[8],
                attempts=r[9],
                wake_handle=r[10],
                node_entered_at=_aware(r[11]),
                entered_at=_aware(r[12]),
                waiting_for=r[13],
            )
        )
    return lives


def _aware(value):
    if isinstance(value, str):  # SQLite through a raw cursor
        value = datetime.fromisoformat(value)
    if value is not None and value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value


@dataclass
class StepRow:
    enrollment_id: int
    version_id: int
    node_id: str
    visit: int
    entered_at: datetime
    left_at: datetime | None
    outcome: str
    handle: str = ""
    detail: dict = field(default_factory=dict)


@dataclass
class Advance:
    """What one batch writes: new steps, waiting steps that ended, and the enrollments' new state."""

    now: datetime
    steps: list[StepRow] = field(default_factory=list)
    closes: list[tuple[int, str, int, str, str]] = field(
        default_factory=list
    )  # id, node, visit, outcome, handle
    touched: dict[int, Live] = field(default_factory=dict)


def batch_process(*, claim: Claim, now: datetime) -> BatchStats:
    stats = BatchStats(claimed=len(claim.ids))
    if not claim.ids:
        return stats
    webhook_results = nodes_run.webhooks_call(claim=claim, now=now)
    with transaction.atomic():
        _commit_without_waiting_for_the_disk()
        lives = _lock(claim)
        stats.lost = len(claim.ids) - len(lives)
        if not lives:
            return stats
        advance = Advance(now=now)
        _advance(lives, advance, webhook_results)
        _write(advance, claim)
        stats.advanced = len(advance.touched)
        stats.steps = len(advance.steps)
    return stats


def _commit_without_waiting_for_the_disk() -> None:
    """The batch's commit returns before its WAL reaches the disk (PostgreSQL only): the fsync wait was the
    largest single cost of a batch (see BENCHMARKS.md, journeys engine).

    Why it is safe: should the database server crash before the flush, the batch is lost whole (steps,
    messages, points, enrollment moves), never in part, and the enrollments still carry the claim that
    was committed durably before; they come due when its lease ends and the batch is redone with the same
    keys. Nothing outside the database can have acted on the lost rows: the outbox sends a message only
    after its own claim commits, durably, and a WAL flush covers every record before it, this batch's
    included. A webhook called before the crash is called again with the same Idempotency-Key."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL synchronous_commit = off")


def _advance(lives: list[Live], advance: Advance, webhook_results: dict) -> None:
    now = advance.now
    versions = compiled({e.version_id for e in lives})
    frontier: list[Live] = []
    for e in lives:
        advance.touched[e.id] = e
        version = versions.get(e.version_id)
        node = version.nodes.get(e.node_id) if version else None
        if node is None:
            _end(e, EnrollmentState.FAILED, now, reason="node_missing", params={"node": e.node_id})
            continue
        ends_at = version.settings.get("ends_at")
        if ends_at and datetime.fromisoformat(ends_at) <= now:
            _close_open(e, advance, StepOutcome.EXITED, "")
            _end(e, EnrollmentState.EXITED, now, reason="journey_ended")
            continue
        if e.state == EnrollmentState.WAITING:
            handle = e.wake_handle or ("timeout" if node["type"] == "wait_for_event" else "next")
            _close_open(e, advance, StepOutcome.PASSED, handle)
            e.state = EnrollmentState.ACTIVE
            e.waiting_for = ""
            e.wake_handle = ""
            if not _move(e, version, handle, now):
                _end(e, EnrollmentState.COMPLETED, now)
                continue
        frontier.append(e)

    hops = 0
    while frontier and hops < MAX_HOPS:
        hops += 1
        groups: dict[tuple[int, str], list[Live]] = defaultdict(list)
        for e in frontier:
            groups[(e.version_id, e.node_id)].append(e)
        frontier = []
        for (version_id, node_id), members in groups.items():
            version = versions[version_id]
            node = version.nodes[node_id]
            ctx = nodes_run.NodeContext(
                version=version,
                node_id=node_id,
                config=node.get("config") or {},
                now=now,
                webhook_results=webhook_results,
            )
            outcomes = nodes_run.run(node["type"], members, ctx)
            for e in members:
                result = outcomes[e.id]
                if isinstance(result, nodes_run.Park):
                    # Stays at this node, due again (a webhook to call outside the lock, a retry later).
                    e.due_at = result.due_at
                    e.attempts = result.attempts if result.attempts is not None else e.attempts
                    e.node_entered_at = e.node_entered_at or now
                    continue
                visit = e.next_visit
                e.steps_taken = visit
                if isinstance(result, nodes_run.Move):
                    advance.steps.append(
                        StepRow(
                            e.id,
                            version_id,
                            node_id,
                            visit,
                            now,
                            now,
                            StepOutcome.PASSED,
                            result.handle,
                            result.detail,
                        )
                    )
                    e.attempts = 0
                    if _move(e, version, result.handle, now):
                        frontier.append(e)
                    else:
                        _end(e, EnrollmentState.COMPLETED, now)
                elif isinstance(result, nodes_run.Wait):
                    advance.steps.append(
                        StepRow(
                            e.id,
                            version_id,
                            node_id,
                            visit,
                            now,
                            None,
                            StepOutcome.WAITING,
                            "",
                            result.detail,
                        )
                    )
                    e.state = EnrollmentState.WAITING
                    e.due_at = result.due_at
                    e.waiting_for = result.waiting_for
                    e.node_entered_at = now
                else:  # End
                    advance.steps.append(
                        StepRow(e.id, version_id, node_id, visit, now, now, result.outcome, "", result.detail)
                    )
                    _end(e, result.state, now, reason=result.reason, params=result.detail)
    for e in frontier:
        e.due_at = now  # still moving after MAX_HOPS: the next batch goes on


def _move(e: Live, version: Compiled, handle: str, now: datetime) -> bool:
    target = version.next.get((e.node_id, handle))
    if target is None:
        return False
    e.node_id = target
    e.node_entered_at = now
    e.due_at = now
    return True


def _close_open(e: Live, advance: Advance, outcome: str, handle: str) -> None:
    if e.state == EnrollmentState.WAITING and e.steps_taken:
        advance.closes.append((e.id, e.node_id, e.steps_taken, outcome, handle))


def _end(e: Live, state: str, now: datetime, *, reason: str = "", params: dict | None = None) -> None:
    e.state = state
    e.finished_at = now
    e.due_at = None
    e.waiting_for = ""
    e.wake_handle = ""
    e.reason = reason
    e.reason_params = dict(params or {}) if reason else {}


def _write(advance: Advance, claim: Claim) -> None:
    now = advance.now
    if advance.closes:
        _steps_close(advance.closes, now)
    if advance.steps:
        # A plain insert, not ON CONFLICT: a step recorded twice would mean two workers advanced one
        # enrollment, and the unique key then rolls the whole batch back, side effects included.
        if connection.vendor == "postgresql":
            _steps_insert(advance.steps)
        else:
            EnrollmentStep.objects.bulk_create(
                [
                    EnrollmentStep(
                        enrollment_id=s.enrollment_id,
                        version_id=s.version_id,
                        node_id=s.node_id,
                        visit=s.visit,
                        entered_at=s.entered_at,
                        left_at=s.left_at,
                        outcome=s.outcome,
                        handle=s.handle,
                        detail=s.detail,
                    )
                    for s in advance.steps
                ],
                batch_size=2000,
            )
    _enrollments_update(list(advance.touched.values()), claim)


def _shaped(rows, own: tuple[str, ...], shared: tuple[str, ...], json_field: str):
    """Split `rows` into their own columns (one array each, one element a row) plus an index into the
    distinct tuples of their shared columns (one array each, one element a distinct tuple); `json_field`
    is the last shared column, a dict sent as JSON text.

    A batch's rows differ in a few integers (the enrollment, its step number) and share the rest: every
    step of a node in a batch has the same node, times, outcome and detail, and every enrollment finished
    at an exit looks like the next one. Sending the distinct tuples once and the integers in binary is
    what psycopg dumps fastest; a dozen text and timestamp arrays of a whole batch took longer to dump
    than PostgreSQL took to write them (BENCHMARKS.md, journeys engine)."""
    own_of, shared_of, json_of = attrgetter(*own), attrgetter(*shared), attrgetter(json_field)
    shapes: dict[tuple, int] = {}
    own_rows, shape_of_row = [], []
    for row in rows:
        own_rows.append(own_of(row))
        detail = json_of(row)
        key = (*shared_of(row), _detail_json(detail) if detail else "{}")
        shape = shapes.get(key)
        if shape is None:
            shape = shapes[key] = len(shapes) + 1
        shape_of_row.append(shape)
    own_cols = [list(col) for col in zip(*own_rows, strict=True)] if own_rows else [[] for _ in own]
    shared_cols = (
        [list(col) for col in zip(*shapes, strict=True)] if shapes else [[] for _ in range(len(shared) + 1)]
    )
    return [*own_cols, shape_of_row], shared_cols


def _detail_json(detail: dict) -> str:
    import json

    return json.dumps(detail, default=str, sort_keys=True) if detail else "{}"


def _steps_insert(steps: list[StepRow]) -> None:
    """One INSERT ... SELECT for the batch's steps: their (enrollment, visit) pairs joined to the few
    distinct (version, node, times, outcome, exit, detail) they share."""
    (ids, visits, shape), shared = _shaped(
        steps,
        own=("enrollment_id", "visit"),
        shared=("version_id", "node_id", "entered_at", "left_at", "outcome", "handle"),
        json_field="detail",
    )
    with server_binding_cursor() as cursor:
        cursor.execute(
            "INSERT INTO journeys_enrollmentstep "
            "(enrollment_id, version_id, node_id, visit, entered_at, left_at, outcome, handle, detail) "
            "SELECT u.enrollment_id, s.version_id, s.node_id, u.visit, s.entered_at, s.left_at, s.outcome, "
            "s.handle, s.detail::jsonb "
            "FROM unnest(%b::bigint[], %b::int[], %b::int[]) AS u(enrollment_id, visit, shape) "
            "JOIN unnest(%s::bigint[], %s::text[], %s::timestamptz[], %s::timestamptz[], %s::text[], "
            "%s::text[], %s::text[]) WITH ORDINALITY "
            "AS s(version_id, node_id, entered_at, left_at, outcome, handle, detail, shape) "
            "ON s.shape = u.shape",
            [ids, visits, shape, *shared],
        )


def _steps_close(closes, now) -> None:
    if connection.vendor == "postgresql":
        ids, nodes, visits, outcomes, handles = (list(col) for col in zip(*closes, strict=True))
        # Bound on the server: the arrays travel as parameters, not as quoted literals built in Python.
        with server_binding_cursor() as cursor:
            cursor.execute(
                "UPDATE journeys_enrollmentstep s SET left_at = %s, outcome = u.outcome, handle = u.handle "
                "FROM unnest(%s::bigint[], %s::text[], %s::int[], %s::text[], %s::text[]) "
                "AS u(id, node, visit, outcome, handle) "
                "WHERE s.enrollment_id = u.id AND s.node_id = u.node AND s.visit = u.visit",
                [now, ids, nodes, visits, outcomes, handles],
            )
        return
    for enrollment_id, node_id, visit, outcome, handle in closes:
        EnrollmentStep.objects.filter(enrollment_id=enrollment_id, node_id=node_id, visit=visit).update(
            left_at=now, outcome=outcome, handle=handle
        )


def _enrollments_update(lives: list[Live], claim: Claim) -> None:
    from journeys.models import Enrollment

    if connection.vendor != "postgresql":
        for e in lives:
            Enrollment.objects.filter(pk=e.id, claim_token=claim.token).update(
                node_id=e.node_id,
                state=e.state,
                due_at=e.due_at,
                finished_at=e.finished_at,
                steps_taken=e.steps_taken,
                attempts=e.attempts,
                waiting_for=e.waiting_for,
                wake_handle=e.wake_handle,
                reason=e.reason,
                reason_params=e.reason_params,
                node_entered_at=e.node_entered_at,
                claim_token=None,
                claimed_until=None,
            )
        return
    (ids, steps_taken, attempts, shape), shared = _shaped(
        lives,
        own=("id", "steps_taken", "attempts"),
        shared=(
            "node_id",
            "state",
            "due_at",
            "finished_at",
            "waiting_for",
            "wake_handle",
            "reason",
            "node_entered_at",
        ),
        json_field="reason_params",
    )
    # No `claim_token = ours` here: `_lock` read the rows under our token FOR UPDATE and holds them until
    # this transaction ends, so no one can have changed it. The condition was also a trap: the planner
    # estimated it at one row, and a plan that scanned the batch's unnest once per enrollment took minutes.
    with server_binding_cursor() as cursor:
        cursor.execute(
            "UPDATE journeys_enrollment e SET node_id = s.node_id, state = s.state, due_at = s.due_at, "
            "finished_at = s.finished_at, steps_taken = u.steps_taken, attempts = u.attempts, "
            "waiting_for = s.waiting_for, wake_handle = s.wake_handle, reason = s.reason, "
            "reason_params = s.reason_params::jsonb, node_entered_at = s.node_entered_at, "
            "claim_token = NULL, claimed_until = NULL "
            "FROM unnest(%b::bigint[], %b::int[], %b::int[], %b::int[]) AS u(id, steps_taken, attempts, shape) "
            "JOIN unnest(%s::text[], %s::text[], %s::timestamptz[], %s::timestamptz[], %s::text[], "
            "%s::text[], %s::text[], %s::timestamptz[], %s::text[]) WITH ORDINALITY "
            "AS s(node_id, state, due_at, finished_at, waiting_for, wake_handle, reason, node_entered_at, "
            "reason_params, shape) ON s.shape = u.shape "
            "WHERE e.id = u.id",
            [ids, steps_taken, attempts, shape, *shared],
        )


def batch_release(*, claim: Claim, now: datetime) -> None:
    """Give a batch back at once (its processing raised), rather than when its lease ends."""
    from journeys.models import Enrollment

    Enrollment.objects.filter(pk__in=claim.ids, claim_token=claim.token).update(
        claim_token=None, claimed_until=None, due_at=now + timedelta(seconds=5)
    )


@dataclass
class DispatchStats:
    worker: str
    batches: int = 0
    events: int = 0
    seconds: float = 0.0
    totals: BatchStats = field(default_factory=BatchStats)


def dispatch_run(
    *,
    worker: str,
    now_fn: Callable[[], datetime] | None = None,
    limit_seconds: float | None = None,
    batch_size: int | None = None,
    max_batches: int | None = None,
    events: bool = True,
) -> DispatchStats:
    """Read the event log (wait-for-event wakes, goal exits, event entries), then claim and advance
    batches until nothing is due, the time budget is spent or `max_batches` were done."""
    from django.utils import timezone

    from journeys.services.events import journey_events_process

    now_fn = now_fn or timezone.now
    budget = (
        float(_setting("JOURNEYS_DISPATCH_SECONDS", DEFAULT_DISPATCH_SECONDS))
        if limit_seconds is None
        else limit_seconds
    )
    stats = DispatchStats(worker=worker)
    started = time.monotonic()
    while time.monotonic() - started < budget and (max_batches is None or stats.batches < max_batches):
        now = now_fn()
        read = journey_events_process(now=now) if events else 0
        stats.events += read
        claim = enrollments_claim(now=now, batch_size=batch_size)
        if not claim.ids:
            if not read:
                break
            continue
        try:
            batch = batch_process(claim=claim, now=now)
        except Exception:
            batch_release(claim=claim, now=now)
            raise
        stats.batches += 1
        stats.totals.add(batch)
        if not connection.in_atomic_block:
            close_old_connections()
    stats.seconds = time.monotonic() - started
    if stats.batches:
        logger.info(
            "journeys dispatch %s: %s batches, %s steps in %.1fs (%s lost)",
            worker,
            stats.batches,
            stats.totals.steps,
            stats.seconds,
            stats.totals.lost,
        )
    return stats


def local_zone(name: str) -> zoneinfo.ZoneInfo:
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return zoneinfo.ZoneInfo(settings.TIME_ZONE)
