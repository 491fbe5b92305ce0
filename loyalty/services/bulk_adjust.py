"""Bulk point adjustments: a CSV is uploaded and previewed by one staff member, approved by another,
and applied exactly once.

CSV columns (header row required): `customer_external_id`, `points` (a non-zero whole number, negative
removes points), optional `reason`. Every error names its line; a batch with errors cannot be approved
(fix the file and upload it again). Applying writes one entry per line with the key
`bulk:<batch>:<line>`, so an interrupted or repeated apply finishes the batch without doubling a line. A
removal larger than the member's balance takes what is there and records the rest as owed points.

A batch of at most INLINE_MAX_LINES lines (one chunk, one short transaction) is applied by the approval
itself, so the approver sees the result at once. A larger one is queued for the worker once the approval
commits and applied chunk by chunk; each chunk commits its entries together with the progress counter,
which the admin shows. The worker applying a batch holds its lease (crm/services/leases.py) and each
chunk commits only while it still does. A worker killed mid-batch loses only its open chunk; once its
lease lapses, the lease reaper (beat) queues the batch again and the next worker carries on from the
first line without an entry."""

from __future__ import annotations

import csv
import hashlib
import io
from datetime import datetime, timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from crm.models import Customer
from crm.services.leases import (
    Lease,
    LeaseLost,
    lease_claim,
    lease_kept,
    lease_pickup_deadline,
    lease_release,
    leased_job_register,
    leased_job_resume_task,
    leases_reap,
)
from crm.task_queue import task_queue_on_commit
from loyalty.models import BulkAdjustmentBatch, BulkAdjustmentLine, LedgerEntry
from loyalty.services.ledger import (
    IdempotencyConflict,
    accounts_for_customers,
    accounts_lock,
    adjust_locked,
    balances_save,
    payload_hash,
)
from loyalty.services.programme import ruleset_load

MAX_LINES = 50_000
MAX_POINTS_PER_LINE = 10_000_000
APPLY_CHUNK = 500
INLINE_MAX_LINES = APPLY_CHUNK
BULK_APPLY_TASK = "loyalty.tasks.bulk_adjustment_apply"


def _decode(data: bytes | str) -> str:
    if isinstance(data, str):
        return data
    for encoding in ("utf-8-sig", "gb18030"):  # Excel in China saves CSV as GBK more often than not
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    raise ValidationError(_("The file is neither UTF-8 nor GB18030 text."))


def batch_upload(*, name: str, reason: str, data: bytes | str, file_name: str = "", created_by, now=None):
    """Parse and validate the CSV into a batch awaiting approval. Nothing touches the ledger yet."""
    now = now or timezone.now()
    if not (reason or "").strip():
        raise ValidationError({"reason": _("A reason is required.")})
    raw = data if isinstance(data, bytes) else data.encode()
    sha = hashlib.sha256(raw).hexdigest()
    earlier = (
        BulkAdjustmentBatch.objects.filter(file_sha256=sha)
        .exclude(status=BulkAdjustmentBatch.Status.REJECTED)
        .first()
    )
    if earlier is not None:
        raise ValidationError(
            _("This file was already uploaded as batch “%(name)s” (#%(id)s).")
            % {"name": earlier.name, "id": earlier.pk}
        )
    reader = csv.DictReader(io.StringIO(_decode(data)))
    fields = {f.strip().lower() for f in (reader.fieldnames or [])}
    missing = {"customer_external_id", "points"} - fields
    if missing:
        raise ValidationError(_("Missing column(s): %(columns)s.") % {"columns": ", ".join(sorted(missing))})
    rows = []
    for line_no, row in enumerate(reader, start=2):  # line 1 is the header
        if line_no - 1 > MAX_LINES:
            raise ValidationError(_("At most %(max)d lines per batch.") % {"max": MAX_LINES})
        row = {(k or "").strip().lower(): (v or "").strip() for k, v in row.items()}
        rows.append((line_no, row))
    external_ids = {row.get("customer_external_id", "") for _n, row in rows}
    customers = dict(Customer.objects.filter(external_id__in=external_ids).values_list("external_id", "id"))
    lines = []
    seen = set()
    for line_no, row in rows:
        external_id = row.get("customer_external_id", "")
        error = ""
        points = 0
        try:
            points = int(row.get("points", ""))
            if points == 0 or abs(points) > MAX_POINTS_PER_LINE:
                error = _("Line %(line)d: points must be a non-zero whole number up to %(max)d.") % {
                    "line": line_no,
                    "max": MAX_POINTS_PER_LINE,
                }
        except ValueError:
            error = _("Line %(line)d: points “%(value)s” is not a whole number.") % {
                "line": line_no,
                "value": row.get("points", ""),
            }
        if not error and external_id not in customers:
            error = _("Line %(line)d: no customer with external id “%(id)s”.") % {
                "line": line_no,
                "id": external_id,
            }
        if not error and external_id in seen:
            error = _("Line %(line)d: customer “%(id)s” appears twice in the file.") % {
                "line": line_no,
                "id": external_id,
            }
        seen.add(external_id)
        lines.append(
            BulkAdjustmentLine(
                line_no=line_no,
                customer_external_id=external_id[:64],
                customer_id=customers.get(external_id),
                points=points,
                reason=(row.get("reason") or "")[:300],
                error=error[:300],
            )
        )
    if not lines:
        raise ValidationError(_("The file has no lines."))
    with transaction.atomic():
        batch = BulkAdjustmentBatch.objects.create(
            name=name[:200],
            reason=reason[:300],
            file_name=file_name[:255],
            file_sha256=sha,
            line_count=len(lines),
            error_count=sum(1 for ln in lines if ln.error),
            total_points=sum(ln.points for ln in lines if not ln.error),
            created_by=created_by,
            created_at=now,
        )
        for line in lines:
            line.batch = batch
        BulkAdjustmentLine.objects.bulk_create(lines, batch_size=5000)
    return batch


def batch_approve(
    *, batch: BulkAdjustmentBatch, approved_by, now: datetime | None = None
) -> BulkAdjustmentBatch:
    """A second staff member approves the batch, which is then applied: here if it is small, otherwise by
    the worker, queued once the approval commits (status "approved" until the worker starts)."""
    now = now or timezone.now()
    with transaction.atomic():
        batch = BulkAdjustmentBatch.objects.select_for_update().get(pk=batch.pk)
        if batch.status != BulkAdjustmentBatch.Status.PREVIEW:
            raise ValidationError(_("Only a batch awaiting approval can be approved."))
        if approved_by.pk == batch.created_by_id:
            raise ValidationError(
                _("A batch must be approved by someone other than the person who uploaded it.")
            )
        if batch.error_count:
            raise ValidationError(_("The batch has lines with errors; fix the file and upload it again."))
        batch.status = BulkAdjustmentBatch.Status.APPROVED
        batch.approved_by = approved_by
        batch.approved_at = now
        inline = batch.lines_to_apply <= INLINE_MAX_LINES
        if not inline:
            # The worker should pick it up by then, or the message was lost and the reaper queues it again.
            batch.lease_expires_at = timezone.now() + timedelta(seconds=settings.JOB_PICKUP_SECONDS)
        batch.save(update_fields=["status", "approved_by", "approved_at", "lease_expires_at"])
        if not inline:
            task_queue_on_commit(BULK_APPLY_TASK, batch.pk)
    if inline:
        return batch_apply(batch_id=batch.pk, now=now)
    return batch


def batch_reject(*, batch: BulkAdjustmentBatch, rejected_by) -> BulkAdjustmentBatch:
    with transaction.atomic():
        batch = BulkAdjustmentBatch.objects.select_for_update().get(pk=batch.pk)
        if batch.status != BulkAdjustmentBatch.Status.PREVIEW:
            raise ValidationError(_("Only a batch awaiting approval can be rejected."))
        batch.status = BulkAdjustmentBatch.Status.REJECTED
        batch.save(update_fields=["status"])
    return batch


def _batches_to_apply():
    return BulkAdjustmentBatch.objects.filter(
        status__in=[BulkAdjustmentBatch.Status.APPROVED, BulkAdjustmentBatch.Status.APPLYING]
    )


def batch_apply(*, batch_id: int, now: datetime | None = None) -> BulkAdjustmentBatch:
    """Apply an approved batch, chunk by chunk; safe to run again (or twice at once) until it is done: only
    the worker holding the batch's lease applies it, and another message for it does nothing."""
    now = now or timezone.now()
    lease = lease_claim(queryset=_batches_to_apply(), pk=batch_id)
    if lease is None:
        batch = BulkAdjustmentBatch.objects.get(pk=batch_id)
        if batch.status not in (
            BulkAdjustmentBatch.Status.APPROVED,
            BulkAdjustmentBatch.Status.APPLYING,
            BulkAdjustmentBatch.Status.APPLIED,
        ):
            raise ValidationError(_("Only an approved batch can be applied."))
        return batch
    # The keeper stops outside the chunks' transactions: its heartbeat may be waiting for the batch's
    # row lock, which each chunk holds.
    with lease_kept(lease) as keeper:
        try:
            return _batch_apply_chunks(lease=lease, keeper=keeper, now=now)
        except LeaseLost:
            return BulkAdjustmentBatch.objects.get(pk=batch_id)
        except Exception:
            # Not a killed worker but an error (a conflicting entry, a database failure): the reaper tries
            # again after the pick-up time, instead of at every lease.
            try:
                lease_release(lease=lease, values={"lease_expires_at": lease_pickup_deadline()})
            except LeaseLost:
                pass
            raise


def _batch_apply_chunks(*, lease: Lease, keeper, now: datetime) -> BulkAdjustmentBatch:
    batch_id = lease.pk
    ruleset = ruleset_load()
    entry_tier = ruleset.entry_tier
    while True:
        keeper.check()
        with transaction.atomic():
            batch = BulkAdjustmentBatch.objects.select_for_update().get(pk=batch_id)
            if batch.status == BulkAdjustmentBatch.Status.APPLIED:
                return batch
            if batch.status not in (BulkAdjustmentBatch.Status.APPROVED, BulkAdjustmentBatch.Status.APPLYING):
                raise ValidationError(_("Only an approved batch can be applied."))
            lines = list(batch.lines.filter(entry__isnull=True, error="").order_by("line_no")[:APPLY_CHUNK])
            if not lines:
                batch.status = BulkAdjustmentBatch.Status.APPLIED
                batch.applied_at = now
                batch.lines_done = batch.lines.filter(entry__isnull=False).count()
                batch.progress_at = timezone.now()
                # Conditional on the lease, and a save() for the batch's history: the row is locked, so
                # the token read above is still the row's.
                if batch.lease_token != lease.token:
                    raise LeaseLost(lease)
                batch.lease_token = batch.lease_expires_at = None
                batch.save(
                    update_fields=[
                        "status", "applied_at", "lines_done", "progress_at", "lease_token", "lease_expires_at"
                    ]
                )  # fmt: skip
                return batch
            by_customer = accounts_for_customers(
                customer_ids={ln.customer_id for ln in lines},
                now=now,
                entry_tier_id=entry_tier.pk if entry_tier else None,
            )
            accounts = accounts_lock(by_customer.values())
            # The line's link to its entry is the progress marker; the entry's key is the guarantee. An
            # entry already written under a line's key (whatever happened to the link) is that line's
            # entry: linked again, never written twice, and refused if its payload differs.
            keys = {line.pk: f"bulk:{batch.pk}:{line.line_no}" for line in lines}
            written = {
                e.idempotency_key: e for e in LedgerEntry.objects.filter(idempotency_key__in=keys.values())
            }
            for line in lines:
                account = accounts[by_customer[line.customer_id]]
                key = keys[line.pk]
                reason = line.reason or batch.reason
                fingerprint = payload_hash(
                    {"op": "bulk", "batch": batch.pk, "line": line.line_no, "points": line.points}
                )
                if key in written:
                    if written[key].payload_hash != fingerprint:
                        raise IdempotencyConflict(idempotency_key=key)
                    BulkAdjustmentLine.objects.filter(pk=line.pk).update(entry=written[key])
                    continue
                entry = adjust_locked(
                    account=account,
                    points=line.points,
                    idempotency_key=key,
                    fingerprint=fingerprint,
                    reason=f"{batch.name}: {reason}",
                    reference=f"bulk:{batch.pk}",
                    created_by=batch.approved_by,
                    allow_owed=True,
                    now=now,
                )
                BulkAdjustmentLine.objects.filter(pk=line.pk).update(entry=entry)
            for account in accounts.values():
                balances_save(account)
            # A queryset update, not save(): one history row per chunk would bury the batch's real history.
            # The wall clock, not `now`: this is a heartbeat, and `now` is the ledger's time of the batch.
            # Conditional on the lease: a worker that was taken over rolls its chunk back here.
            if not BulkAdjustmentBatch.objects.filter(pk=batch.pk, lease_token=lease.token).update(
                status=BulkAdjustmentBatch.Status.APPLYING,
                lines_done=batch.lines.filter(entry__isnull=False).count(),
                progress_at=timezone.now(),
            ):
                raise LeaseLost(lease)


def batches_resume() -> list[int]:
    """Queue again the batches whose lease lapsed (their worker was killed, or their message was lost).
    The lease reaper (crm.tasks.leases_reap) does this for every leased job; this is what the older beat
    entry `loyalty.tasks.bulk_adjustments_resume` still calls. Returns the batch ids queued."""
    return leases_reap().resumed.get(BULK_JOB, [])


BULK_JOB = "loyalty.bulkadjustmentbatch"


def bulk_adjustments_reaper_register() -> None:
    """Let the lease reaper resume the batches whose worker died (loyalty's AppConfig.ready calls this)."""
    leased_job_register(
        name=BULK_JOB,
        active=_batches_to_apply,
        resume=leased_job_resume_task(BULK_APPLY_TASK),
    )
