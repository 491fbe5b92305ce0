"""Import jobs hold a lease: a job a live worker runs is left alone by a second message, one whose worker
died is resumed (by the reaper, a redelivered message or the admin), and a worker whose job was taken
over stops writing. The real kill test is tests/integration/test_worker_killed.py."""

import threading
import time
from datetime import timedelta

import pytest
from django.conf import settings
from django.core.files.base import ContentFile
from django.db import connection, transaction
from django.db.models.functions import Now
from django.urls import reverse

from crm import tasks as crm_tasks
from crm.models import Customer, ImportJob, MetricsRun, Order
from crm.schedule import REAP_TASK
from crm.services import leases
from crm.services.imports import customers_import, orders_import
from crm.services.imports import jobs as import_jobs
from crm.services.imports.jobs import import_job_run
from crm.services.leases import lease_claim, leases_reap
from tests.factories import CustomerFactory

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


def test_a_worker_whose_job_was_taken_over_writes_not_even_the_batch_in_flight_nor_a_result(monkeypatch):
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

    # The lease is checked in each batch's transaction: the worker that lost it has its batch in flight
    # rolled back and writes neither its progress nor its result.
    assert Order.objects.count() == 1
    assert job.status == "running" and job.lease_token == taken_over[0].token
    assert job.processed_rows == 1 and job.finished_at is None


CUSTOMERS = "external_id,name\n" + "".join(f"C-{n},新名字 {n}\n" for n in range(1, 7))


def _lock_waits() -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        return cursor.fetchone()[0]


def _until(condition, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}", pytrace=False)
        time.sleep(0.05)


@pytest.mark.django_db(transaction=True)
def test_a_worker_that_loses_its_lease_while_writing_a_batch_rolls_it_back_and_the_taker_over_imports_every_row_once(
    monkeypatch, settings, caplog
):
    """Given a customer import in batches of two, whose worker A stalls in its second batch (on a row lock
    the test holds), when A's lease lapses and worker B claims the job and stalls in the same place
    behind A, then A, let go first, finds at its batch's commit that the lease is B's and rolls the batch
    back; B writes it and the third batch, and every row is imported once, by A (batch 1) or by B."""
    # A heartbeat every 200 s: during the test only the check in the batch's transaction can see the
    # lease gone, as when the takeover falls between a heartbeat and the commit.
    settings.JOB_LEASE_SECONDS = 600
    monkeypatch.setitem(
        import_jobs.IMPORTERS,
        ImportJob.Kind.CUSTOMERS,
        lambda **kwargs: customers_import(batch_rows=2, **kwargs),
    )
    CustomerFactory(external_id="C-3", name="旧名字")  # in batch 2: locked FOR UPDATE by the import
    job = ImportJob(kind=ImportJob.Kind.CUSTOMERS, original_name="customers.csv")
    job.file.save("customers.csv", ContentFile(CUSTOMERS.encode()), save=False)
    job.save()

    locked, release = threading.Event(), threading.Event()

    def hold_c3():
        try:
            with transaction.atomic():
                list(Customer.objects.select_for_update().filter(external_id="C-3"))
                locked.set()
                release.wait(120)
        finally:
            connection.close()

    results = {}

    def worker(name):
        try:
            results[name] = import_job_run(job_id=job.pk)
        except Exception as exc:  # noqa: BLE001 - asserted below
            results[name] = exc
        finally:
            connection.close()

    holder = threading.Thread(target=hold_c3)
    holder.start()
    locked.wait(30)
    a = threading.Thread(target=worker, args=("A",))
    a.start()
    _until(lambda: _lock_waits() == 1, "worker A to wait on C-3 in its second batch")
    job.refresh_from_db()
    assert job.processed_rows == 2  # A's first batch is in

    ImportJob.objects.filter(pk=job.pk).update(lease_expires_at=Now() - timedelta(seconds=1))
    b = threading.Thread(target=worker, args=("B",))
    b.start()
    _until(lambda: _lock_waits() == 2, "worker B to wait on C-3 behind A")
    release.set()  # PostgreSQL grants the row to A first: A waited first
    for thread in (holder, a, b):
        thread.join(120)

    assert not any(isinstance(r, Exception) for r in results.values()), results
    assert "import job taken over by another worker; stopping" in caplog.text
    job.refresh_from_db()
    assert (job.status, job.lease_claims, job.lease_token) == ("done", 2, None)
    # B's own counts: A's first batch unchanged, and A's second batch not written by A.
    assert (job.unchanged_count, job.updated_count, job.created_count) == (2, 1, 3)
    assert sorted(Customer.objects.values_list("external_id", flat=True)) == [f"C-{n}" for n in range(1, 7)]
    assert Customer.objects.get(external_id="C-3").name == "新名字 3"


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
