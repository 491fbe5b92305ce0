"""ImportJob: the admin upload queues it, the service runs it and records progress, counts and errors."""

import pytest
from django.core.files.base import ContentFile
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from django.utils import translation

from crm import tasks as crm_tasks
from crm.models import Customer, ImportJob, Order
from crm.services.imports import import_job_run
from crm.services.imports.messages import messages_text

pytestmark = pytest.mark.django_db

ORDERS = (
    "customer_external_id,order_external_id,ordered_at,amount,sku\n"
    "C-1,TM-1,2026-03-08 20:15:00,199.00,A\n"
    "C-1,TM-2,2026-03-08 20:15:00,-1,A\n"
    "C-2,TM-3,2026-03-09 20:15:00,99.00,B\n"
)


@pytest.fixture(autouse=True)
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"


@pytest.fixture(autouse=True)
def english_after():
    """The admin pages asked for in zh-hans leave the thread's language active: put it back."""
    yield
    translation.activate("en")


def job_for(content: str, kind=ImportJob.Kind.ORDERS, **kwargs) -> ImportJob:
    job = ImportJob(kind=kind, original_name="orders.csv", **kwargs)
    job.file.save("orders.csv", ContentFile(content.encode()), save=False)
    job.save()
    return job


def test_job_runs_to_done_with_counts_errors_and_summary():
    job = job_for(ORDERS)

    job = import_job_run(job_id=job.pk)

    assert job.status == ImportJob.Status.DONE and job.finished_at
    assert (job.total_rows, job.processed_rows) == (3, 3)
    assert (job.created_count, job.unchanged_count, job.error_count) == (2, 0, 1)
    assert job.errors == [
        {"line": 3, "field": "amount", "msgid": "The amount cannot be negative.", "params": {}}
    ]
    assert "Orders created: 2," in messages_text(job.outcome)
    assert Order.objects.count() == 2


def test_done_job_is_not_run_twice():
    job = import_job_run(job_id=job_for(ORDERS).pk)
    Order.objects.all().delete()
    assert import_job_run(job_id=job.pk).status == ImportJob.Status.DONE
    assert not Order.objects.exists()


def test_dry_run_job_reports_counts_and_writes_nothing():
    job = import_job_run(job_id=job_for(ORDERS, dry_run=True).pk)

    assert job.status == ImportJob.Status.DONE
    assert (job.created_count, job.error_count) == (2, 1)
    assert messages_text(job.outcome).startswith("Dry run")
    assert not Order.objects.exists() and not Customer.objects.exists()


def test_whole_file_problem_fails_the_job_with_the_reason():
    job = import_job_run(job_id=job_for("order_external_id,amount\nTM-1,10\n").pk)
    assert job.status == ImportJob.Status.FAILED
    assert "Missing required column" in messages_text(job.outcome) and "ordered_at" in messages_text(
        job.outcome
    )


def test_customer_job():
    job = import_job_run(job_id=job_for("external_id,name\nC-1,王芳\n", kind=ImportJob.Kind.CUSTOMERS).pk)
    assert (job.status, job.created_count) == (ImportJob.Status.DONE, 1)


def test_admin_upload_stores_the_file_and_queues_the_task_after_commit(
    admin_client, admin_user, monkeypatch, django_capture_on_commit_callbacks
):
    queued = []
    monkeypatch.setattr(crm_tasks.import_job_run, "delay", lambda job_id: queued.append(job_id))
    upload = SimpleUploadedFile("订单.csv", ORDERS.encode(), content_type="text/csv")

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = admin_client.post(
            reverse("admin:crm_importjob_add"), {"kind": "orders", "file": upload, "dry_run": ""}
        )

    job = ImportJob.objects.get()
    assert response.status_code == 302 and response.url == reverse(
        "admin:crm_importjob_change", args=[job.pk]
    )
    assert len(callbacks) == 1 and queued == [job.pk]
    assert (job.status, job.original_name, job.created_by, job.dry_run) == (
        "queued",
        "订单.csv",
        admin_user,
        False,
    )
    assert job.file.read().decode() == ORDERS


def test_admin_refuses_a_file_that_is_not_csv(admin_client):
    upload = SimpleUploadedFile("orders.xlsx", b"PK\x03\x04", content_type="application/octet-stream")
    response = admin_client.post(reverse("admin:crm_importjob_add"), {"kind": "orders", "file": upload})
    assert response.status_code == 200 and not ImportJob.objects.exists()
    assert "Upload a .csv file." in response.content.decode()


def test_admin_job_page_shows_progress_and_rejected_lines_and_refreshes_while_running(admin_client):
    done = import_job_run(job_id=job_for(ORDERS).pk)
    running = job_for(ORDERS, status=ImportJob.Status.RUNNING, total_rows=1000, processed_rows=250)

    page = admin_client.get(reverse("admin:crm_importjob_change", args=[done.pk]))
    html = page.content.decode()
    assert page.status_code == 200 and "Refresh" not in page
    assert "<td>3</td><td>amount</td><td>The amount cannot be negative.</td>" in html
    assert "3 / 3 (100%)" in html

    page = admin_client.get(reverse("admin:crm_importjob_change", args=[running.pk]))
    assert page["Refresh"] == "3"
    assert "250 / 1,000 (25%)" in page.content.decode()

    listing = admin_client.get(reverse("admin:crm_importjob_changelist"))
    assert listing.status_code == 200 and "250 / 1,000 (25%)" in listing.content.decode()


def test_stored_results_are_codes_shown_in_the_readers_language_even_for_a_job_run_in_english(admin_client):
    content = ORDERS + "C-3,TM-4,2026-03-09 20:15:00,10.00,X\x00Y\n"  # line 5: a NUL
    with translation.override("en"):
        job = import_job_run(job_id=job_for(content).pk)
    assert job.status == ImportJob.Status.DONE and not job.message
    assert {
        "line": 5,
        "field": "sku",
        "msgid": "Contains a NUL character, which no text can hold.",
        "params": {},
    } in (job.errors)
    assert all("msgid" in part for part in job.outcome)

    page = admin_client.get(
        reverse("admin:crm_importjob_change", args=[job.pk]), HTTP_ACCEPT_LANGUAGE="zh-hans"
    )
    html = page.content.decode()
    assert "金额不能为负数" in html  # line 3's reason
    assert "空字符" in html  # line 5's
    assert "已读取行数：4" in html  # the summary
    assert "Rows read" not in html and "cannot be negative" not in html


def test_a_job_from_before_codes_is_shown_as_it_was_written(admin_client):
    job = job_for(ORDERS, status=ImportJob.Status.DONE, message="Rows read: 3. Old text.")
    ImportJob.objects.filter(pk=job.pk).update(
        errors=[
            {"line": 3, "field": "amount", "message": "The amount cannot be negative."},
            {"line": 4, "field": "amount", "message": "'x' is not an amount."},
        ]
    )
    html = admin_client.get(
        reverse("admin:crm_importjob_change", args=[job.pk]), HTTP_ACCEPT_LANGUAGE="zh-hans"
    ).content.decode()
    assert "Rows read: 3. Old text." in html
    assert "金额不能为负数" in html  # a whole known message is translated
    assert "&#x27;x&#x27; is not an amount." in html


def test_a_file_with_a_nul_and_an_unclosed_quote_runs_to_done_with_the_csv_lines_named():
    content = (
        "customer_external_id,order_external_id,ordered_at,amount,sku,name\n"
        "C-1,TM-1,2026-03-08 20:15:00,1.00,A,\x00\n"  # line 2
        'C-1,TM-2,2026-03-08 20:15:00,1.00,A,"doll\n'  # line 3
        "C-2,TM-3,2026-03-08 20:15:00,1.00,A,ok\n"
    )
    job = import_job_run(job_id=job_for(content).pk)
    assert job.status == ImportJob.Status.DONE
    assert [(e["line"], e["field"]) for e in job.errors] == [(2, "name"), (3, "name")]
    assert job.created_count == 1 and job.error_count == 2
    with translation.override("en"):
        assert "could not be read as CSV, rejected: 1 (line 3)" in messages_text(job.outcome)
