"""Import jobs: an upload in the admin becomes an ImportJob the worker runs, with its progress written
after each batch."""

from __future__ import annotations

import json

from django.db import connection, connections
from django.utils import timezone
from django.utils.translation import gettext_noop

from crm.models import (
    ImportJob,
)
from crm.services.imports.customers import customers_import
from crm.services.imports.messages import message
from crm.services.imports.orders import orders_import
from crm.services.imports.report import ImportFileError, ImportReport
from crm.task_queue import task_queue_on_commit

IMPORTERS = {ImportJob.Kind.ORDERS: orders_import, ImportJob.Kind.CUSTOMERS: customers_import}


class _JobProgress:
    """Writes a job's progress after each batch. A dry run holds one open transaction on the default
    connection, so on PostgreSQL its progress goes through a second, autocommit connection (SQLite
    would wait for its own write lock: there the progress of a dry run shows only at the end)."""

    def __init__(self, job: ImportJob):
        self.job = job
        self.side = None
        if job.dry_run and connection.vendor == "postgresql":
            self.side = connections.create_connection("default")

    def __call__(self, report: ImportReport) -> None:
        values = _job_values(report)
        if self.side is None:
            if not self.job.dry_run:
                ImportJob.objects.filter(pk=self.job.pk).update(**values)
            return
        values["errors"] = json.dumps(values["errors"])
        columns = ", ".join(f"{name} = %s" for name in values)
        with self.side.cursor() as cursor:
            cursor.execute(
                f"UPDATE crm_importjob SET {columns} WHERE id = %s", [*values.values(), self.job.pk]
            )

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
    """Run a queued ImportJob (the Celery task calls this). A job that is already done is left alone, so a
    redelivered task does no harm; a job interrupted half-way runs again from the start, which the
    idempotent import turns into "unchanged" for the rows already stored."""
    job = ImportJob.objects.get(pk=job_id)
    if job.status == ImportJob.Status.DONE:
        return job
    ImportJob.objects.filter(pk=job.pk).update(
        status=ImportJob.Status.RUNNING,
        message="",
        outcome=[],
        finished_at=None,
        **_job_values(ImportReport(kind=job.kind)),
    )
    progress = _JobProgress(job)
    try:
        report = IMPORTERS[job.kind](
            source=job.file, dry_run=job.dry_run, source_label=f"import job {job.pk}", progress=progress
        )
    except ImportFileError as exc:
        ImportJob.objects.filter(pk=job.pk).update(
            status=ImportJob.Status.FAILED, outcome=[exc.msg.as_dict()], finished_at=timezone.now()
        )
    except Exception as exc:
        ImportJob.objects.filter(pk=job.pk).update(
            status=ImportJob.Status.FAILED,
            outcome=[
                message(
                    gettext_noop(
                        "The import stopped unexpectedly: %(error)s. Rows already imported are kept; run it again."
                    ),
                    error=str(exc),
                ).as_dict()
            ],
            finished_at=timezone.now(),
        )
        raise
    else:
        ImportJob.objects.filter(pk=job.pk).update(
            status=ImportJob.Status.DONE,
            outcome=[m.as_dict() for m in report.summary_messages()],
            finished_at=timezone.now(),
            **_job_values(report),
        )
    finally:
        progress.close()
    job.refresh_from_db()
    return job


IMPORT_JOB_TASK = "crm.tasks.import_job_run"


def import_job_submit(*, job: ImportJob, created_by) -> ImportJob:
    """Store a new upload's job (the unsaved row the admin form built, with its file) and queue its run
    once committed: the worker must find the job row and the stored file when the task arrives."""
    job.original_name = job.file.name[:255]
    job.created_by = created_by
    job.status = ImportJob.Status.QUEUED
    job.save()
    task_queue_on_commit(IMPORT_JOB_TASK, job.pk)
    return job


def import_jobs_requeue(*, jobs) -> list[ImportJob]:
    """Queue the jobs again (a job that is running is left alone); returns those queued."""
    queued = [job for job in jobs if job.status != ImportJob.Status.RUNNING]
    for job in queued:
        ImportJob.objects.filter(pk=job.pk).update(status=ImportJob.Status.QUEUED, finished_at=None)
        task_queue_on_commit(IMPORT_JOB_TASK, job.pk)
    return queued
