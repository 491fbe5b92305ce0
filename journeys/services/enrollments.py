"""Customers entering a journey: set-based, idempotent per occurrence, with the re-entry rules and the
holdout applied in the same statement.

The holdout is decided by a hash of the journey and the customer, so a customer is in the holdout of a
journey every time they enter it, whichever process computes it; holdout enrollments are recorded (the
conversion comparison needs them) and exit at once, so they are never sent anything.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import connection, transaction

from journeys.models import (
    LIVE_STATES,
    Arm,
    Enrollment,
    EnrollmentState,
    EnrollmentStep,
    JourneyStatus,
    JourneyVersion,
    StepOutcome,
    VersionStatus,
)
from journeys.nodes import graph_entry, settings_normalised

ENTER_CHUNK = 20_000


class EntryRefused(ValueError):
    """The version does not take entries (a draft, retired, or its journey paused or archived)."""


def holdout_bucket(*, journey_id: int, customer_id: int) -> int:
    """0..9999, stable for (journey, customer): the customer is in the holdout when it is below
    holdout_percent × 100."""
    digest = hashlib.blake2b(f"{journey_id}:{customer_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % 10_000


def in_holdout(*, journey_id: int, customer_id: int, percent: int) -> bool:
    return holdout_bucket(journey_id=journey_id, customer_id=customer_id) < percent * 100


@dataclass
class EnterResult:
    entered: int = 0  # treated enrollments created (due now, at the entry node)
    holdout: int = 0  # holdout enrollments created (exited at once)
    skipped: int = 0  # refused by the re-entry rule, or already entered for this occurrence


def enrollments_enter_pairs(*, version_id: int, pairs: dict[int, str], now: datetime) -> EnterResult:
    """Enter each customer of `pairs` with its own occurrence (an event entry: the event id)."""
    version = JourneyVersion.objects.select_related("journey").get(pk=version_id)
    return enrollments_enter(version=version, customer_ids=list(pairs), occurrence=pairs, now=now)


def enrollments_enter(
    *, version: JourneyVersion, customer_ids: Iterable[int], occurrence: str | dict[int, str], now: datetime
) -> EnterResult:
    """Enter `customer_ids` into `version` (the journey's published version) for `occurrence`.

    A customer already enrolled in the journey for this occurrence is skipped (the unique key), as is
    one the re-entry rule keeps out: `never` (any earlier enrollment in the journey), `after_days`
    (one entered in the last N days, or still in flight), `always` (only one still in flight: a customer
    goes through a journey once at a time). The treated are left due now at the entry node for the
    dispatcher; erased customers never enter."""
    if version.status != VersionStatus.PUBLISHED or version.journey.status != JourneyStatus.PUBLISHED:
        raise EntryRefused(f"journey version {version.pk} does not take entries")
    ids = sorted(set(customer_ids))
    result = EnterResult()
    entry = graph_entry(version.graph)
    journey_settings = settings_normalised(version.settings)
    holdout_percent = int(journey_settings.get("holdout_percent") or 0)
    for start in range(0, len(ids), ENTER_CHUNK):
        chunk = ids[start : start + ENTER_CHUNK]
        arms = [
            Arm.HOLDOUT
            if holdout_percent
            and in_holdout(journey_id=version.journey_id, customer_id=c, percent=holdout_percent)
            else Arm.TREATED
            for c in chunk
        ]
        with transaction.atomic():
            occurrences = [occurrence[c] if isinstance(occurrence, dict) else occurrence for c in chunk]
            created = _insert(version, chunk, arms, occurrences, entry, journey_settings["re_entry"], now)
            holdout_ids = [pk for pk, arm in created if arm == Arm.HOLDOUT]
            if holdout_ids:
                EnrollmentStep.objects.bulk_create(
                    [
                        EnrollmentStep(
                            enrollment_id=pk,
                            version_id=version.pk,
                            node_id=entry,
                            visit=1,
                            entered_at=now,
                            left_at=now,
                            outcome=StepOutcome.EXITED,
                            detail={"holdout": True},
                        )
                        for pk in holdout_ids
                    ],
                    batch_size=5000,
                )
        result.holdout += len(holdout_ids)
        result.entered += len(created) - len(holdout_ids)
        result.skipped += len(chunk) - len(created)
    return result


def _reentry_sql(re_entry: dict, now: datetime) -> tuple[str, list]:
    mode = re_entry.get("mode", "never")
    live = "', '".join(str(s) for s in LIVE_STATES)
    if mode == "always":
        return f"AND o.state IN ('{live}')", []
    if mode == "after_days":
        since = now - timedelta(days=int(re_entry["days"]))
        return f"AND (o.state IN ('{live}') OR o.entered_at > %s)", [since]
    return "", []


def _insert(version, chunk, arms, occurrences, entry, re_entry, now) -> list[tuple[int, str]]:
    if connection.vendor != "postgresql":
        return _insert_portable(version, chunk, arms, occurrences, entry, re_entry, now)
    reentry_sql, reentry_params = _reentry_sql(re_entry, now)
    # One statement: the candidates, less the erased and those the re-entry rule keeps out, inserted in
    # customer order (concurrent entries of overlapping customers take the unique index's locks in the
    # same order); ON CONFLICT makes an occurrence entered twice (a trigger run again) a no-op.
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            INSERT INTO journeys_enrollment
                (customer_id, journey_id, version_id, node_id, state, arm, occurrence, entered_at, due_at,
                 finished_at, node_entered_at, steps_taken, attempts, waiting_for, wake_handle, reason,
                 reason_params)
            SELECT c.id, %s, %s, %s,
                   CASE WHEN c.arm = 'holdout' THEN 'exited' ELSE 'active' END,
                   c.arm, c.occurrence, %s,
                   CASE WHEN c.arm = 'holdout' THEN NULL ELSE %s::timestamptz END,
                   CASE WHEN c.arm = 'holdout' THEN %s::timestamptz END,
                   %s,
                   CASE WHEN c.arm = 'holdout' THEN 1 ELSE 0 END,
                   0, '', '',
                   CASE WHEN c.arm = 'holdout' THEN 'holdout' ELSE '' END,
                   '{{}}'::jsonb
            FROM unnest(%s::bigint[], %s::text[], %s::text[]) AS c(id, arm, occurrence)
            JOIN crm_customer cu ON cu.id = c.id AND cu.erased_at IS NULL
            WHERE NOT EXISTS (
                SELECT 1 FROM journeys_enrollment o
                WHERE o.journey_id = %s AND o.customer_id = c.id {reentry_sql}
            )
            ORDER BY c.id
            ON CONFLICT (journey_id, customer_id, occurrence) DO NOTHING
            RETURNING id, arm
            """,
            [
                version.journey_id,
                version.pk,
                entry,
                now,
                now,
                now,
                now,
                chunk,
                [str(a) for a in arms],
                occurrences,
                version.journey_id,
                *reentry_params,
            ],
        )
        return [(row[0], row[1]) for row in cursor.fetchall()]


def _insert_portable(version, chunk, arms, occurrences, entry, re_entry, now) -> list[tuple[int, str]]:
    # SQLite (make run's embedded default): one writer at a time, so read-then-insert cannot race.
    from crm.models import Customer

    alive = set(Customer.objects.filter(pk__in=chunk, erased_at__isnull=True).values_list("pk", flat=True))
    earlier = Enrollment.objects.filter(journey_id=version.journey_id, customer_id__in=alive)
    mode = re_entry.get("mode", "never")
    if mode == "always":
        earlier = earlier.filter(state__in=LIVE_STATES)
    elif mode == "after_days":
        since = now - timedelta(days=int(re_entry["days"]))
        earlier = earlier.filter(state__in=LIVE_STATES) | earlier.filter(entered_at__gt=since)
    blocked = set(earlier.values_list("customer_id", flat=True))
    taken = set(
        Enrollment.objects.filter(journey_id=version.journey_id, customer_id__in=alive).values_list(
            "customer_id", "occurrence"
        )
    )
    rows = []
    for customer_id, arm, occurrence in zip(chunk, arms, occurrences, strict=True):
        if customer_id not in alive or customer_id in blocked or (customer_id, occurrence) in taken:
            continue
        holdout = arm == Arm.HOLDOUT
        rows.append(
            Enrollment(
                customer_id=customer_id,
                journey_id=version.journey_id,
                version=version,
                node_id=entry,
                state=EnrollmentState.EXITED if holdout else EnrollmentState.ACTIVE,
                arm=arm,
                occurrence=occurrence,
                entered_at=now,
                due_at=None if holdout else now,
                finished_at=now if holdout else None,
                node_entered_at=now,
                steps_taken=1 if holdout else 0,
                reason="holdout" if holdout else "",
            )
        )
    created = Enrollment.objects.bulk_create(rows, batch_size=2000)
    return [(e.pk, e.arm) for e in created]
