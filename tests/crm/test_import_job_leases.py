"""Import jobs hold a lease: a job a live worker runs is left alone by a second message, one whose worker
died is resumed (by the reaper, a redelivered message or the admin), and a worker whose job was taken
over stops writing. The real kill test is tests/integration/test_worker_killed.py."""

from datetime import timedelta

import pytest
from django.conf import settings
from django.core.files.base import ContentFile
from django.db.models.functions import Now
from django.urls import reverse

from crm import tasks as crm_tasks
from crm.models import ImportJob, MetricsRun, Order
from crm.schedule import REAP_TASK
from crm.services import leases
from crm.services.imports import jobs as import_jobs
from crm.services.imports import orders_import
from crm.services.imports.jobs import import_job_run
from crm.services.leases import lease_claim, leases_reap

pytestmark = pytest.mark.django_db

ORDERS = (
    "customer_external_id,order_external_id,ordered_at,amount,sku\n"
    "C-1,TM-1,2026-03-08 20:15:00,199.00,A\n"
    "C-2,TM-2,2026-03-08 20:15:00,99.00,A\n"
    "C-3,TM-3,2026-03-09 20:15:00,99.00,B\n"
)
HOUR = timedelta(hours=1)


@pytest.fixture(autouse=True)
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"


@pytest.fixture
def queued(monkeypatch):
    ids = []
    monkeypatch.setattr(crm_tasks.import_job_run, "delay", lambda job_id: ids.append(job_id))
    return ids


def job_for(**values) -> ImportJob:
    job = ImportJob(kind=ImportJob.Kind.ORDERS, original_name="orders.csv", **values)
    job.file.save("orders.csv", ContentFile(ORDERS.encode()), save=False)
    job.save()
    return job


def running_elsewhere(job: ImportJob, *, lapsed: bool):
    lease = lease_claim(queryset=import_jobs.import_jobs_active(), pk=job.pk, values={"status": "running"})
    if lapsed:
        ImportJob.objects.filter(pk=job.pk).update(lease_expires_at=Now() - timedelta(seconds=1))
    return lease


def test_a_job_a_live_worker_runs_is_left_alone_by_a_second_message():
    job = job_for()
    lease = running_elsewhere(job, lapsed=False)

    job = import_job_run(job_id=job.pk)

    assert (job.status, job.lease_token, job.lease_claims) == ("running", lease.token, 1)
    assert not Order.objects.exists()


def test_a_job_whose_worker_died_is_run_again_to_the_end_by_the_next_message():
    job = job_for()
    running_elsewhere(job, lapsed=True)

    job = import_job_run(job_id=job.pk)

    assert (job.status, job.lease_token, job.lease_expires_at, job.lease_claims) == ("done", None, None, 2)
    assert Order.objects.count() == 3


def test_a_worker_whose_job_was_taken_over_stops_after_the_batch_in_flight_and_writes_no_result(monkeypatch):
    job = job_for()
    taken_over = []

    def importer(*, progress, **kwargs):
        def progress_then_lose_the_lease(report):
            progress(report)
            if not taken_over:  # another worker takes the job over after this one's first batch
                ImportJob.objects.filter(pk=job.pk).update(lease_expires_at=Now() - timedelta(seconds=1))
                taken_over.append(lease_claim(queryset=import_jobs.import_jobs_active(), pk=job.pk))

        return orders_import(batch_rows=1, progress=progress_then_lose_the_lease, **kwargs)

    monkeypatch.setitem(import_jobs.IMPORTERS, ImportJob.Kind.ORDERS, importer)

    job = import_job_run(job_id=job.pk)

    # The lease is checked after each batch: the worker that lost it writes at most the one batch it had
    # started (harmless, the import is idempotent) and then neither its progress nor its result.
    assert Order.objects.count() == 2
    assert job.status == "running" and job.lease_token == taken_over[0].token
    assert job.processed_rows == 1 and job.finished_at is None


def test_the_reaper_queues_a_killed_import_again_once_and_the_job_finishes(
    queued, django_capture_on_commit_callbacks
):
    job = job_for()
    running_elsewhere(job, lapsed=True)
    alive = job_for()
    running_elsewhere(alive, lapsed=False)

    with django_capture_on_commit_callbacks(execute=True):
        result = leases_reap()

    assert queued == [job.pk] and result.resumed["crm.importjob"] == [job.pk]
    assert import_job_run(job_id=job.pk).status == "done"


def test_run_again_resumes_a_job_whose_worker_died_and_leaves_a_live_one_alone(
    admin_client, queued, django_capture_on_commit_callbacks
):
    dead = job_for()
    running_elsewhere(dead, lapsed=True)
    alive = job_for()
    running_elsewhere(alive, lapsed=False)
    done = import_job_run(job_id=job_for().pk)

    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            reverse("admin:crm_importjob_changelist"),
            {"action": "run_again", "_selected_action": [dead.pk, alive.pk, done.pk]},
            follow=True,
        )

    assert sorted(queued) == sorted([dead.pk, done.pk])
    html = response.content.decode()
    assert "2 imports queued again." in html
    assert "1 import is running on a live worker and was left alone." in html
    dead.refresh_from_db()
    assert (dead.status, dead.lease_token) == ("queued", None)
    assert import_job_run(job_id=dead.pk).status == "done"


def test_the_job_page_says_when_a_job_s_worker_stopped_answering(admin_client):
    job = job_for()
    running_elsewhere(job, lapsed=False)
    page = admin_client.get(reverse("admin:crm_importjob_change", args=[job.pk])).content.decode()
    assert "Running on " in page

    ImportJob.objects.filter(pk=job.pk).update(lease_expires_at=Now() - timedelta(seconds=1))
    page = admin_client.get(reverse("admin:crm_importjob_change", args=[job.pk])).content.decode()
    assert "the job will be resumed by the next worker" in page


def test_the_reaper_runs_from_beat_and_knows_the_import_and_metrics_jobs():
    entry = settings.CELERY_BEAT_SCHEDULE["crm-leases-reap"]
    assert entry == {"task": REAP_TASK, "schedule": settings.LEASE_REAP_SECONDS}
    assert {"crm.importjob", "crm.metricsrun"} <= set(leases._LEASED_JOBS)
    assert crm_tasks.leases_reap.name == REAP_TASK


def test_a_metrics_run_whose_worker_died_is_computed_again_as_of_its_date(
    monkeypatch, django_capture_on_commit_callbacks
):
    from crm.metrics import tasks as metrics_tasks
    from crm.services.metrics import metrics_compute, metrics_run_resume

    done = metrics_compute()
    killed = MetricsRun.objects.create(as_of=done.as_of, status=MetricsRun.Status.RUNNING)
    lease_claim(queryset=MetricsRun.objects.filter(status="running"), pk=killed.pk)
    MetricsRun.objects.filter(pk=killed.pk).update(lease_expires_at=Now() - timedelta(seconds=1))
    queued = []
    monkeypatch.setattr(metrics_tasks.resume_metrics_run, "delay", queued.append)

    with django_capture_on_commit_callbacks(execute=True):
        leases_reap()
    assert queued == [killed.pk]

    run = metrics_run_resume(run_id=killed.pk)
    assert (run.status, run.as_of, run.lease_token, run.lease_claims) == ("done", done.as_of, None, 2)
    assert metrics_run_resume(run_id=killed.pk).status == "done"  # a second message does nothing


def test_an_older_metrics_run_is_not_resumed_over_newer_metrics():
    from crm.services.metrics import metrics_compute, metrics_run_resume

    killed = MetricsRun.objects.create(as_of=metrics_compute().as_of - timedelta(days=1), status="running")
    MetricsRun.objects.filter(pk=killed.pk).update(started_at=Now() - HOUR)
    metrics_compute()

    assert metrics_run_resume(run_id=killed.pk).status == "failed"
