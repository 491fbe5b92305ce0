"""Leases on long jobs: whoever runs a job holds its row's lease and renews it with a heartbeat, so a job
whose worker was killed is noticed within a lease and resumed by another worker, never left "running".

The row is a `crm.models.Leased` (import jobs, metrics runs, points expiry runs, bulk adjustments, and
the campaign sends and journey dispatches to come). The pieces:

- `lease_claim`: one conditional UPDATE takes the lease when nobody holds it or its holder's lease
  lapsed. Two claimers at once: PostgreSQL locks the row for the first, the second re-checks the
  condition once the first commits and finds the lease held, so exactly one wins.
- `LeaseKeeper` (`lease_kept`): a thread that renews the lease every third of its duration on its own
  connection, so a job in one long transaction (the metrics run) still shows its worker is alive. Every
  renewal checks the token: a holder whose lease was taken over (it stalled past its lease) learns it
  there, and `check()` makes it stop before it writes again.
- `lease_release`: the holder's last write (the final status) happens only if it still holds the lease.
- `leases_reap`: the periodic reaper (beat, `crm.tasks.leases_reap`) finds rows whose lease lapsed,
  skipping rows another reaper has locked, forgets their holder and queues each job's task again.
  Each app registers its leased jobs with `leased_job_register`, so crm never imports them.

Times are the database's clock (`Now()`), never a worker's: workers on several machines compare against
one clock, and a worker whose clock is slow cannot keep a lease alive that has lapsed for everyone else.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.db import DatabaseError, connection, models, transaction
from django.db.models import F, Q
from django.db.models.functions import Now

from crm.task_queue import task_queue_on_commit

logger = logging.getLogger(__name__)


class LeaseLost(Exception):
    """The job's lease was taken over by another worker (this one stalled past its lease): stop writing."""

    def __init__(self, lease: Lease):
        super().__init__(f"the lease on {lease.model._meta.label} #{lease.pk} was taken over")
        self.lease = lease


@dataclass(frozen=True)
class Lease:
    """The proof of holding one row's lease: the token the claim wrote there."""

    model: type[models.Model]
    pk: int
    token: uuid.UUID
    duration: timedelta


def lease_duration() -> timedelta:
    return timedelta(seconds=settings.JOB_LEASE_SECONDS)


def lease_pickup_deadline():
    """The value of `lease_expires_at` for a job just queued: the database's now plus the time a queued
    message may wait for a worker before the reaper presumes it lost and queues the job again."""
    return Now() + timedelta(seconds=settings.JOB_PICKUP_SECONDS)


def lease_holder_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"[:200]


def lease_claim(
    *,
    queryset: models.QuerySet,
    pk: int,
    values: dict | None = None,
    duration: timedelta | None = None,
) -> Lease | None:
    """Take the lease on row `pk` of `queryset` (which says which rows may be run: a job that is over is
    never claimed again) if nobody holds it or its holder's lease lapsed, writing `values` with it.
    Returns the lease, or None when another worker holds it or the job is not to be run.

    Call it outside a transaction: the lease must be visible to other workers as soon as it is taken."""
    duration = duration or lease_duration()
    token = uuid.uuid4()
    claimed = (
        queryset.filter(pk=pk)
        .filter(Q(lease_token__isnull=True) | Q(lease_expires_at__lt=Now()))
        .update(
            lease_token=token,
            lease_holder=lease_holder_name(),
            lease_expires_at=Now() + duration,
            lease_claims=F("lease_claims") + 1,
            **(values or {}),
        )
    )
    if not claimed:
        return None
    return Lease(model=queryset.model, pk=pk, token=token, duration=duration)


def _held(lease: Lease) -> models.QuerySet:
    return lease.model._default_manager.filter(pk=lease.pk, lease_token=lease.token)


def lease_heartbeat(*, lease: Lease) -> bool:
    """Renew the lease for another full duration; False if it is no longer ours (taken over or released)."""
    return bool(_held(lease).update(lease_expires_at=Now() + lease.duration))


def lease_write(*, lease: Lease, values: dict) -> None:
    """Write `values` (progress) to the job's row only while holding its lease; raise LeaseLost otherwise."""
    if not _held(lease).update(**values):
        raise LeaseLost(lease)


def lease_release(*, lease: Lease, values: dict) -> None:
    """The holder's last write: `values` (the final status) and the end of the lease, in one conditional
    UPDATE. Raises LeaseLost, writing nothing, when another worker has taken the job over. A job to be
    tried again later gives `lease_expires_at` (a `lease_pickup_deadline()`), when the reaper will."""
    lease_write(lease=lease, values={"lease_token": None, "lease_expires_at": None, **values})


class LeaseKeeper:
    """Renews a lease from a thread while the job runs (see the module docstring); use `lease_kept`."""

    def __init__(self, lease: Lease):
        self.lease = lease
        self.every = lease.duration.total_seconds() / 3
        self._stop = threading.Event()
        self._lost = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease-{lease.pk}", daemon=True)

    @property
    def lost(self) -> bool:
        return self._lost.is_set()

    def check(self) -> None:
        """Raise LeaseLost if a heartbeat found the lease taken over; call it before each write."""
        if self._lost.is_set():
            raise LeaseLost(self.lease)

    def _run(self) -> None:
        try:
            while not self._stop.wait(self.every):
                try:
                    held = lease_heartbeat(lease=self.lease)
                except DatabaseError:
                    # A lost connection is not a lost lease: try again next time. If the database stays
                    # away past the lease, the job is taken over and the next heartbeat says so.
                    logger.warning("lease heartbeat failed", exc_info=True, extra={"job": self.lease.pk})
                    connection.close()
                    continue
                if not held:
                    self._lost.set()
                    logger.warning(
                        "lease lost", extra={"model": self.lease.model._meta.label, "job": self.lease.pk}
                    )
                    return
        finally:
            connection.close()  # this thread's own connection

    def __enter__(self) -> LeaseKeeper:
        # Inside a transaction (a management command wrapping the job, a test) the claim itself is not
        # visible to any other connection until it commits, and the row lock it took keeps every other
        # claimer waiting until then: there is nothing a heartbeat could renew.
        if not connection.in_atomic_block:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        # Never called while the job's own transaction holds a lock on the row: the heartbeat may be
        # waiting for that lock, and joining it would wait forever.
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()


def lease_kept(lease: Lease) -> LeaseKeeper:
    """`with lease_kept(lease) as keeper:` renews `lease` until the block ends; `keeper.check()` raises
    LeaseLost once another worker has taken the job over."""
    return LeaseKeeper(lease)


# --- The reaper -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LeasedJob:
    """A kind of leased job the reaper resumes: `active` selects the rows that are still to be run (queued
    or running), and `resume(pk)` queues the job's task again (called once the reaper's update commits)."""

    name: str
    active: Callable[[], models.QuerySet]
    resume: Callable[[int], None]


_LEASED_JOBS: dict[str, LeasedJob] = {}


def leased_job_register(*, name: str, active: Callable[[], models.QuerySet], resume: Callable[[int], None]):
    """Register a kind of leased job with the reaper (each app does it in its AppConfig.ready, so crm
    reaps the jobs of apps it does not know). Registering a name again replaces it."""
    _LEASED_JOBS[name] = LeasedJob(name=name, active=active, resume=resume)


def leased_job_resume_task(task_name: str) -> Callable[[int], None]:
    """A `resume` for `leased_job_register` that queues the task registered as `task_name` with the id."""
    return lambda pk: task_queue_on_commit(task_name, pk)


@dataclass
class ReapResult:
    resumed: dict[str, list[int]] = field(default_factory=dict)

    @property
    def count(self) -> int:
        return sum(len(pks) for pks in self.resumed.values())


def leases_lapsed(*, queryset: models.QuerySet, limit: int = 100) -> list[int]:
    """Lock (skipping rows another reaper holds) and return up to `limit` rows of `queryset` whose lease
    lapsed. Inside the caller's transaction."""
    return list(
        queryset.filter(lease_expires_at__lt=Now())
        .order_by("pk")
        .select_for_update(skip_locked=True)
        .values_list("pk", flat=True)[:limit]
    )


def leases_reap(*, limit: int = 100) -> ReapResult:
    """Queue again every registered job whose lease lapsed: its worker died, or its queued message was
    lost. Each one's holder is forgotten (so a holder that was only stalled fails its next heartbeat and
    stops) and its pick-up deadline set, so the next reaper waits for the new message instead of queueing
    another. Running this twice at once, or alongside a broker redelivery, is harmless: only one claim of
    the job wins, and a job that is over is never claimed."""
    result = ReapResult()
    for job in list(_LEASED_JOBS.values()):
        with transaction.atomic():
            pks = leases_lapsed(queryset=job.active(), limit=limit)
            if not pks:
                continue
            job.active().filter(pk__in=pks).update(
                lease_token=None, lease_holder="", lease_expires_at=lease_pickup_deadline()
            )
            for pk in pks:
                job.resume(pk)
        result.resumed[job.name] = pks
        logger.warning("leased jobs resumed", extra={"job": job.name, "ids": pks})
    return result
