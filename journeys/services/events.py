"""The journeys' reader of the crm event log (one consumer, "journeys", through crm's cursor reader):
wakes enrollments waiting for an event, ends those whose customer reached the journey's goal, and
enters customers into journeys whose entry is an event.

Everything happens in the transaction that moves the cursor, so an event is acted on exactly when the
cursor passes it. The consumer never advances an enrollment itself: a woken one gets `wake_handle =
"event"` and is due now, and the dispatcher moves it under the same row lock as a timeout would, so an
event arriving at the moment the wait times out takes exactly one of the two exits.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from django.db import connection, transaction

from crm.services.event_log import LoggedEvent, event_log_read
from journeys.models import (
    LIVE_STATES,
    Enrollment,
    EnrollmentState,
    EnrollmentStep,
    JourneyStatus,
    JourneyVersion,
    StepOutcome,
    VersionStatus,
)
from journeys.services.engine import Compiled, compiled

CONSUMER = "journeys"
DEFAULT_BATCH = 5000

# Entry triggers read from the log, and the event type each one reads.
_TRIGGER_EVENT = {
    "event": None,  # its own event_type
    "stage_changed": "lifecycle_stage_changed",
    "tier_changed": "tier_changed",
    "points_expiring": "points_expiring",
}


@dataclass
class Interest:
    """What the running journeys want from the log, by event type."""

    waits: dict[str, list[tuple[Compiled, str, dict]]] = field(default_factory=lambda: defaultdict(list))
    goals: dict[str, list[Compiled]] = field(default_factory=lambda: defaultdict(list))
    entries: dict[str, list[tuple[Compiled, dict]]] = field(default_factory=lambda: defaultdict(list))

    @property
    def types(self) -> set[str]:
        return set(self.waits) | set(self.goals) | set(self.entries)


def _interest() -> Interest:
    # Published versions take entries; retired ones still have customers in flight waiting or heading
    # for the goal. Archived journeys have no one left.
    version_ids = set(
        JourneyVersion.objects.filter(status__in=[VersionStatus.PUBLISHED, VersionStatus.RETIRED])
        .exclude(journey__status=JourneyStatus.ARCHIVED)
        .values_list("pk", flat=True)
    )
    published = dict(
        JourneyVersion.objects.filter(
            pk__in=version_ids, status=VersionStatus.PUBLISHED, journey__status=JourneyStatus.PUBLISHED
        ).values_list("pk", "journey_id")
    )
    interest = Interest()
    for version in compiled(version_ids).values():
        for node_id, node in version.nodes.items():
            config = node.get("config") or {}
            if node.get("type") == "wait_for_event":
                interest.waits[config["event_type"]].append((version, node_id, config))
            elif node.get("type") == "entry" and version.version_id in published:
                trigger = config.get("trigger") or {}
                kind = trigger.get("kind")
                if kind in _TRIGGER_EVENT:
                    interest.entries[_TRIGGER_EVENT[kind] or trigger["event_type"]].append((version, trigger))
        goal = version.settings.get("goal")
        if goal and goal.get("event_type"):
            interest.goals[goal["event_type"]].append(version)
    return interest


def journey_events_process(*, now: datetime, batch_size: int = DEFAULT_BATCH) -> int:
    """One batch of the log; returns how many events it read (0: the consumer is up to date)."""
    with transaction.atomic():
        interest = _interest()
        if not interest.types:
            return 0
        events = [
            e
            for e in event_log_read(consumer=CONSUMER, batch_size=batch_size, types=interest.types, now=now)
            if e.customer_id is not None
        ]
        if not events:
            return 0
        by_type: dict[str, list[LoggedEvent]] = defaultdict(list)
        for event in events:
            by_type[event.type].append(event)
        for event_type, typed in by_type.items():
            if event_type in interest.goals:
                _goals(interest.goals[event_type], typed, now)
            if event_type in interest.waits:
                _wakes(event_type, interest.waits[event_type], typed, now)
            if event_type in interest.entries:
                _entries(interest.entries[event_type], typed, now)
        return len(events)


def _goals(versions: list[Compiled], events: list[LoggedEvent], now: datetime) -> None:
    for version in versions:
        filters = (version.settings.get("goal") or {}).get("filters") or []
        # The earliest matching event per customer: enrollments that entered before it reach the goal.
        first: dict[int, LoggedEvent] = {}
        for event in events:
            if filters_match(filters, event.properties) and event.customer_id not in first:
                first[event.customer_id] = event
        if not first:
            continue
        ended = []
        for pk, customer_id, entered_at in (
            Enrollment.objects.filter(
                version_id=version.version_id, customer_id__in=list(first), state__in=LIVE_STATES
            )
            .order_by("pk")
            .values_list("pk", "customer_id", "entered_at")
        ):
            if entered_at <= first[customer_id].occurred_at:
                ended.append((pk, first[customer_id].id))
        if not ended:
            continue
        ids = [pk for pk, _event in ended]
        # The open (waiting) step, if any, ends with the goal.
        EnrollmentStep.objects.filter(enrollment_id__in=ids, left_at__isnull=True).update(
            left_at=now, outcome=StepOutcome.GOAL
        )
        _goal_reached(ended, now)


def _goal_reached(ended: list[tuple[int, int]], now: datetime) -> None:
    if connection.vendor == "postgresql":
        ids, event_ids = (list(c) for c in zip(*ended, strict=True))
        with connection.cursor() as cursor:
            cursor.execute(
                "UPDATE journeys_enrollment e SET state = 'goal', finished_at = %s, due_at = NULL, "
                "waiting_for = '', wake_handle = '', reason = 'goal', "
                "reason_params = jsonb_build_object('event_id', u.event_id), claim_token = NULL, "
                "claimed_until = NULL FROM unnest(%s::bigint[], %s::bigint[]) AS u(id, event_id) "
                "WHERE e.id = u.id AND e.state IN ('active', 'waiting')",
                [now, ids, event_ids],
            )
        return
    for pk, event_id in ended:  # SQLite (make run's demo scale)
        Enrollment.objects.filter(pk=pk, state__in=LIVE_STATES).update(
            state=EnrollmentState.GOAL,
            finished_at=now,
            due_at=None,
            waiting_for="",
            wake_handle="",
            reason="goal",
            reason_params={"event_id": event_id},
            claim_token=None,
            claimed_until=None,
        )


def _wakes(event_type: str, nodes: list[tuple[Compiled, str, dict]], events: list[LoggedEvent], now) -> None:
    configs = {(version.version_id, node_id): config for version, node_id, config in nodes}
    by_customer: dict[int, list[LoggedEvent]] = defaultdict(list)
    for event in events:
        by_customer[event.customer_id].append(event)
    woken = []
    for pk, version_id, node_id, customer_id, since in Enrollment.objects.filter(
        state=EnrollmentState.WAITING, waiting_for=event_type, customer_id__in=list(by_customer)
    ).values_list("pk", "version_id", "node_id", "customer_id", "node_entered_at"):
        config = configs.get((version_id, node_id))
        if config is None:
            continue
        filters = config.get("filters") or []
        if any(
            (since is None or e.occurred_at >= since) and filters_match(filters, e.properties)
            for e in by_customer[customer_id]
        ):
            woken.append(pk)
    if woken:
        # Due now, unless a dispatcher holds it (its lease's due time stands; it re-reads the row under
        # its lock and takes the event exit).
        Enrollment.objects.filter(
            pk__in=sorted(woken), state=EnrollmentState.WAITING, waiting_for=event_type
        ).filter(claim_token__isnull=True).update(wake_handle="event", due_at=now)
        Enrollment.objects.filter(
            pk__in=sorted(woken), state=EnrollmentState.WAITING, waiting_for=event_type
        ).filter(claim_token__isnull=False).update(wake_handle="event")


def _entries(entries: list[tuple[Compiled, dict]], events: list[LoggedEvent], now: datetime) -> None:
    from journeys.services.enrollments import enrollments_enter_pairs

    for version, trigger in entries:
        pairs: dict[int, str] = {}
        for event in events:
            # Only what happened since the version was published: a journey published today does not
            # enter everyone who added to a cart last year (the cursor may be far behind).
            if version.published_at is None or event.received_at < version.published_at:
                continue
            if trigger.get("kind") == "stage_changed" and event.properties.get("to") != trigger.get("to"):
                continue
            if not filters_match(trigger.get("filters") or [], event.properties):
                continue
            # One entry per customer per batch (the first event): two events a moment apart are one visit.
            pairs.setdefault(event.customer_id, str(event.id))
        if pairs:
            enrollments_enter_pairs(version_id=version.version_id, pairs=pairs, now=now)


def _number(value: Any) -> Decimal | None:
    if isinstance(value, bool):
        return None
    try:
        return Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None


def filters_match(filters: list[dict], properties: dict) -> bool:
    """Whether an event's properties pass every filter (journeys/nodes.py FILTER_OPS)."""
    for f in filters:
        op, name, wanted = f.get("op", "eq"), f["property"], f.get("value")
        present = name in properties and properties[name] is not None
        value = properties.get(name)
        if op == "exists":
            ok = present
        elif op == "eq":
            ok = present and str(value) == str(wanted)
        elif op == "neq":
            ok = not present or str(value) != str(wanted)
        elif op == "in":
            ok = present and str(value) in {str(w) for w in wanted}
        elif op == "not_in":
            ok = not present or str(value) not in {str(w) for w in wanted}
        elif op == "contains":
            ok = present and str(wanted) in str(value)
        else:
            left, right = _number(value), _number(wanted)
            ok = (
                left is not None
                and right is not None
                and {"gt": left > right, "gte": left >= right, "lt": left < right, "lte": left <= right}[op]
            )
        if not ok:
            return False
    return True
