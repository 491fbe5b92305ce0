"""Reads of the journeys that the canvas, the admin and the API use."""

from __future__ import annotations

from django.db.models import Count

from journeys.models import (
    LIVE_STATES,
    Enrollment,
    EnrollmentStep,
    JourneyVersion,
    StepOutcome,
    WinbackAssignment,
)

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
