"""Computing customer metrics: RFM, lifecycle stages (with their change events) and predicted value.

`metrics_compute` is the one write path of `CustomerMetrics`; the nightly Celery task, the
`compute_metrics` command and the admin's "recompute" all call it.

A run holds its MetricsRun row's lease (crm/services/leases.py) for as long as it computes. The whole
computation is one transaction, so a worker killed half-way leaves nothing but the row: the reaper then
has `metrics_run_resume` compute that run again from the start, as of the same date."""

from __future__ import annotations

import logging
import time
from datetime import date, datetime, timedelta

from django.db import connection, transaction
from django.utils import timezone

from crm.clock import business_day_end, business_today
from crm.metrics import pipeline_generic, pipeline_postgres
from crm.metrics.compute import WarmStart
from crm.metrics.lifecycle import Thresholds
from crm.metrics.notes import note, notes_store
from crm.metrics.schedule import TASK_NAME as METRICS_TASK
from crm.models.metrics import CustomerMetrics, LifecycleSettings, MetricsRun
from crm.services.leases import (
    Lease,
    LeaseLost,
    lease_claim,
    lease_kept,
    lease_release,
    leased_job_register,
    leased_job_resume_task,
)
from crm.task_queue import task_queue_on_commit

logger = logging.getLogger(__name__)

# pg_advisory_xact_lock key: two computations (the nightly one and one started by hand) queue up
# instead of interleaving their writes. Any fixed bigint unique to this job will do.
_ADVISORY_LOCK_KEY = 0x6D65747269637321  # "metrics!"


def metrics_cutoff(as_of: date) -> datetime:
    """The instant up to which orders count for `as_of`: the end of that day in the business time zone
    (for Asia/Shanghai, 16:00 UTC on `as_of`)."""
    return business_day_end(as_of)


def _previous_fit() -> WarmStart:
    run = (
        MetricsRun.objects.filter(status=MetricsRun.Status.DONE, bgnbd_r__isnull=False)
        .order_by("-started_at")
        .first()
    )
    if run is None:
        return WarmStart()
    gamma_gamma = None if run.gg_p is None else (run.gg_p, run.gg_q, run.gg_gamma)
    return WarmStart(bgnbd=(run.bgnbd_r, run.bgnbd_alpha, run.bgnbd_a, run.bgnbd_b), gamma_gamma=gamma_gamma)


def _metrics_vacuum() -> float | None:
    """VACUUM (ANALYZE) the metrics table after a computation rewrote it; returns the seconds it took.

    Every row was rewritten, so no page of the table is "all visible" any more: segment conditions on the
    lifecycle stage or the RFM segment, which read covering indexes alone (migration crm/0010), would
    fetch every matching row from the table until autovacuum got there (see BENCHMARKS.md, segment
    counts).
    PostgreSQL only, and only outside a transaction (VACUUM cannot run inside one)."""
    if connection.vendor != "postgresql" or connection.in_atomic_block:
        return None
    started = time.monotonic()
    with connection.cursor() as cursor:
        cursor.execute(f"VACUUM (ANALYZE) {connection.ops.quote_name(CustomerMetrics._meta.db_table)}")
    return time.monotonic() - started


def metrics_compute(
    *,
    as_of: date | None = None,
    now: datetime | None = None,
    pipeline: str | None = None,
) -> MetricsRun:
    """Compute and store the metrics of every customer as of `as_of` (default: today in the business time
    zone), counting the orders placed up to the end of that business day, and record every lifecycle-stage change as a
    `lifecycle_stage_changed` behaviour event.

    The first computation ever (an empty metrics table) sets the baseline and announces no changes; a
    computation for a date earlier than a customer's stored one rewrites the row without an event.
    `pipeline` ("postgres" or "generic") defaults to the database's own."""
    now = now or timezone.now()
    today = business_today(now)
    as_of = as_of or today
    if as_of > today:
        raise ValueError(f"as_of {as_of} is in the future")
    if pipeline is None:
        pipeline = "postgres" if connection.vendor == "postgresql" else "generic"
    runner = {"postgres": pipeline_postgres.run, "generic": pipeline_generic.run}[pipeline]

    run = MetricsRun.objects.create(as_of=as_of, started_at=now, status=MetricsRun.Status.RUNNING)
    lease = lease_claim(queryset=_metrics_runs_active(), pk=run.pk)
    return _metrics_run(run=run, lease=lease, now=now, runner=runner)


def _metrics_runs_active():
    return MetricsRun.objects.filter(status=MetricsRun.Status.RUNNING)


# What a finished run writes to its row (with the end of its lease), in the computation's transaction.
_RUN_RESULT_FIELDS = [
    "status", "customers", "buyers", "repeat_buyers", "stage_changes", "timings", "message",
    "bgnbd_r", "bgnbd_alpha", "bgnbd_a", "bgnbd_b", "bgnbd_log_likelihood", "bgnbd_converged",
    "gg_p", "gg_q", "gg_gamma", "gg_log_likelihood", "gg_converged", "duration_seconds", "finished_at",
]  # fmt: skip


def _metrics_run(*, run: MetricsRun, lease: Lease, now: datetime, runner) -> MetricsRun:
    as_of = run.as_of
    cutoff = metrics_cutoff(as_of)
    started = time.monotonic()
    # The keeper outlives the transaction: its heartbeat may wait for the row lock the final write takes,
    # and stopping it inside the transaction would wait for that heartbeat forever.
    with lease_kept(lease) as keeper:
        try:
            with transaction.atomic():
                if connection.vendor == "postgresql":
                    with connection.cursor() as cursor:
                        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_ADVISORY_LOCK_KEY])
                thresholds = Thresholds.from_settings(LifecycleSettings.load())
                baseline = not CustomerMetrics.objects.exists()
                output = runner(
                    as_of=as_of,
                    cutoff=cutoff,
                    now=now,
                    thresholds=thresholds,
                    warm_start=_previous_fit(),
                    emit_events=not baseline,
                )
                result = output.result
                run.status = MetricsRun.Status.DONE
                run.customers = output.customers
                run.buyers = len(result.scores.customer_id)
                run.repeat_buyers = result.repeat_buyers
                run.stage_changes = output.stage_changes
                run.timings = output.timings
                notes = list(result.notes)
                if baseline:
                    notes.append(note("baseline"))
                notes.append(note("fallback_cycle", days=f"{result.fallback_cycle_days:.1f}"))
                run.message = notes_store(notes)
                if result.bgnbd is not None:
                    bg = result.bgnbd
                    run.bgnbd_r, run.bgnbd_alpha, run.bgnbd_a, run.bgnbd_b = bg.r, bg.alpha, bg.a, bg.b
                    run.bgnbd_log_likelihood, run.bgnbd_converged = bg.log_likelihood, bg.converged
                if result.gamma_gamma is not None:
                    gg = result.gamma_gamma
                    run.gg_p, run.gg_q, run.gg_gamma = gg.p, gg.q, gg.gamma
                    run.gg_log_likelihood, run.gg_converged = gg.log_likelihood, gg.converged
                run.duration_seconds = round(time.monotonic() - started, 3)
                run.finished_at = now + timedelta(seconds=run.duration_seconds)
                keeper.check()
                # Conditional on the lease: a run that was taken over rolls its whole computation back.
                lease_release(lease=lease, values={name: getattr(run, name) for name in _RUN_RESULT_FIELDS})
        except LeaseLost:
            logger.warning("metrics run taken over by another worker; rolled back", extra={"run": run.pk})
            run.refresh_from_db()
            return run
        except Exception as exc:
            try:
                lease_release(
                    lease=lease,
                    values={
                        "status": MetricsRun.Status.FAILED,
                        "message": notes_store([note("failed", error=f"{type(exc).__name__}: {exc}"[:2000])]),
                        "duration_seconds": round(time.monotonic() - started, 3),
                    },
                )
            except LeaseLost:
                pass
            logger.exception("metrics computation failed", extra={"as_of": as_of.isoformat()})
            raise
    run.lease_token = run.lease_expires_at = None  # released with the result
    vacuum_seconds = _metrics_vacuum()
    if vacuum_seconds is not None:
        run.timings = {**(run.timings or {}), "vacuum": round(vacuum_seconds, 3)}
        MetricsRun.objects.filter(pk=run.pk).update(timings=run.timings)
    logger.info(
        "metrics computed",
        extra={
            "as_of": as_of.isoformat(),
            "customers": run.customers,
            "stage_changes": run.stage_changes,
            "seconds": run.duration_seconds,
        },
    )
    return run


def metrics_run_resume(*, run_id: int, pipeline: str | None = None) -> MetricsRun:
    """Compute again, as of the same date, a run whose worker died (the reaper queues this); a run that
    is over, or that a live worker holds, is left alone."""
    lease = lease_claim(queryset=_metrics_runs_active(), pk=run_id)
    run = MetricsRun.objects.get(pk=run_id)
    if lease is None:
        return run
    newer = MetricsRun.objects.filter(
        status=MetricsRun.Status.DONE, as_of__gte=run.as_of, started_at__gt=run.started_at
    )
    if newer.exists():
        # A later run already stored newer metrics: computing this older date again would rewrite them.
        lease_release(
            lease=lease, values={"status": MetricsRun.Status.FAILED, "message": "interrupted; superseded"}
        )
        run.refresh_from_db()
        return run
    if pipeline is None:
        pipeline = "postgres" if connection.vendor == "postgresql" else "generic"
    runner = {"postgres": pipeline_postgres.run, "generic": pipeline_generic.run}[pipeline]
    return _metrics_run(run=run, lease=lease, now=timezone.now(), runner=runner)


METRICS_RESUME_TASK = "crm.metrics.resume_metrics_run"


def metrics_runs_reaper_register() -> None:
    """Let the lease reaper resume metrics runs whose worker died (crm's AppConfig.ready calls this)."""
    leased_job_register(
        name="crm.metricsrun", active=_metrics_runs_active, resume=leased_job_resume_task(METRICS_RESUME_TASK)
    )


def lifecycle_settings_save(*, settings: LifecycleSettings, recompute: bool = False) -> None:
    """Save the lifecycle thresholds; with `recompute`, queue a computation of every customer's metrics
    once they are committed, so the worker reads the new thresholds."""
    settings.save()
    if recompute:
        task_queue_on_commit(METRICS_TASK)


def metrics_history_months(*, today: date, months: int) -> list[date]:
    """The last day of each of the `months` months before `today`'s, oldest first."""
    ends = []
    first_of_month = today.replace(day=1)
    for _ in range(months):
        end = first_of_month - timedelta(days=1)
        ends.append(end)
        first_of_month = end.replace(day=1)
    return ends[::-1]


def metrics_compute_with_history(
    *, months: int, now: datetime | None = None, progress=None
) -> list[MetricsRun]:
    """The first computation of an install whose orders go back in time (the demo, an imported order
    history): compute as of the end of each of the last `months` months, oldest first, then today.

    The oldest run is the baseline; each later one records the stage changes since the one before as
    `lifecycle_stage_changed` events dated at their month's end, so the lifecycle chart shows a history
    that begins when it was computed from instead of today's stages copied back over every month.
    Refused once metrics exist: a computation for an earlier date than the stored one writes no events,
    so a history can only be built from an empty table. `progress(done, total, run)` is told after each run."""
    now = now or timezone.now()
    if CustomerMetrics.objects.exists():
        raise ValueError("metrics were already computed; a history can only be built on an empty table")
    days = [*metrics_history_months(today=business_today(now), months=months), None]
    runs = []
    for done, as_of in enumerate(days, start=1):
        # Each run at its own `now`: the latest run is the one started last (metrics_latest_run).
        run = metrics_compute(as_of=as_of)
        runs.append(run)
        if progress is not None:
            progress(done, len(days), run)
    return runs
