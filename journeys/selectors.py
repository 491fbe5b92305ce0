"""Reads of the journeys that the canvas, the admin and the API use."""

from __future__ import annotations

from django.db.models import Count

from journeys.models import LIVE_STATES, Enrollment, EnrollmentStep, JourneyVersion, StepOutcome

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
