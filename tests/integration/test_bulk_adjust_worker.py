"""A large bulk adjustment with a real Celery worker: the approval in the admin queues it on commit, the
worker applies it chunk by chunk, and the admin shows how far it has got."""

import time

from django.contrib.auth import get_user_model
from django.urls import reverse

from crm.models import Customer
from loyalty.models import BulkAdjustmentBatch, LedgerEntry, LoyaltyAccount
from loyalty.services import bulk_adjust
from loyalty.services.bulk_adjust import batch_upload
from tests.factories import CustomerFactory
from tests.loyalty.ledger_helpers import programme_setup

LINES = 2 * bulk_adjust.APPLY_CHUNK + 100  # three chunks, and more than the approval applies inline


def test_a_large_batch_is_applied_by_the_worker_with_progress(celery_worker_process, client):
    programme_setup()
    Customer.objects.bulk_create(CustomerFactory.build_batch(LINES))
    external_ids = list(Customer.objects.order_by("pk").values_list("external_id", flat=True))
    User = get_user_model()
    uploader = User.objects.create_superuser("uploader", "u@example.cn", "pw-uploader-123")
    approver = User.objects.create_superuser("approver", "a@example.cn", "pw-approver-123")
    csv = "customer_external_id,points\n" + "".join(f"{x},7\n" for x in external_ids)
    batch = batch_upload(name="Launch gift", reason="launch", data=csv.encode(), created_by=uploader)
    client.force_login(approver)

    response = client.post(
        reverse("admin:loyalty_bulkadjustmentbatch_decide", args=[batch.pk]), {"_approve": "1"}, follow=True
    )

    assert b"being applied in the background" in response.content
    assert LINES > bulk_adjust.INLINE_MAX_LINES
    seen = []
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        batch.refresh_from_db()
        seen.append(batch.lines_done)
        if batch.status == BulkAdjustmentBatch.Status.APPLIED:
            break
        time.sleep(0.05)
    celery_worker_process.wait_for_log(r"Task loyalty\.tasks\.bulk_adjustment_apply\[[\w-]+\] succeeded")
    assert batch.status == BulkAdjustmentBatch.Status.APPLIED, celery_worker_process.output()[-3000:]
    assert seen == sorted(seen) and seen[-1] == LINES
    assert set(seen) <= {0, bulk_adjust.APPLY_CHUNK, 2 * bulk_adjust.APPLY_CHUNK, LINES}  # whole chunks only
    assert LedgerEntry.objects.filter(reference=f"bulk:{batch.pk}").count() == LINES
    assert set(LoyaltyAccount.objects.values_list("available", flat=True)) == {7}
    page = client.get(reverse("admin:loyalty_bulkadjustmentbatch_change", args=[batch.pk])).content.decode()
    assert f"{LINES} of {LINES} lines (100%)" in page
