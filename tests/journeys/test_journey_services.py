"""Journeys and their versions: drafts save, published versions are frozen, publishing validates again."""

from __future__ import annotations

import threading

import pytest
from django.db import connection

from journeys.models import Enrollment, EnrollmentState, JourneyStatus, JourneyVersion, VersionStatus
from journeys.nodes import GraphInvalid
from journeys.services.journeys import (
    JourneyRefused,
    journey_archive,
    journey_create,
    journey_draft,
    journey_draft_create,
    journey_graph_save,
    journey_pause,
    journey_publish,
    journey_resume,
)
from tests.factories import CustomerFactory
from tests.journeys.graphs import chain, entry, node

pytestmark = pytest.mark.django_db


def wait_graph(hours=1):
    return chain(
        entry(),
        node("w", "wait", mode="duration", duration={"value": hours, "unit": "hours"}),
        node("x", "exit"),
    )


def test_create_gives_a_draft_version_one_that_validates():
    journey = journey_create(name="Welcome")
    draft = journey_draft(journey)
    assert (journey.status, draft.number, draft.status) == (JourneyStatus.DRAFT, 1, VersionStatus.DRAFT)
    journey_publish(journey=journey)
    journey.refresh_from_db()
    assert journey.status == JourneyStatus.PUBLISHED and journey.current_version_id == draft.pk


def test_saving_an_invalid_graph_is_refused_with_the_node_named():
    journey = journey_create(name="J")
    with pytest.raises(GraphInvalid) as caught:
        journey_graph_save(
            journey=journey, graph=chain(entry(), node("w", "wait", mode="soon"), node("x", "exit"))
        )
    assert [(p.node_id, p.field) for p in caught.value.problems] == [("w", "config.mode")]
    assert journey_draft(journey).revision == 1  # nothing saved


def test_a_work_in_progress_may_be_kept_but_not_published():
    journey = journey_create(name="J")
    half = chain(entry(), node("w", "wait", mode="duration", duration={"value": 1, "unit": "hours"}))
    draft, problems = journey_graph_save(journey=journey, graph=half, allow_problems=True)
    assert [(p.node_id, p.code) for p in problems] == [("w", "unconnected")]
    assert draft.graph == half
    with pytest.raises(GraphInvalid):
        journey_publish(journey=journey)
    with pytest.raises(GraphInvalid):  # an unreadable document is never kept
        journey_graph_save(journey=journey, graph={"nodes": 3}, allow_problems=True)


def test_a_stale_save_is_refused():
    journey = journey_create(name="J")
    draft, _ = journey_graph_save(journey=journey, graph=wait_graph(1), base_revision=1)
    with pytest.raises(JourneyRefused) as caught:
        journey_graph_save(journey=journey, graph=wait_graph(2), base_revision=1)
    assert caught.value.code == "stale"
    assert journey_draft(journey).graph == draft.graph


def test_a_published_version_is_frozen_and_editing_makes_a_new_draft():
    journey = journey_create(name="J", graph=wait_graph(1))
    v1 = journey_publish(journey=journey)
    with pytest.raises(JourneyRefused):
        journey_graph_save(journey=journey, graph=wait_graph(5))
    v2 = journey_draft_create(journey=journey)
    assert journey_draft_create(journey=journey).pk == v2.pk  # not two drafts
    assert (v2.number, v2.graph) == (2, v1.graph)
    journey_graph_save(journey=journey, graph=wait_graph(5))
    v1.refresh_from_db()
    assert v1.graph == wait_graph(1)
    journey_publish(journey=journey)
    v1.refresh_from_db()
    journey.refresh_from_db()
    assert v1.status == VersionStatus.RETIRED and journey.current_version.number == 2


def test_publish_validates_again_what_the_draft_was_saved_with():
    journey = journey_create(name="J")
    # A draft changed behind the services' back (an old row, a hand edit) is still checked.
    JourneyVersion.objects.filter(journey=journey).update(graph={"schema": 1, "nodes": [], "edges": []})
    with pytest.raises(GraphInvalid):
        journey_publish(journey=journey)


def test_pause_resume_archive_and_their_refusals():
    journey = journey_create(name="J")
    with pytest.raises(JourneyRefused):
        journey_pause(journey=journey)
    version = journey_publish(journey=journey)
    assert journey_pause(journey=journey).status == JourneyStatus.PAUSED
    with pytest.raises(JourneyRefused):
        journey_pause(journey=journey)
    assert journey_resume(journey=journey).status == JourneyStatus.PUBLISHED
    customer = CustomerFactory()
    enrollment = Enrollment.objects.create(
        customer=customer, journey=journey, version=version, node_id="entry", occurrence="1"
    )
    journey_archive(journey=journey)
    enrollment.refresh_from_db()
    assert (enrollment.state, enrollment.reason) == (EnrollmentState.EXITED, "archived")
    with pytest.raises(JourneyRefused):
        journey_publish(journey=journey)


@pytest.mark.django_db(transaction=True)
def test_two_publishes_at_once_leave_one_published_version():
    journey = journey_create(name="J", graph=wait_graph(1))
    journey_publish(journey=journey)
    journey_draft_create(journey=journey)
    barrier = threading.Barrier(2)
    errors = []

    def publish():
        try:
            barrier.wait()
            journey_publish(journey=journey)
        except JourneyRefused as exc:
            errors.append(exc.code)
        finally:
            connection.close()

    threads = [threading.Thread(target=publish) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == ["no_draft"]
    assert JourneyVersion.objects.filter(journey=journey, status=VersionStatus.PUBLISHED).count() == 1
