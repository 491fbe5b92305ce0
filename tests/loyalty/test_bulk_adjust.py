"""Bulk adjustments: upload → preview → approval by a second staff member → applied exactly once."""

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db.models.functions import Now
from django.urls import reverse

from crm.services.leases import lease_claim
from loyalty import tasks as loyalty_tasks
from loyalty.models import BulkAdjustmentBatch, BulkAdjustmentLine, LedgerEntry, LoyaltyAccount
from loyalty.services import bulk_adjust
from loyalty.services.bulk_adjust import batch_apply, batch_approve, batch_upload, batches_resume
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


class _QueueRecorder:
    """Stands in for the Celery task's delay (the service queues it by name): records what would be queued."""

    def __init__(self):
        self.queued = []

    def delay(self, *args):
        self.queued.append(args)


def test_a_large_batch_is_queued_for_the_worker_once_the_approval_commits(
    staff, monkeypatch, django_capture_on_commit_callbacks
):
    programme_setup()
    for n in range(3):
        customer_make(external_id=f"C-{n}")
    batch = batch_upload(
        name="Big", reason="launch", data=_csv(*[(f"C-{n}", "10", "") for n in range(3)]), created_by=staff[0]
    )
    task = _QueueRecorder()
    monkeypatch.setattr(bulk_adjust, "INLINE_MAX_LINES", 2)
    monkeypatch.setattr(loyalty_tasks.bulk_adjustment_apply, "delay", task.delay)

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        approved = batch_approve(batch=batch, approved_by=staff[1])
        assert task.queued == []  # not before the approval commits

    assert approved.status == "approved" and LedgerEntry.objects.count() == 0
    for callback in callbacks:
        callback()
    assert task.queued == [(batch.pk,)]


def test_a_rerun_after_a_killed_worker_applies_each_line_once(staff, monkeypatch):
    programme_setup()
    customers = [customer_make(external_id=f"C-{n}") for n in range(5)]
    batch = batch_upload(
        name="Goodwill",
        reason="outage",
        data=_csv(*[(f"C-{n}", str(10 * (n + 1)), "") for n in range(5)]),
        created_by=staff[0],
    )
    monkeypatch.setattr(bulk_adjust, "INLINE_MAX_LINES", 0)
    monkeypatch.setattr(loyalty_tasks.bulk_adjustment_apply, "delay", _QueueRecorder().delay)
    monkeypatch.setattr(bulk_adjust, "APPLY_CHUNK", 2)
    batch_approve(batch=batch, approved_by=staff[1])

    # The worker dies in its second chunk, after writing line 4's entry: that chunk rolls back.
    real_adjust = bulk_adjust.adjust_locked

    def dies_at_line_five(**kwargs):
        if kwargs["idempotency_key"].endswith(":5"):
            raise SystemExit("worker killed")
        return real_adjust(**kwargs)

    monkeypatch.setattr(bulk_adjust, "adjust_locked", dies_at_line_five)
    with pytest.raises(SystemExit):
        batch_apply(batch_id=batch.pk)
    batch.refresh_from_db()
    assert (batch.status, batch.lines_done) == ("applying", 2)
    assert LedgerEntry.objects.filter(reference=f"bulk:{batch.pk}").count() == 2

    monkeypatch.setattr(bulk_adjust, "adjust_locked", real_adjust)
    assert batch_apply(batch_id=batch.pk).lines_done == 2  # its lease has not lapsed: nothing happens
    _lapse(batch)
    batch_apply(batch_id=batch.pk)  # the task queued again by the reaper
    # A line whose link to its entry was lost is matched to that entry again by its key, not re-applied.
    BulkAdjustmentLine.objects.filter(batch=batch, line_no=2).update(entry=None)
    BulkAdjustmentBatch.objects.filter(pk=batch.pk).update(status="applying")
    batch_apply(batch_id=batch.pk)

    batch.refresh_from_db()
    assert (batch.status, batch.lines_done) == ("applied", 5)
    entries = LedgerEntry.objects.filter(reference=f"bulk:{batch.pk}")
    assert sorted(entries.values_list("idempotency_key", flat=True)) == [
        f"bulk:{batch.pk}:{n}" for n in range(2, 7)
    ]
    for n, customer in enumerate(customers):
        account = LoyaltyAccount.objects.get(customer=customer)
        assert account.available == 10 * (n + 1)
        assert_consistent(account)


def _lapse(batch) -> None:
    BulkAdjustmentBatch.objects.filter(pk=batch.pk).update(lease_expires_at=Now() - timedelta(seconds=1))


def test_a_batch_whose_worker_died_is_queued_again_and_a_running_one_is_not(
    staff, monkeypatch, django_capture_on_commit_callbacks
):
    programme_setup()
    for n in range(2):
        customer_make(external_id=f"C-{n}")
    killed, running = (
        batch_upload(name=name, reason="r", data=_csv((f"C-{n}", "5", name)), created_by=staff[0])
        for n, name in enumerate(["killed", "running"])
    )
    task = _QueueRecorder()
    monkeypatch.setattr(bulk_adjust, "INLINE_MAX_LINES", 0)
    monkeypatch.setattr(loyalty_tasks.bulk_adjustment_apply, "delay", task.delay)
    for batch in (killed, running):
        batch_approve(batch=batch, approved_by=staff[1])
    assert batches_resume() == []  # queued, within their pick-up time
    for batch in (killed, running):  # a worker takes each one
        assert lease_claim(queryset=bulk_adjust._batches_to_apply(), pk=batch.pk) is not None
    _lapse(killed)

    with django_capture_on_commit_callbacks(execute=True):
        assert batches_resume() == [killed.pk]

    assert task.queued == [(killed.pk,)]
    assert batch_apply(batch_id=killed.pk).status == "applied"
    assert batch_apply(batch_id=running.pk).status == "approved"  # its live worker's, left alone
