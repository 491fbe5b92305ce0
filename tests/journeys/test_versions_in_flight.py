"""Publishing a new version with customers in flight: they stay on their version, or staff move them node
by node (journeys/services/versions.py)."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from journeys.models import (
    Enrollment,
    EnrollmentState,
    EnrollmentStep,
    InFlight,
    MigrationStatus,
    StepOutcome,
    VersionMigration,
)
from journeys.reasons import reason_text
from journeys.services import nodes_run
from journeys.services.engine import batch_process, enrollments_claim
from journeys.services.journeys import (
    JourneyRefused,
    journey_draft_create,
    journey_graph_save,
    journey_publish,
)
from journeys.services.versions import (
    MappingInvalid,
    version_live_counts,
    version_mapping_prefill,
    version_migration_run,
    version_migrations_continue,
)
from tests.factories import CustomerFactory
from tests.journeys.engine_helpers import enter, published, run, trail
from tests.journeys.graphs import chain, edge, entry, graph, node

pytestmark = pytest.mark.django_db


def wait(node_id, hours):
    return node(node_id, "wait", mode="duration", duration={"value": hours, "unit": "hours"})


def tag(node_id, name):
    return node(node_id, "add_tag", tag=name)


def v1_graph():
    # entry -> w1 (wait 1h) -> t1 (tag "v1") -> w2 (wait 5h) -> x
    return chain(entry(), wait("w1", 1), tag("t1", "v1"), wait("w2", 5), node("x", "exit"))


def v2_graph():
    # entry -> w1 (wait 1h) -> t2 (tag "v2") -> x; w2 is gone.
    return chain(entry(), wait("w1", 1), tag("t2", "v2"), node("x", "exit"))


@pytest.fixture
def tags():
    from crm.models import Tag

    return {name: Tag.objects.create(name=name) for name in ("v1", "v2")}


def customer_tags(customer) -> set[str]:
    from crm.models import CustomerTag

    return set(CustomerTag.objects.filter(customer=customer).values_list("tag__name", flat=True))


def new_draft(journey, graph_doc, now):
    journey_draft_create(journey=journey, now=now)
    draft, _problems = journey_graph_save(journey=journey, graph=graph_doc, now=now)
    return draft


def test_customers_in_flight_stay_on_their_version_while_new_entries_get_the_new_one(tags):
    now = timezone.now()
    v1 = published(v1_graph(), now=now)
    early = CustomerFactory()
    enter(v1, [early], now=now)
    run(now)  # waiting at w1 of v1
    draft = new_draft(v1.journey, v2_graph(), now)
    v2 = journey_publish(journey=v1.journey, now=now, in_flight=InFlight.STAY, version_number=draft.number)
    late = CustomerFactory()
    enter(v2, [late], now=now)
    run(now + timedelta(hours=2))
    run(now + timedelta(hours=8))
    first, second = Enrollment.objects.get(customer=early), Enrollment.objects.get(customer=late)
    assert (first.version_id, first.state) == (v1.pk, EnrollmentState.COMPLETED)
    assert [n for n, _o, _h in trail(first)] == ["entry", "w1", "t1", "w2", "x"]
    assert customer_tags(early) == {"v1"}
    assert (second.version_id, second.state) == (v2.pk, EnrollmentState.COMPLETED)
    assert customer_tags(late) == {"v2"}
    migration = VersionMigration.objects.get(to_version=v2)
    assert (migration.mode, migration.status) == (InFlight.STAY, MigrationStatus.DONE)


def test_moving_node_by_node_keeps_a_wait_and_records_the_move(tags):
    now = timezone.now()
    v1 = published(v1_graph(), now=now)
    at_w1, at_w2 = CustomerFactory(), CustomerFactory()
    enter(v1, [at_w2], occurrence="a", now=now - timedelta(hours=2))
    run(now - timedelta(hours=2))
    run(now - timedelta(minutes=30))  # at_w2: tagged v1, waiting at w2 until 4h30 from now
    enter(v1, [at_w1], occurrence="b", now=now)
    run(now)  # at_w1: waiting at w1 until 1h from now
    w1_due = Enrollment.objects.get(customer=at_w1).due_at
    draft = new_draft(v1.journey, v2_graph(), now)
    prefill = version_mapping_prefill(old=v1, new=draft)
    assert prefill == {"entry": "entry", "w1": "w1", "t1": "", "w2": "", "x": "x"}
    mapping = {**prefill, "t1": "t2", "w2": "t2"}  # w2 (a wait) to a tag node: they leave the wait now
    assert version_live_counts(v1) == {"w1": 1, "w2": 1}

    v2 = journey_publish(journey=v1.journey, now=now, in_flight=InFlight.MOVE, mapping=mapping)
    migration = VersionMigration.objects.get(to_version=v2)
    progress = version_migration_run(migration=migration, now=now)

    assert (progress.moved, progress.exited, progress.done) == (2, 0, True)
    assert (migration.moved, migration.status) == (2, MigrationStatus.DONE)
    kept = Enrollment.objects.get(customer=at_w1)
    assert (kept.version_id, kept.node_id, kept.state, kept.due_at) == (v2.pk, "w1", "waiting", w1_due)
    assert trail(kept)[-2:] == [("w1", StepOutcome.MOVED, ""), ("w1", StepOutcome.WAITING, "")]
    early = Enrollment.objects.get(customer=at_w2)
    assert (early.version_id, early.node_id, early.state, early.due_at) == (v2.pk, "t2", "active", now)
    closed = EnrollmentStep.objects.get(enrollment=early, node_id="w2")
    assert (closed.outcome, closed.detail) == (StepOutcome.MOVED, {"to_version": 2, "to_node": "t2"})

    run(now)
    run(now + timedelta(hours=2))
    assert customer_tags(at_w2) == {"v1", "v2"} and customer_tags(at_w1) == {"v2"}
    assert set(Enrollment.objects.values_list("state", flat=True)) == {EnrollmentState.COMPLETED}
    # Every visit number once per enrollment: the move never collides with the engine's own steps.
    for enrollment in (kept, early):
        visits = list(EnrollmentStep.objects.filter(enrollment=enrollment).values_list("visit", flat=True))
        assert sorted(visits) == list(range(1, len(visits) + 1))


def test_customers_at_a_node_mapped_to_nothing_exit_with_the_reason_in_words(tags):
    now = timezone.now()
    v1 = published(v1_graph(), now=now)
    customer = CustomerFactory()
    enter(v1, [customer], now=now - timedelta(hours=2))
    run(now - timedelta(hours=2))
    run(now - timedelta(minutes=30))  # waiting at w2
    draft = new_draft(v1.journey, v2_graph(), now)
    mapping = version_mapping_prefill(old=v1, new=draft)  # w2 -> "" (exit)
    v2 = journey_publish(journey=v1.journey, now=now, in_flight=InFlight.MOVE, mapping=mapping)
    version_migration_run(migration=VersionMigration.objects.get(to_version=v2), now=now)
    enrollment = Enrollment.objects.get(customer=customer)
    assert (enrollment.state, enrollment.version_id, enrollment.reason) == (
        EnrollmentState.EXITED,
        v1.pk,
        "version_node_unmapped",
    )
    assert reason_text(enrollment.reason, enrollment.reason_params) == (
        "Version 2 replaced this journey and has no place for node w2: staff chose to end it"
    )
    assert trail(enrollment)[-1] == ("w2", StepOutcome.EXITED, "")
    assert VersionMigration.objects.get(to_version=v2).exited == 1


def test_a_mapping_naming_unknown_nodes_is_refused_with_the_nodes_named(tags):
    now = timezone.now()
    v1 = published(v1_graph(), now=now)
    draft = new_draft(v1.journey, v2_graph(), now)
    mapping = {"entry": "entry", "w1": "nowhere", "t1": "entry", "w2": "", "ghost": "x"}
    with pytest.raises(MappingInvalid) as caught:
        journey_publish(journey=v1.journey, now=now, in_flight=InFlight.MOVE, mapping=mapping)
    text = " ".join(caught.value.problems)
    for named in ("ghost", "nowhere", "Node t1 is mapped to the entry", "node x go"):
        assert named in text
    draft.refresh_from_db()
    assert draft.status == "draft"  # nothing published
    assert not VersionMigration.objects.exists()


def test_a_publish_retried_with_the_same_choices_returns_the_first_and_moves_nobody_twice(tags):
    now = timezone.now()
    v1 = published(v1_graph(), now=now)
    customers = [CustomerFactory() for _ in range(3)]
    enter(v1, customers, now=now)
    run(now)
    draft = new_draft(v1.journey, v2_graph(), now)
    mapping = version_mapping_prefill(old=v1, new=draft)
    kwargs = {"journey": v1.journey, "in_flight": InFlight.MOVE, "mapping": mapping}
    first = journey_publish(**kwargs, now=now, version_number=draft.number)
    migration = VersionMigration.objects.get(to_version=first)
    assert version_migration_run(migration=migration, now=now).moved == 3
    again = journey_publish(**kwargs, now=now + timedelta(seconds=5), version_number=draft.number)
    assert again.pk == first.pk and VersionMigration.objects.count() == 1
    assert version_migration_run(migration=migration, now=now).moved == 0
    assert EnrollmentStep.objects.filter(outcome=StepOutcome.MOVED).count() == 3
    with pytest.raises(JourneyRefused) as caught:
        journey_publish(journey=v1.journey, in_flight=InFlight.STAY, now=now, version_number=draft.number)
    assert caught.value.code == "published_differently"


@pytest.mark.django_db(transaction=True)
def test_an_enrollment_a_worker_holds_is_not_moved_mid_batch_and_is_moved_after(monkeypatch):
    """Given a dispatcher in the middle of a batch (its rows claimed and locked, a send under way), when
    staff publish and move the customers, then the rows it holds stay on the old version until its batch
    commits, and a later pass moves them from where the batch left them."""
    from crm.models import Tag

    Tag.objects.create(name="v1")
    Tag.objects.create(name="v2")
    now = timezone.now()
    v1 = published(v1_graph(), now=now)
    held, free = [CustomerFactory() for _ in range(3)], [CustomerFactory() for _ in range(3)]
    enter(v1, held, occurrence="held", now=now)
    run(now)  # all three wait at w1 until now + 1h
    enter(v1, free, occurrence="free", now=now + timedelta(hours=1))  # at the entry, due at +1h
    later = now + timedelta(hours=1)
    Enrollment.objects.filter(customer__in=free).update(due_at=later + timedelta(minutes=5))
    claim = enrollments_claim(now=later)  # only the three at w1 are due
    held_ids = set(Enrollment.objects.filter(customer__in=held).values_list("pk", flat=True))
    assert set(claim.ids) == held_ids

    in_batch, release = threading.Event(), threading.Event()
    real_run = nodes_run.run

    def slow_run(node_type, members, ctx):
        # The batch holds its rows' locks here, between reading them and writing them back.
        in_batch.set()
        assert release.wait(30)
        return real_run(node_type, members, ctx)

    monkeypatch.setattr(nodes_run, "run", slow_run)
    outcome = {}

    def worker():
        try:
            outcome["stats"] = batch_process(claim=claim, now=later)
        finally:
            connection.close()

    thread = threading.Thread(target=worker)
    thread.start()
    try:
        assert in_batch.wait(30)
        draft = new_draft(v1.journey, v2_graph(), later)
        mapping = {**version_mapping_prefill(old=v1, new=draft), "t1": "t2", "w2": "t2"}
        v2 = journey_publish(journey=v1.journey, now=later, in_flight=InFlight.MOVE, mapping=mapping)
        migration = VersionMigration.objects.get(to_version=v2)
        progress = version_migration_run(migration=migration, now=later)
        assert (progress.moved, progress.left, progress.done) == (3, 3, False)
        assert set(Enrollment.objects.filter(version=v1).values_list("pk", flat=True)) == held_ids
        # Another publish now would leave those three on a version retired before they were moved.
        journey_draft_create(journey=v1.journey, now=later)
        with pytest.raises(JourneyRefused) as refused:
            journey_publish(journey=v1.journey, now=later)
        assert refused.value.code == "moving"
    finally:
        release.set()
        thread.join(60)
    monkeypatch.setattr(nodes_run, "run", real_run)
    assert outcome["stats"].lost == 0 and outcome["stats"].steps > 0
    # The batch ran w1 -> t1 (tagged v1) -> w2 on the old version; the next pass moves them from w2.
    assert set(Enrollment.objects.filter(pk__in=held_ids).values_list("node_id", flat=True)) == {"w2"}
    assert version_migrations_continue(now=later) == 3
    migration.refresh_from_db()
    assert (migration.status, migration.moved) == (MigrationStatus.DONE, 6)
    assert not Enrollment.objects.filter(version=v1).exists()
    run(later + timedelta(minutes=10))
    run(later + timedelta(hours=2))
    assert all(customer_tags(c) == {"v1", "v2"} for c in held)
    assert all(customer_tags(c) == {"v2"} for c in free)


def test_a_lapsed_lease_does_not_keep_an_enrollment_from_moving(tags):
    now = timezone.now()
    v1 = published(graph([entry(), wait("w1", 1), node("x", "exit")], [edge("entry", "w1"), edge("w1", "x")]))
    enter(v1, [CustomerFactory()], now=now)
    run(now)
    stalled = enrollments_claim(now=now + timedelta(hours=1))  # a worker that then died
    assert len(stalled.ids) == 1
    draft = new_draft(v1.journey, chain(entry(), wait("w1", 2), node("x", "exit")), now)
    v2 = journey_publish(
        journey=v1.journey, in_flight=InFlight.MOVE, mapping=version_mapping_prefill(old=v1, new=draft)
    )
    migration = VersionMigration.objects.get(to_version=v2)
    during = now + timedelta(hours=1, seconds=30)
    assert version_migration_run(migration=migration, now=during).left == 1  # the lease still runs
    after = now + timedelta(hours=1, minutes=10)
    assert version_migration_run(migration=migration, now=after).moved == 1
    assert batch_process(claim=stalled, now=after).lost == 1  # the dead worker's late write finds nothing
    assert Enrollment.objects.get().version_id == v2.pk


def test_the_beat_task_finishes_a_migration_the_publish_left_running(tags):
    from django.conf import settings

    from journeys import tasks

    entry = settings.CELERY_BEAT_SCHEDULE["journeys-version-migrations"]
    assert entry["task"] == tasks.version_migrations_continue.name
    now = timezone.now()
    v1 = published(v1_graph(), now=now)
    enter(v1, [CustomerFactory() for _ in range(2)], now=now)
    run(now)
    draft = new_draft(v1.journey, v2_graph(), now)
    v2 = journey_publish(
        journey=v1.journey, in_flight=InFlight.MOVE, mapping=version_mapping_prefill(old=v1, new=draft)
    )
    tasks.version_migrations_continue.apply()
    assert VersionMigration.objects.get(to_version=v2).status == MigrationStatus.DONE
    assert set(Enrollment.objects.values_list("version_id", flat=True)) == {v2.pk}
