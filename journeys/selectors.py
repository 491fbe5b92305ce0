"""Reads of the journeys that the canvas, the admin and the API use."""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import Count

from journeys.models import (
    LIVE_STATES,
    Arm,
    Enrollment,
    EnrollmentStep,
    JourneyVersion,
    StepOutcome,
    WinbackAssignment,
)
from journeys.nodes import graph_nodes, node_type_get
from journeys.reasons import reason_text

_LEFT = (StepOutcome.EXITED, StepOutcome.GOAL, StepOutcome.FAILED)


def journey_node_counts(version: JourneyVersion) -> dict[str, dict[str, int]]:
    """Per node of `version`: steps that entered it (every visit), enrollments there now (waiting, or
    about to move on), steps that passed through it, and enrollments that left the journey there (an
    exit, the goal, a failure). Two GROUP BYs, each read from an index on (version, node, ...)."""
    counts: dict[str, dict[str, int]] = {}

    def slot(node_id: str) -> dict[str, int]:
        return counts.setdefault(node_id, {"entered": 0, "waiting": 0, "passed": 0, "exited": 0})

    for node_id, outcome, n in (
        EnrollmentStep.objects.filter(version=version)
        .values_list("node_id", "outcome")
        .annotate(n=Count("*"))
        .order_by()
    ):
        row = slot(node_id)
        row["entered"] += n
        if outcome == StepOutcome.PASSED:
            row["passed"] += n
        elif outcome in _LEFT:
            row["exited"] += n
    for node_id, n in (
        Enrollment.objects.filter(version=version, state__in=LIVE_STATES)
        .values_list("node_id")
        .annotate(n=Count("*"))
        .order_by()
    ):
        slot(node_id)["waiting"] += n
    return counts


def journey_conversions(*, journey_id: int) -> dict[str, dict[str, int]]:
    """Per arm (treated, holdout): enrollments, and those that reached the goal."""
    result = {"treated": {"enrolled": 0, "converted": 0}, "holdout": {"enrolled": 0, "converted": 0}}
    for arm, state, n in (
        Enrollment.objects.filter(journey_id=journey_id)
        .values_list("arm", "state")
        .annotate(n=Count("*"))
        .order_by()
    ):
        result[arm]["enrolled"] += n
        if state == "goal":
            result[arm]["converted"] += n
    return result


@dataclass
class CustomerEnrollments:
    rows: list[dict]
    has_more: bool


def customer_enrollments(*, customer_id: int, limit: int, offset: int = 0) -> CustomerEnrollments:
    """One page of a customer's enrollments, newest first: journey, version, state, the node they are at
    (or ended at) and why they ended, in the reader's language. One query (limit + 1 rows: no count)."""
    enrollments = list(
        Enrollment.objects.filter(customer_id=customer_id)
        .select_related("journey", "version")
        .only(
            "id",
            "node_id",
            "state",
            "arm",
            "entered_at",
            "due_at",
            "finished_at",
            "reason",
            "reason_params",
            "journey__name",
            "version__number",
            "version__graph",
        )
        .order_by("-entered_at", "-id")[offset : offset + limit + 1]
    )
    rows = []
    for enrollment in enrollments[:limit]:
        node = graph_nodes(enrollment.version.graph).get(enrollment.node_id) or {}
        node_type = node_type_get(node.get("type", ""))
        live = enrollment.state in LIVE_STATES
        rows.append(
            {
                "id": enrollment.pk,
                "journey": enrollment.journey.name,
                "journey_id": enrollment.journey_id,
                "version": enrollment.version.number,
                "state": enrollment.state,
                "state_label": enrollment.get_state_display(),
                "node_id": enrollment.node_id,
                "node_type": str(node_type.label) if node_type else "",
                "holdout": enrollment.arm == Arm.HOLDOUT,
                "entered_at": enrollment.entered_at,
                "wakes_at": enrollment.due_at if live else None,
                "finished_at": enrollment.finished_at,
                "why": reason_text(enrollment.reason, enrollment.reason_params) if enrollment.reason else "",
            }
        )
    return CustomerEnrollments(rows=rows, has_more=len(enrollments) > limit)


def customer_winback_history(*, customer_id: int, limit: int = 10) -> list[dict]:
    """A customer's win-back assignments, newest first, with their programme, coupon and outcome (one
    query)."""
    rows = []
    for a in (
        WinbackAssignment.objects.filter(customer_id=customer_id)
        .select_related("programme", "coupon", "run")
        .order_by("-selected_at", "-pk")[:limit]
    ):
        rows.append(
            {
                "programme": a.programme.name,
                "selected_at": a.selected_at,
                "arm": a.arm,
                "arm_label": a.get_arm_display(),
                "value_tier": a.get_value_tier_display(),
                "channel": a.channel,
                "coupon_code": a.coupon.code if a.coupon_id else "",
                "points_bonus": a.points_bonus,
                "messages": a.messages,
                "returned_at": a.returned_at,
                "revenue": a.revenue,
                "coupon_order": a.coupon_order,
                "window_days": a.programme.reactivation_days,
            }
        )
    return rows
