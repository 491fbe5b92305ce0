"""A snapshot's members have no database foreign keys (SegmentSnapshotMember): the snapshot's insert checks
them for the whole set by locking each customer FOR KEY SHARE. So a merge that folds away a member while
a snapshot (a campaign's start) is still open waits for it, then re-points the new member row like any
other, and no member is left pointing at a customer that no longer exists."""

from __future__ import annotations

import threading

import pytest
from django.db import connection, transaction

from crm.models import Customer, Segment, SegmentSnapshotMember
from crm.segments.services import segment_snapshot_create
from crm.services.customers import customer_merge
from tests.factories import CustomerFactory

JOIN_TIMEOUT = 120
SHANGHAI = {"op": "and", "conditions": [{"field": "profile.city", "operator": "eq", "value": "上海"}]}


def _waiting_on_a_lock(pid: int) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", [pid])
        row = cursor.fetchone()
    return bool(row) and row[0] == "Lock"


@pytest.mark.django_db(transaction=True)
def test_a_merge_during_an_open_snapshot_waits_for_it_and_re_points_the_new_member():
    member = CustomerFactory(city="上海")
    other = CustomerFactory(city="上海")
    survivor = CustomerFactory(city="北京")  # not in the segment: the merged member's row moves to it
    segment = Segment.objects.create(name="上海", rule=SHANGHAI)
    snapshot_taken, release = threading.Event(), threading.Event()
    merger_pid: list[int] = []
    outcome: dict = {}

    def snapshot_then_hold():
        try:
            with transaction.atomic():
                outcome["snapshot"] = segment_snapshot_create(segment=segment)
                snapshot_taken.set()
                release.wait(JOIN_TIMEOUT)
        except Exception as error:  # surfaced by the test thread
            outcome["error"] = error
            snapshot_taken.set()
        finally:
            connection.close()

    def merge():
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_backend_pid()")
                merger_pid.append(cursor.fetchone()[0])
            customer_merge(
                survivor=Customer.objects.get(pk=survivor.pk), merged=Customer.objects.get(pk=member.pk)
            )
            outcome["merged"] = True
        except Exception as error:
            outcome["merge_error"] = error
        finally:
            connection.close()

    holder = threading.Thread(target=snapshot_then_hold)
    holder.start()
    assert snapshot_taken.wait(JOIN_TIMEOUT)
    assert "error" not in outcome, outcome.get("error")
    merger = threading.Thread(target=merge)
    merger.start()
    # The merge locks the member FOR UPDATE, which the snapshot's FOR KEY SHARE holds off until it commits.
    waited = False
    for _ in range(600):
        if merger_pid and _waiting_on_a_lock(merger_pid[0]):
            waited = True
            break
        merger.join(0.1)
        if not merger.is_alive():
            break
    release.set()
    holder.join(JOIN_TIMEOUT)
    merger.join(JOIN_TIMEOUT)
    assert not holder.is_alive() and not merger.is_alive()
    assert waited, "the merge did not wait for the open snapshot"
    assert outcome.get("merged"), outcome.get("merge_error")

    snapshot = outcome["snapshot"]
    assert snapshot.member_count == 2
    members = set(
        SegmentSnapshotMember.objects.filter(snapshot=snapshot).values_list("customer_id", flat=True)
    )
    assert members == {other.pk, survivor.pk}
    assert not Customer.objects.filter(pk=member.pk).exists()
