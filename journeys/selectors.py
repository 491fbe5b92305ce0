"""Read-only queries over journeys for the admin: the per-node counts the designer draws on its canvas."""

from __future__ import annotations

from django.db.models import Count, Q

from journeys.models import Enrollment, EnrollmentState, EnrollmentStep, JourneyVersion, StepOutcome


def journey_node_counts(version: JourneyVersion) -> dict[str, dict[str, int]]:
    """{node_id: {"entered", "waiting", "passed", "exited"}} for one version, in two GROUP BY queries
    whatever the number of enrollments (each read from its (version, node_id, ...) index).

    entered: steps begun at the node (a node visited twice by one customer counts twice); passed: steps
    that left it through an exit; exited: steps that ended the journey there (an exit node, a goal, a
    failure); waiting: enrollments there now, waiting or due."""
    counts: dict[str, dict[str, int]] = {}

    def at(node_id: str) -> dict[str, int]:
        return counts.setdefault(node_id, {"entered": 0, "waiting": 0, "passed": 0, "exited": 0})

    steps = (
        EnrollmentStep.objects.filter(version=version)
        .values("node_id")
        .annotate(
            entered=Count("pk"),
            passed=Count("pk", filter=Q(outcome=StepOutcome.PASSED)),
            exited=Count(
                "pk", filter=Q(outcome__in=[StepOutcome.EXITED, StepOutcome.GOAL, StepOutcome.FAILED])
            ),
        )
        .order_by()
    )
    for row in steps:
        figures = at(row["node_id"])
        figures.update(entered=row["entered"], passed=row["passed"], exited=row["exited"])
    live = (
        Enrollment.objects.filter(
            version=version, state__in=[EnrollmentState.ACTIVE, EnrollmentState.WAITING]
        )
        .values("node_id")
        .annotate(n=Count("pk"))
        .order_by()
    )
    for row in live:
        at(row["node_id"])["waiting"] = row["n"]
    return counts
