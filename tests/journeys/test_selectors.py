"""The per-node counts the canvas draws, and the conversion by arm."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from journeys.selectors import journey_conversions, journey_node_counts
from tests.factories import CustomerFactory
from tests.journeys.engine_helpers import enter, published, run
from tests.journeys.graphs import chain, entry, node

pytestmark = pytest.mark.django_db

T0 = datetime(2027, 3, 10, 2, 0, tzinfo=UTC)


def test_node_counts_follow_the_enrollments(django_assert_num_queries):
    g = chain(
        entry(), node("w", "wait", mode="duration", duration={"value": 1, "unit": "hours"}), node("x", "exit")
    )
    version = published(g, now=T0)
    enter(version, [CustomerFactory() for _ in range(3)], now=T0)
    run(T0)
    with django_assert_num_queries(2):
        counts = journey_node_counts(version)
    assert counts == {
        "entry": {"entered": 3, "waiting": 0, "passed": 3, "exited": 0},
        "w": {"entered": 3, "waiting": 3, "passed": 0, "exited": 0},
    }
    run(T0 + timedelta(hours=1))
    counts = journey_node_counts(version)
    assert counts["w"] == {"entered": 3, "waiting": 0, "passed": 3, "exited": 0}
    assert counts["x"] == {"entered": 3, "waiting": 0, "passed": 0, "exited": 3}
    assert journey_conversions(journey_id=version.journey_id)["treated"] == {"enrolled": 3, "converted": 0}
