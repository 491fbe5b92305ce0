"""Thin Celery tasks: take ids, call one service."""

from celery import shared_task
from django.utils import timezone

from crm.models import Heartbeat
from crm.services import imports, leases


@shared_task(name="crm.tasks.beat_heartbeat", ignore_result=True)
def beat_heartbeat() -> None:
    Heartbeat.objects.update_or_create(name="beat", defaults={"beat_at": timezone.now()})


@shared_task(name="crm.tasks.import_job_run", ignore_result=True)
def import_job_run(job_id: int) -> None:
    """Run an uploaded CSV import. Redelivery is harmless: only the holder of the job's lease runs it, and
    the import is idempotent (see the service)."""
    imports.import_job_run(job_id=job_id)


@shared_task(name="crm.tasks.leases_reap", ignore_result=True)
def leases_reap() -> None:
    """Queue again the long jobs whose lease lapsed (their worker died); beat runs it (crm/schedule.py)."""
    leases.leases_reap()


# Celery's autodiscovery imports only `crm.tasks`; the tasks of crm's sub-packages register from here.
from crm.analytics import tasks as analytics_tasks  # noqa: E402, F401
from crm.metrics import tasks as metrics_tasks  # noqa: E402, F401
from crm.recommendations import tasks as recommendations_tasks  # noqa: E402, F401
