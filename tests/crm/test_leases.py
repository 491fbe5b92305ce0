"""The lease services (crm/services/leases.py) with real threads and processes on PostgreSQL: one claimer
wins, a lapsed lease is taken over, the old holder's heartbeat and writes fail, the keeper renews and
notices a takeover, and the reaper resumes each lapsed job once.

A lease is made to lapse by moving its expiry into the past (what time passing does), so nothing here
waits for a clock; the keeper's tests poll with a generous deadline."""

from __future__ import annotations

import multiprocessing
import threading
import time
from datetime import timedelta

import pytest
from django.db import connection, connections
from django.db.models.functions import Now
from django.utils import timezone

from crm.models import ImportJob
from crm.services import leases
from crm.services.leases import (
    LeaseLost,
    lease_claim,
    lease_heartbeat,
    lease_kept,
    lease_release,
    lease_write,
    leased_job_register,
    leases_reap,
)

pytestmark = pytest.mark.django_db(transaction=True)

HOUR = timedelta(hours=1)
DEADLINE = 60.0


def a_job(**values) -> ImportJob:
    return ImportJob.objects.create(kind=ImportJob.Kind.ORDERS, file="imports/x.csv", **values)


def active():
    return ImportJob.objects.filter(status__in=[ImportJob.Status.QUEUED, ImportJob.Status.RUNNING])


def lapse(job: ImportJob) -> None:
    ImportJob.objects.filter(pk=job.pk).update(lease_expires_at=Now() - timedelta(seconds=1))


def _claim_in_process(pk: int, barrier, results) -> None:
    connections.close_all()  # the child's own connection, never the parent's socket
    barrier.wait()
    lease = lease_claim(queryset=active(), pk=pk, values={"status": "running"}, duration=HOUR)
    results.put(None if lease is None else str(lease.token))
    connections.close_all()


def test_of_processes_claiming_one_job_at_once_exactly_one_wins():
    job = a_job()
    connections.close_all()
    context = multiprocessing.get_context("fork")
    claimers = 6
    barrier, results = context.Barrier(claimers), context.Queue()
    processes = [
        context.Process(target=_claim_in_process, args=(job.pk, barrier, results)) for _ in range(claimers)
    ]
    for process in processes:
        process.start()
    tokens = [results.get(timeout=DEADLINE) for _ in processes]
    for process in processes:
        process.join(DEADLINE)

    winners = [token for token in tokens if token]
    assert len(winners) == 1, tokens
    job.refresh_from_db()
    assert (str(job.lease_token), job.lease_claims, job.status) == (winners[0], 1, "running")


def test_of_threads_claiming_one_job_at_once_exactly_one_wins():
    job = a_job()
    claimers = 8
    barrier = threading.Barrier(claimers)
    won = []

    def claim():
        try:
            barrier.wait()
            lease = lease_claim(queryset=active(), pk=job.pk, duration=HOUR)
            if lease:
                won.append(lease)
        finally:
            connection.close()

    threads = [threading.Thread(target=claim) for _ in range(claimers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(DEADLINE)

    assert len(won) == 1
    job.refresh_from_db()
    assert job.lease_token == won[0].token and job.lease_claims == 1


def test_a_held_lease_is_refused_and_a_lapsed_one_is_taken_over_and_the_old_holder_stops_writing():
    job = a_job()
    old = lease_claim(queryset=active(), pk=job.pk, duration=HOUR)
    assert old is not None
    assert lease_claim(queryset=active(), pk=job.pk, duration=HOUR) is None

    lapse(job)
    new = lease_claim(queryset=active(), pk=job.pk, duration=HOUR)

    assert new is not None and new.token != old.token
    assert lease_heartbeat(lease=old) is False
    assert lease_heartbeat(lease=new) is True
    with pytest.raises(LeaseLost):
        lease_write(lease=old, values={"processed_rows": 99})
    with pytest.raises(LeaseLost):
        lease_release(lease=old, values={"status": ImportJob.Status.FAILED})
    job.refresh_from_db()
    assert (job.status, job.processed_rows, job.lease_token, job.lease_claims) == ("queued", 0, new.token, 2)

    lease_release(lease=new, values={"status": ImportJob.Status.DONE})
    job.refresh_from_db()
    assert (job.status, job.lease_token, job.lease_expires_at) == ("done", None, None)
    assert lease_claim(queryset=active(), pk=job.pk) is None  # a job that is over is never claimed again


def test_a_heartbeat_extends_the_lease_from_the_database_clock():
    job = a_job()
    lease = lease_claim(queryset=active(), pk=job.pk, duration=timedelta(seconds=5))
    job.refresh_from_db()
    first = job.lease_expires_at
    lease = leases.Lease(model=ImportJob, pk=job.pk, token=lease.token, duration=HOUR)

    assert lease_heartbeat(lease=lease)

    job.refresh_from_db()
    assert job.lease_expires_at - first > timedelta(minutes=59)


def _poll(condition, what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not condition():
        assert time.monotonic() < deadline, f"{what} within {DEADLINE:g}s"
        time.sleep(0.05)


def test_the_keeper_renews_the_lease_while_the_job_runs_and_stops_renewing_after():
    job = a_job()
    lease = lease_claim(queryset=active(), pk=job.pk, duration=timedelta(seconds=1.5))
    expiries = []

    def renewed_twice() -> bool:
        job.refresh_from_db()
        if not expiries or job.lease_expires_at != expiries[-1]:
            expiries.append(job.lease_expires_at)
        return len(expiries) >= 3

    with lease_kept(lease) as keeper:
        _poll(renewed_twice, "the keeper renewed the lease twice")
        assert not keeper.lost
        keeper.check()
    assert expiries == sorted(expiries)
    lease_release(lease=lease, values={"status": ImportJob.Status.DONE})
    assert not keeper._thread.is_alive()


def test_the_keeper_notices_a_takeover_and_check_stops_the_old_holder():
    job = a_job()
    old = lease_claim(queryset=active(), pk=job.pk, duration=timedelta(seconds=1.5))

    with lease_kept(old) as keeper:
        lapse(job)
        new = lease_claim(queryset=active(), pk=job.pk, duration=HOUR)
        assert new is not None
        _poll(lambda: keeper.lost, "the keeper noticed the takeover")
        with pytest.raises(LeaseLost):
            keeper.check()
    job.refresh_from_db()
    assert job.lease_token == new.token  # the old keeper never overwrote the new holder's lease


@pytest.fixture
def reaper_registry(monkeypatch):
    """The reaper sees only the kinds a test registers, and each resume is recorded instead of queued."""
    monkeypatch.setattr(leases, "_LEASED_JOBS", {})
    resumed: list[int] = []
    lock = threading.Lock()

    def resume(pk: int) -> None:
        with lock:
            resumed.append(pk)

    leased_job_register(name="test.importjob", active=active, resume=resume)
    return resumed


def test_the_reaper_resumes_jobs_whose_lease_lapsed_and_leaves_the_others(reaper_registry):
    killed = a_job()
    lease_claim(queryset=active(), pk=killed.pk, duration=HOUR)
    lapse(killed)
    alive = a_job()
    lease_claim(queryset=active(), pk=alive.pk, duration=HOUR)
    lost_message = a_job(lease_expires_at=timezone.now() - timedelta(seconds=1))
    waiting = a_job(lease_expires_at=timezone.now() + HOUR)
    done = a_job(status=ImportJob.Status.DONE, lease_expires_at=timezone.now() - HOUR)
    before = {job.pk: (job.lease_token, job.lease_expires_at) for job in active().filter(pk=alive.pk)}
    before |= {job.pk: (job.lease_token, job.lease_expires_at) for job in (waiting, done)}

    result = leases_reap()

    assert sorted(reaper_registry) == sorted([killed.pk, lost_message.pk])
    assert result.resumed == {"test.importjob": sorted([killed.pk, lost_message.pk])}
    killed.refresh_from_db()
    assert killed.lease_token is None and killed.lease_expires_at > timezone.now()  # a pick-up deadline
    assert lease_claim(queryset=active(), pk=killed.pk, duration=HOUR) is not None  # at once, by anyone
    assert leases_reap().count == 0  # not queued again while its new message waits
    after = {job.pk: (job.lease_token, job.lease_expires_at) for job in (alive, waiting, done)}
    for job in (alive, waiting, done):
        job.refresh_from_db()
        after[job.pk] = (job.lease_token, job.lease_expires_at)
    assert after == before and before[alive.pk][0] is not None


def test_reapers_running_at_once_resume_each_lapsed_job_once(reaper_registry):
    jobs = [a_job(lease_expires_at=timezone.now() - timedelta(seconds=1)) for _ in range(30)]
    reapers = 4
    barrier = threading.Barrier(reapers)

    def reap():
        try:
            barrier.wait()
            leases_reap(limit=7)
            leases_reap(limit=100)
        finally:
            connection.close()

    threads = [threading.Thread(target=reap) for _ in range(reapers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(DEADLINE)

    assert sorted(reaper_registry) == sorted(job.pk for job in jobs)
