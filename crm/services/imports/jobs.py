"""Import jobs: an upload in the admin becomes an ImportJob the worker runs, with its progress written
after each batch.

The worker that runs a job holds its lease (crm/services/leases.py): if that worker is killed, the
reaper queues the job again once the lease lapses and the next worker runs it from the start, which the
idempotent import turns into "unchanged" for the rows already stored. Every write to the job's row is
conditional on the lease, and each batch commits with its progress write, so a worker that stalled past
its lease and was taken over writes no further batch: not even the one it was writing."""

from __future__ import annotations

import json
import logging
from datetime import timedelta

from django.conf import settings
from django.db import connection, connections
from django.db.models import Q
from django.db.models.functions import Now
from django.utils import timezone
from django.utils.translation import gettext_noop

from crm.models import (
    ImportJob,
)
from crm.services.imports.customers import customers_import
from crm.services.imports.messages import message
from crm.services.imports.orders import orders_import
from crm.services.imports.report import ImportFileError, ImportReport
from crm.services.leases import (
    Lease,
    LeaseKeeper,
    LeaseLost,
    lease_claim,
    lease_kept,
    lease_pickup_deadline,
    lease_release,
    lease_write,
    leased_job_register,
    leased_job_resume_task,
)
from crm.task_queue import task_queue_on_commit

logger = logging.getLogger(__name__)

IMPORTERS = {ImportJob.Kind.ORDERS: orders_import, ImportJob.Kind.CUSTOMERS: customers_import}
ACTIVE_STATUSES = (ImportJob.Status.QUEUED, ImportJob.Status.RUNNING)


def import_jobs_active():
    """The jobs still to be run: queued, or running (possibly on a worker that died)."""
    return ImportJob.objects.filter(status__in=ACTIVE_STATUSES)


class _JobProgress:
    """Writes a job's progress after each batch, in the batch's transaction, while the job's lease is
    still this worker's: otherwise it raises LeaseLost, which rolls that batch back and stops the import
    (see `_run_batches`). The heartbeat's `check()` alone would leave a window: a lease taken over after
    the check and before the batch commits. A dry run holds one open
    transaction on the default connection, so on PostgreSQL its progress goes through a second,
    autocommit connection (SQLite would wait for its own write lock: there the progress of a dry run
    shows only at the end)."""

    def __init__(self, job: ImportJob, lease: Lease, keeper: LeaseKeeper):
        self.job = job
        self.lease = lease
        self.keeper = keeper
        self.side = None
        # Inside the caller's transaction the side connection cannot see the job (nor can anyone take
        # it over before that commits): there a missing row is no sign of a lost lease.
        self.fenced = not connection.in_atomic_block
        if job.dry_run and connection.vendor == "postgresql":
            self.side = connections.create_connection("default")

    def __call__(self, report: ImportReport) -> None:
        self.keeper.check()
        values = _job_values(report)
        if self.side is None:
            if not self.job.dry_run:
                lease_write(lease=self.lease, values=values)
            return
        values["errors"] = json.dumps(values["errors"])
        columns = ", ".join(f"{name} = %s" for name in values)
        with self.side.cursor() as cursor:
            cursor.execute(
                f"UPDATE crm_importjob SET {columns} WHERE id = %s AND lease_token = %s",
                [*values.values(), self.job.pk, self.lease.token],
            )
            if not cursor.rowcount and self.fenced:
                raise LeaseLost(self.lease)

    def close(self) -> None:
        if self.side is not None:
            self.side.close()


def _job_values(report: ImportReport) -> dict:
    return {
        "total_rows": report.total_rows,
        "processed_rows": report.processed_rows,
        "created_count": report.created,
        "updated_count": report.updated,
        "unchanged_count": report.unchanged,
        "error_count": report.error_count,
        "errors": [e.as_dict() for e in report.errors],
    }


def import_job_run(*, job_id: int) -> ImportJob:
    """Run a queued ImportJob (the Celery task calls this). Only the worker that claims the job's lease
    runs it: a job that is over, or that another live worker runs, is left alone, so a redelivered or
    doubled message does no harm. A job whose worker died (its lease lapsed) is claimed again and runs
    from the start, which the idempotent import turns into "unchanged" for the rows already stored."""
    lease = lease_claim(
        queryset=import_jobs_active(),
        pk=job_id,
        values={
            "status": ImportJob.Status.RUNNING,
            "message": "",
            "outcome": [],
            "finished_at": None,
            **_job_values(ImportReport(kind="")),
        },
    )
    job = ImportJob.objects.get(pk=job_id)
    if lease is None:
        return job
    with lease_kept(lease) as keeper:
        progress = _JobProgress(job, lease, keeper)
        try:
            report = IMPORTERS[job.kind](
                source=job.file, dry_run=job.dry_run, source_label=f"import job {job.pk}", progress=progress
            )
        except LeaseLost:
            logger.warning("import job taken over by another worker; stopping", extra={"job": job.pk})
            job.refresh_from_db()
            return job
        except ImportFileError as exc:
            _job_finish(lease, status=ImportJob.Status.FAILED, outcome=[exc.msg.as_dict()])
        except Exception as exc:
            _job_finish(
                lease,
                status=ImportJob.Status.FAILED,
                outcome=[
                    message(
                        gettext_noop(
                            "The import stopped unexpectedly: %(error)s. Rows already imported are kept; run it again."
                        ),
                        error=str(exc),
                    ).as_dict()
                ],
            )
            raise
        else:
            _job_finish(
                lease,
                status=ImportJob.Status.DONE,
                outcome=[m.as_dict() for m in report.summary_messages()],
                **_job_values(report),
            )
        finally:
            progress.close()
    job.refresh_from_db()
    return job


def _job_finish(lease: Lease, **values) -> None:
    try:
        lease_release(lease=lease, values={**values, "finished_at": timezone.now()})
    except LeaseLost:
        logger.warning(
            "import job taken over by another worker; its result is theirs", extra={"job": lease.pk}
        )


IMPORT_JOB_TASK = "crm.tasks.import_job_run"


def import_job_submit(*, job: ImportJob, created_by) -> ImportJob:
    """Store a new upload's job (the unsaved row the admin form built, with its file) and queue its run
    once committed: the worker must find the job row and the stored file when the task arrives."""
    job.original_name = job.file.name[:255]
    job.created_by = created_by
    job.status = ImportJob.Status.QUEUED
    job.lease_expires_at = timezone.now() + timedelta(seconds=settings.JOB_PICKUP_SECONDS)
    job.save()
    task_queue_on_commit(IMPORT_JOB_TASK, job.pk)
    return job


def import_jobs_requeue(*, jobs) -> list[ImportJob]:
    """Queue the jobs again: those that are over run again from the start, and those whose worker died
    (lease lapsed) are resumed. A job that a live worker is running is left alone. Returns those queued."""
    queued = []
    for job in jobs:
        # One conditional UPDATE per job, so a job that a worker claims meanwhile is not queued twice.
        requeued = (
            ImportJob.objects.filter(pk=job.pk)
            .exclude(
                Q(status=ImportJob.Status.RUNNING, lease_token__isnull=False, lease_expires_at__gte=Now())
            )
            .update(
                status=ImportJob.Status.QUEUED,
                finished_at=None,
                lease_token=None,
                lease_holder="",
                lease_expires_at=lease_pickup_deadline(),
            )
        )
        if requeued:
            task_queue_on_commit(IMPORT_JOB_TASK, job.pk)
            queued.append(job)
    return queued


def import_jobs_reaper_register() -> None:
    """Let the lease reaper resume import jobs whose worker died (crm's AppConfig.ready calls this)."""
    leased_job_register(
        name="crm.importjob", active=import_jobs_active, resume=leased_job_resume_task(IMPORT_JOB_TASK)
    )
