"""Celery tasks of the customer metrics: thin, they call `crm.services.metrics.metrics_compute`.

crm/tasks.py imports this module so that the worker registers the task; config/settings.py merges
METRICS_BEAT_SCHEDULE into CELERY_BEAT_SCHEDULE."""

from __future__ import annotations

from datetime import date

from celery import shared_task
from django.db import OperationalError

from crm.metrics.schedule import METRICS_BEAT_SCHEDULE, TASK_NAME
from crm.services.metrics import METRICS_RESUME_TASK, metrics_compute, metrics_run_resume

__all__ = ["METRICS_BEAT_SCHEDULE", "compute_metrics", "resume_metrics_run"]


@shared_task(
    name=TASK_NAME,
    ignore_result=True,
    autoretry_for=(OperationalError,),
    retry_backoff=60,
    max_retries=3,
    # At a million customers a run takes about a minute; anything near this is stuck, not slow.
    soft_time_limit=1200,
    time_limit=1500,
)
def compute_metrics(as_of: str | None = None) -> int:
    """Compute every customer's metrics as of `as_of` (ISO date; default today in the business time zone). Safe to retry:
    a second run for the same date finds the stages already stored and announces nothing twice."""
    run = metrics_compute(as_of=date.fromisoformat(as_of) if as_of else None)
    return run.pk


@shared_task(
    name=METRICS_RESUME_TASK,
    ignore_result=True,
    autoretry_for=(OperationalError,),
    retry_backoff=60,
    max_retries=3,
    soft_time_limit=1200,
    time_limit=1500,
)
def resume_metrics_run(run_id: int) -> int:
    """Compute again a run whose worker died (the lease reaper queues this); harmless when it is over."""
    return metrics_run_resume(run_id=run_id).pk
