"""The behaviour-event log: the one way to append to it and the one way to read it by cursor.

Appending: `events_append` for events built in Python (orders, refunds, stage and tier changes, points
expiring). The set-based writers that insert with SQL (the PostgreSQL order ingest, the metrics pipeline,
the tier moves on the accrual's hot path) write catalogued types only, and get `xact_id` from its column
default like every other insert.

Reading: `event_log_read(consumer=..., batch_size=...)` gives each consumer every event exactly once.
Ids are handed out when a row is inserted, not when it commits, so "id > the last id read" skips an event
whose transaction commits after a younger one's (a 200,000-row import in one transaction, a slow request):
the reader passes its id while it is invisible and never comes back. On PostgreSQL every event records
its writing transaction (`xact_id`, `pg_current_xact_id()`), and the reader returns only events of
transactions older than the oldest one still running (`pg_snapshot_xmin(pg_current_snapshot())`), in
(xact_id, id) order. No transaction below that horizon can write again, and transaction ids are handed
out in increasing order, so nothing can ever appear behind the cursor: the order is final, and a position
(xact_id, id) is exact. The price is latency: while a transaction that has written (anything) stays open,
events of younger transactions wait for it. A consumer whose own transaction appends events (the accrual
writes tier changes) is safe too: the horizon is also kept below the reader's own transaction, whose
events are read once it has committed.

Another technique considered, and why not: a commit-time sequence (a trigger that numbers rows at commit)
does not exist in PostgreSQL; serialising writers on a lock would cost the order import its throughput;
logical decoding needs a replication slot and superuser-level setup. The snapshot horizon needs a column
default and an index.

SQLite (the embedded default) has one writer at a time: an id is visible only after every smaller one
committed or rolled back, so ids alone are safe there (`xact_id` is 0).
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from crm.event_types import EventPropertiesInvalid, event_properties_check, event_type_get
from crm.models import Event, EventLogCursor
from crm.services.bulk_sql import staging_copy

# Above every real id: a position (x, MAX_ID) means "everything of transactions up to x has been read".
MAX_ID = 2**63 - 1


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event to append; `type` must be in the catalogue (crm.event_types)."""

    type: str
    customer_id: int | None
    occurred_at: datetime
    properties: Mapping[str, Any] = field(default_factory=dict)
    channel: str = ""
    # Unique where given: a writer that may run twice (points expiring, tier changes) names its events,
    # and `skip_existing=True` makes the second append a no-op for them.
    external_id: str | None = None


class EventRejected(ValueError):
    """An internal writer built an event the catalogue refuses: a programming error, raised before anything
    is written."""


def events_append(
    *, events: Iterable[NewEvent], now: datetime, skip_existing: bool = False, batch_size: int = 2000
) -> int:
    """Append `events` to the log in the caller's transaction; returns how many were given. With
    `skip_existing`, an event whose external id is already stored is left out silently (the writer's
    retry); otherwise a repeated external id raises IntegrityError."""
    checked = []
    for position, new in enumerate(events):
        known = event_type_get(new.type)
        if known is None:
            raise EventRejected(
                f"event {position}: type {new.type!r} is not in the catalogue (crm.event_types)"
            )
        try:
            event_properties_check(new.type, new.properties)
        except EventPropertiesInvalid as exc:
            raise EventRejected(f"event {position} ({new.type}): {exc}") from exc
        checked.append(new)
    if not checked:
        return 0
    if connection.vendor == "postgresql" and len(checked) >= _COPY_FROM:
        _events_copy(checked, now=now, skip_existing=skip_existing)
        return len(checked)
    rows = [
        Event(
            customer_id=new.customer_id,
            type=new.type,
            properties=dict(new.properties),
            occurred_at=new.occurred_at,
            channel=new.channel,
            external_id=new.external_id,
            received_at=now,
        )
        for new in checked
    ]
    Event.objects.bulk_create(rows, batch_size=batch_size, ignore_conflicts=skip_existing)
    return len(rows)


# From this many events on, COPY (three statements: staging table, COPY, INSERT) beats one multi-row INSERT.
_COPY_FROM = 200
_COPY_COLUMNS = (
    "n",
    "customer_id",
    "type",
    "properties",
    "occurred_at",
    "channel",
    "external_id",
    "received_at",
)
_COPY_TYPES = ("int4", "int8", "text", "text", "timestamptz", "text", "text", "timestamptz")


def _events_copy(events: list[NewEvent], *, now: datetime, skip_existing: bool) -> None:
    # Binary COPY into a staging table, then one INSERT ... SELECT in the given order (ids follow it, as
    # bulk_create's do): the send path writes a message_sent event for every message it sends, and
    # building a model instance per event and Django's INSERT of 2,000 x 7 placeholders were most of the
    # outbox's recording time (see BENCHMARKS.md, outbox dispatch). xact_id takes its column default.
    conflict = " ON CONFLICT DO NOTHING" if skip_existing else ""
    columns = ", ".join(_COPY_COLUMNS[1:])
    with transaction.atomic(savepoint=False), connection.cursor() as cursor:
        staging_copy(
            cursor,
            staging="crm_event_append",
            columns=_COPY_COLUMNS,
            types=_COPY_TYPES,
            rows=(
                (
                    position,
                    e.customer_id,
                    e.type,
                    json.dumps(e.properties),
                    e.occurred_at,
                    e.channel,
                    e.external_id,
                    now,
                )
                for position, e in enumerate(events)
            ),
        )
        cursor.execute(
            f"INSERT INTO crm_event ({columns}) SELECT customer_id, type, properties::jsonb, occurred_at, "
            f"channel, external_id, received_at FROM crm_event_append ORDER BY n{conflict}"
        )


@dataclass(frozen=True, slots=True)
class LoggedEvent:
    id: int
    type: str
    customer_id: int | None
    properties: dict
    occurred_at: datetime
    channel: str
    external_id: str | None
    received_at: datetime
    xact_id: int


_FIELDS = (
    "id",
    "type",
    "customer_id",
    "properties",
    "occurred_at",
    "channel",
    "external_id",
    "received_at",
    "xact_id",
)
_COLUMNS = ", ".join(_FIELDS)


def event_log_read(
    *,
    consumer: str,
    batch_size: int = 1000,
    types: Collection[str] | None = None,
    now: datetime | None = None,
) -> list[LoggedEvent]:
    """The next events for `consumer`, at most `batch_size`, in log order; the consumer's cursor moves past
    them in the caller's transaction, so they are read again only if that transaction rolls back. Two
    callers for one consumer take turns (the cursor row is locked until the first commits) and never get
    the same event. With `types`, only those types are returned (the cursor still moves past the others).

    Must run inside `transaction.atomic()`, the one that also records what the consumer did with the
    events."""
    if not connection.in_atomic_block:
        raise RuntimeError(
            "event_log_read must run inside transaction.atomic(), with the consumer's own writes"
        )
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    now = now or timezone.now()
    EventLogCursor.objects.get_or_create(consumer=consumer, defaults={"updated_at": now})
    cursor = EventLogCursor.objects.select_for_update().get(consumer=consumer)
    position = (cursor.last_xact_id, cursor.last_event_id)
    type_list = sorted(set(types)) if types is not None else None
    if type_list == []:
        return []
    events, horizon, own = _read(position=position, batch_size=batch_size, types=type_list)
    new_position = position
    if events:
        new_position = (events[-1].xact_id, events[-1].id)
    if horizon is not None and len(events) < batch_size:
        # Fewer than asked for: every event below the horizon has been seen (returned or filtered out), so
        # the cursor may jump to the horizon and not scan the filtered-out ones again; but never past the
        # start of this transaction's own events, which it may still add to.
        settled = horizon - 1 if own is None or horizon - 1 < own else own - 1
        new_position = max(new_position, (settled, MAX_ID))
    if new_position == position:
        return events
    cursor.last_xact_id, cursor.last_event_id = new_position
    cursor.events_read += len(events)
    cursor.updated_at = now
    cursor.save(update_fields=["last_xact_id", "last_event_id", "events_read", "updated_at"])
    return events


def _read(
    *, position: tuple[int, int], batch_size: int, types: list[str] | None
) -> tuple[list[LoggedEvent], int | None, int | None]:
    """(events after `position`, the horizon they were read below, the reader's own transaction id), the
    last two None where there are none (SQLite)."""
    if connection.vendor != "postgresql":
        last_xact_id, last_id = position
        query = Event.objects.filter(Q(xact_id__gt=last_xact_id) | Q(xact_id=last_xact_id, id__gt=last_id))
        if types is not None:
            query = query.filter(type__in=types)
        rows = query.order_by("xact_id", "id").values_list(*_FIELDS)[:batch_size]
        return [_logged(row) for row in rows], None, None
    type_sql, params = "", [*position]
    if types is not None:
        type_sql = f" AND type IN ({', '.join(['%s'] * len(types))})"
        params += types
    # The horizon and the rows come from one statement, hence one snapshot: every other transaction below
    # the horizon had ended when the rows were read. The reader's own transaction has an id (it locked the
    # cursor row) and is never in its own snapshot's xmin: once every other transaction older than it has
    # ended (xmin >= own), its own events are read too, in order; the horizon never goes above it, so the
    # cursor stays below the events this transaction may still append.
    with connection.cursor() as db:
        db.execute(
            f"""
            WITH s AS (
                SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint AS xmin,
                       pg_current_xact_id_if_assigned()::text::bigint AS own
            ), h AS (
                SELECT own, CASE WHEN own IS NULL THEN xmin WHEN xmin >= own THEN own + 1 ELSE xmin END
                            AS horizon
                FROM s
            )
            SELECT {_COLUMNS}, h.horizon, h.own
            FROM h LEFT JOIN LATERAL (
                SELECT {_COLUMNS} FROM crm_event
                WHERE (xact_id, id) > (%s, %s) AND xact_id < h.horizon{type_sql}
                ORDER BY xact_id, id
                LIMIT {int(batch_size)}
            ) e ON true
            """,
            params,
        )
        rows = db.fetchall()
    horizon, own = rows[0][-2], rows[0][-1]
    return [_logged(row[:-2]) for row in rows if row[0] is not None], horizon, own


def _logged(row) -> LoggedEvent:
    event_id, type_, customer_id, properties, occurred_at, channel, external_id, received_at, xact_id = row
    if isinstance(properties, str):  # a raw cursor returns jsonb as text (Django decodes in JSONField)
        properties = json.loads(properties)
    return LoggedEvent(
        id=event_id,
        type=type_,
        customer_id=customer_id,
        properties=properties or {},
        occurred_at=occurred_at,
        channel=channel,
        external_id=external_id,
        received_at=received_at,
        xact_id=xact_id,
    )


@transaction.atomic
def event_log_cursor_reset(*, consumer: str, from_event_id: int | None = None) -> None:
    """Put `consumer`'s cursor back so that its next read starts at event `from_event_id` (None: the start
    of the log) and goes on in log order, for a replay after a consumer's bug is fixed; consumers are
    idempotent, so a replay is harmless."""
    position = (0, 0)
    if from_event_id is not None:
        xact_id = Event.objects.filter(pk=from_event_id).values_list("xact_id", flat=True).first()
        if xact_id is None:
            raise ValueError(f"no event {from_event_id} in the log")
        position = (xact_id, from_event_id - 1)
    EventLogCursor.objects.update_or_create(
        consumer=consumer, defaults={"last_xact_id": position[0], "last_event_id": position[1]}
    )
