"""Publishing a journey from a node list and running the engine at a chosen moment, for the engine tests."""

from __future__ import annotations

from datetime import datetime

from journeys.models import Enrollment, EnrollmentStep
from journeys.services.engine import _COMPILED, dispatch_run
from journeys.services.enrollments import enrollments_enter
from journeys.services.journeys import journey_create, journey_publish


def published(graph, *, settings=None, name="J", now=None):
    """A published journey's version, with `graph` and `settings`."""
    journey = journey_create(name=name, graph=graph, settings=settings, now=now)
    return journey_publish(journey=journey, now=now)


def enter(version, customers, *, occurrence="1", now: datetime):
    return enrollments_enter(
        version=version, customer_ids=[c.pk for c in customers], occurrence=occurrence, now=now
    )


def run(now: datetime, **kw):
    """Everything due at `now`, as the dispatcher would do it (the event log included unless told not)."""
    return dispatch_run(worker="test", now_fn=lambda: now, limit_seconds=60, **kw)


def trail(enrollment) -> list[tuple[str, str, str]]:
    """(node, outcome, exit) of each step, in order."""
    return list(
        EnrollmentStep.objects.filter(enrollment=enrollment)
        .order_by("visit")
        .values_list("node_id", "outcome", "handle")
    )


def one(version) -> Enrollment:
    return Enrollment.objects.get(version=version)


def forget_compiled():
    _COMPILED.clear()
