"""The whole upload path with a real Celery worker: admin upload -> job row + stored file -> task queued on
commit -> the worker imports the CSV into the test database -> the job is done with its counts."""

import re

from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from crm.models import Customer, Event, ImportJob, Order

CSV = (
    "customer_external_id,order_external_id,ordered_at,amount,channel,sku,quantity\n"
    "C-1,TM-1,2026-03-08 20:15:00,199.00,tmall,DIAPER-M,1\n"
    "C-1,TM-1,2026-03-08 20:15:00,199.00,tmall,WIPES,2\n"
    "C-2,JD-1,2026-03-09 09:00:00,88.00,jd,SERUM,1\n"
    "C-2,JD-2,not a date,88.00,jd,SERUM,1\n"
)


def test_uploaded_order_file_is_imported_by_the_worker(celery_worker_process, admin_client):
    upload = SimpleUploadedFile("orders.csv", CSV.encode(), content_type="text/csv")
    response = admin_client.post(reverse("admin:crm_importjob_add"), {"kind": "orders", "file": upload})
    assert response.status_code == 302
    job = ImportJob.objects.get()
    try:
        celery_worker_process.wait_for_log(r"Task crm\.tasks\.import_job_run\[[\w-]+\] succeeded", timeout=60)

        job.refresh_from_db()
        assert job.status == ImportJob.Status.DONE, job.message
        assert (job.processed_rows, job.created_count, job.error_count) == (4, 2, 1)
        assert job.errors[0]["line"] == 5 and job.errors[0]["field"] == "ordered_at"
        assert Order.objects.get(external_id="TM-1").lines.count() == 2
        assert set(Customer.objects.values_list("external_id", flat=True)) == {"C-1", "C-2"}
        assert Event.objects.filter(type="order_placed").count() == 2
        assert re.search(r"import_job_run\[[\w-]+\] received", celery_worker_process.output())
    finally:
        default_storage.delete(job.file.name)  # the worker reads MEDIA_ROOT under var/, shared with us
