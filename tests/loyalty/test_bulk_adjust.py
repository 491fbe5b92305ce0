"""Bulk adjustments: upload → preview → approval by a second staff member → applied exactly once."""

import pytest
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.urls import reverse

from loyalty.models import BulkAdjustmentBatch, LedgerEntry, LoyaltyAccount
from loyalty.services.bulk_adjust import batch_apply, batch_approve, batch_upload
from loyalty.services.ledger import account_for_customer, points_adjust
from tests.loyalty.ledger_helpers import assert_consistent, customer_make, programme_setup

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff():
    User = get_user_model()
    return (
        User.objects.create_superuser("uploader", "u@example.cn", "pw-uploader-123"),
        User.objects.create_superuser("approver", "a@example.cn", "pw-approver-123"),
    )


def _csv(*rows):
    return ("customer_external_id,points,reason\n" + "".join(f"{a},{b},{c}\n" for a, b, c in rows)).encode()


def test_upload_previews_and_names_every_bad_line(staff):
    programme_setup()
    c = customer_make(external_id="C-1")
    batch = batch_upload(
        name="Goodwill",
        reason="outage",
        data=_csv(("C-1", "100", "sorry"), ("NOPE", "5", ""), ("C-1", "abc", ""), ("C-1", "0", "")),
        created_by=staff[0],
    )
    errors = [ln.error for ln in batch.lines.order_by("line_no") if ln.error]
    assert batch.error_count == 3 and batch.line_count == 4
    assert errors[0].startswith("Line 3:") and "NOPE" in errors[0]
    assert errors[1].startswith("Line 4:") and errors[2].startswith("Line 5:")
    assert LedgerEntry.objects.count() == 0
    with pytest.raises(ValidationError):
        batch_approve(batch=batch, approved_by=staff[1])
    assert c.pk


def test_uploader_cannot_approve_and_an_approved_batch_applies_once(staff):
    programme_setup()
    a, b = customer_make(external_id="C-1"), customer_make(external_id="C-2")
    points_adjust(account=account_for_customer(customer=b), points=30, idempotency_key="seed", reason="seed")
    batch = batch_upload(
        name="Q3",
        reason="campaign",
        data=_csv(("C-1", "100", ""), ("C-2", "-50", "clawback")),
        created_by=staff[0],
    )
    with pytest.raises(ValidationError, match="someone other"):
        batch_approve(batch=batch, approved_by=staff[0])

    batch_approve(batch=batch, approved_by=staff[1])
    batch_apply(batch_id=batch.pk)
    batch_apply(batch_id=batch.pk)  # again: nothing more

    batch.refresh_from_db()
    assert batch.status == "applied"
    assert LedgerEntry.objects.filter(reference=f"bulk:{batch.pk}").count() == 2
    acc_a, acc_b = LoyaltyAccount.objects.get(customer=a), LoyaltyAccount.objects.get(customer=b)
    assert acc_a.available == 100
    assert (acc_b.available, acc_b.owed) == (0, 20)  # took what was there; the rest is owed
    assert_consistent(acc_a)
    assert_consistent(acc_b)
    with pytest.raises(ValidationError, match="already uploaded"):
        batch_upload(
            name="Q3 again",
            reason="campaign",
            data=_csv(("C-1", "100", ""), ("C-2", "-50", "clawback")),
            created_by=staff[0],
        )


def test_admin_upload_preview_and_approval_by_a_second_user(client, staff):
    programme_setup()
    customer_make(external_id="C-1")
    client.force_login(staff[0])
    from django.core.files.uploadedfile import SimpleUploadedFile

    response = client.post(
        reverse("admin:loyalty_bulkadjustmentbatch_upload"),
        {"name": "Gift", "reason": "launch", "file": SimpleUploadedFile("gift.csv", _csv(("C-1", "88", "")))},
    )
    batch = BulkAdjustmentBatch.objects.get()
    assert response.status_code == 302
    page = client.get(reverse("admin:loyalty_bulkadjustmentbatch_change", args=[batch.pk]))
    assert page.status_code == 200 and b"Another staff member must approve" in page.content

    client.post(reverse("admin:loyalty_bulkadjustmentbatch_decide", args=[batch.pk]), {"_approve": "1"})
    batch.refresh_from_db()
    assert batch.status == "preview"  # the uploader's own approval was refused

    client.force_login(staff[1])
    client.post(reverse("admin:loyalty_bulkadjustmentbatch_decide", args=[batch.pk]), {"_approve": "1"})
    client.post(reverse("admin:loyalty_bulkadjustmentbatch_decide", args=[batch.pk]), {"_approve": "1"})
    batch.refresh_from_db()
    assert batch.status == "applied" and batch.approved_by == staff[1]
    assert LoyaltyAccount.objects.get().available == 88
