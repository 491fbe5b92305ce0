"""The nightly life of lots: pending points becoming available, expiring-soon notices, expiry.

All three are set-based SQL over batches of accounts. Each batch first locks its accounts with
`FOR UPDATE SKIP LOCKED` (the app's one lock order: accounts, then their lots), so a member redeeming
at that moment is never blocked for long and never sees a half-expired balance; a skipped account is
picked up by the next run. Every statement is idempotent: a lot is released or expired once because the
same statement that writes its entry also changes its state.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from crm.services.event_log import NewEvent, events_append
from crm.services.leases import (
    Lease,
    LeaseLost,
    lease_claim,
    lease_kept,
    lease_release,
    lease_write,
    leased_job_register,
    leased_job_resume_task,
)
from loyalty.event_types import POINTS_EXPIRING
from loyalty.ledger_reasons import reason_code
from loyalty.models import EntryKind, ExpiryRun, LedgerEntry, LoyaltyAccount, PointLot
from loyalty.services.ledger import balances_save, owed_settle
from loyalty.services.programme import programme_get

logger = logging.getLogger(__name__)


def _lock_accounts(candidate_ids: list[int]) -> list[int]:
    return list(
        LoyaltyAccount.objects.select_for_update(skip_locked=True)
        .filter(pk__in=candidate_ids)
        .order_by("pk")
        .values_list("pk", flat=True)
    )


def _settle_owing(account_ids: list[int], now: datetime, run_key: str) -> None:
    """Pay off owed points from the points just made available (rare: only accounts that owe)."""
    for account in LoyaltyAccount.objects.filter(pk__in=account_ids, owed__gt=0, available__gt=0).order_by(
        "pk"
    ):
        owed_settle(account=account, now=now, trigger_key=f"{run_key}:{account.pk}")
        LoyaltyAccount.objects.filter(pk=account.pk).update(available=account.available, owed=account.owed)


def points_release_due(*, now: datetime | None = None, batch_accounts: int = 5000) -> int:
    """Make pending lots whose return window has passed available: one `release` entry per lot.
    Returns the points released."""
    now = now or timezone.now()
    if connection.vendor != "postgresql":
        return _release_portable(now)
    reason = reason_code("released")
    released = 0
    while True:
        with transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute(
                    """SELECT DISTINCT account_id FROM loyalty_pointlot
                        WHERE state = 'pending' AND available_at <= %s LIMIT %s""",
                    [now, batch_accounts],
                )
                candidates = [row[0] for row in cursor.fetchall()]
            if not candidates:
                break
            locked = _lock_accounts(candidates)
            if not locked:
                break  # everything due is being written by someone else right now; next run
            with connection.cursor() as cursor:
                cursor.execute(
                    """
                    WITH due AS (
                        UPDATE loyalty_pointlot SET state = 'available'
                         WHERE account_id = ANY(%(accounts)s) AND state = 'pending' AND available_at <= %(now)s
                     RETURNING id, account_id, remaining, earn_entry_id, available_at
                    ), ins AS (
                        INSERT INTO loyalty_ledgerentry
                            (account_id, kind, points, pending_delta, owed_delta, idempotency_key, payload_hash,
                             reason, reference, order_id, order_line_id, lot_id, parts, occurred_at, created_at)
                        SELECT due.account_id, 'release', due.remaining, -due.remaining, 0,
                               'release:lot:' || due.id, '', %(reason)s, e.reference, e.order_id,
                               e.order_line_id, due.id, '{}'::jsonb, due.available_at, %(now)s
                          FROM due JOIN loyalty_ledgerentry e ON e.id = due.earn_entry_id
                         WHERE due.remaining > 0
                     RETURNING account_id, points
                    )
                    UPDATE loyalty_loyaltyaccount a
                       SET available = a.available + s.points, pending = a.pending - s.points
                      FROM (SELECT account_id, SUM(points) AS points FROM ins GROUP BY account_id) s
                     WHERE a.id = s.account_id
                 RETURNING a.id, s.points
                    """,
                    {"accounts": locked, "now": now, "reason": str(reason)},
                )
                rows = cursor.fetchall()
            released += sum(r[1] for r in rows)
            _settle_owing([r[0] for r in rows], now, f"release:{now.timestamp()}")
        if len(candidates) < batch_accounts:
            break
    return released


def points_expire_due(*, now: datetime | None = None, batch_accounts: int = 20000) -> int:
    """Expire what is left of every available lot past its expiry: one `expire` entry per account per
    run, each expired lot pointing at it. Returns the points expired.

    The run is an ExpiryRun whose lease the worker holds (crm/services/leases.py), on SQLite (`make run`)
    as on PostgreSQL: if the worker is killed, the lease reaper has `points_expiry_resume` carry on
    where the run stopped."""
    now = now or timezone.now()
    run = ExpiryRun.objects.create(expires_up_to=now)
    lease = lease_claim(queryset=_expiry_runs_active(), pk=run.pk)
    return _expire_run(run=run, lease=lease, batch_accounts=batch_accounts)


def points_expiry_resume(*, run_id: int, batch_accounts: int = 20000) -> int:
    """Carry on with a run whose worker died (the reaper queues this); nothing for a run that is over or
    that a live worker holds. Returns the points this call expired."""
    lease = lease_claim(queryset=_expiry_runs_active(), pk=run_id)
    if lease is None:
        return 0
    return _expire_run(run=ExpiryRun.objects.get(pk=run_id), lease=lease, batch_accounts=batch_accounts)


def _expiry_runs_active():
    return ExpiryRun.objects.filter(status=ExpiryRun.Status.RUNNING)


EXPIRY_RESUME_TASK = "loyalty.tasks.expiry_run_resume"


def expiry_runs_reaper_register() -> None:
    """Let the lease reaper resume expiry runs whose worker died (loyalty's AppConfig.ready calls this)."""
    leased_job_register(
        name="loyalty.expiryrun",
        active=_expiry_runs_active,
        resume=leased_job_resume_task(EXPIRY_RESUME_TASK),
    )


# SQLite has one writer at a time: a shorter batch keeps the lease's heartbeat (another connection) from
# waiting on the run's write lock for long.
PORTABLE_BATCH_ACCOUNTS = 500


def _expire_batch_function():
    return _expire_batch if connection.vendor == "postgresql" else _expire_batch_portable


def _expire_run(*, run: ExpiryRun, lease: Lease, batch_accounts: int) -> int:
    now = run.expires_up_to
    reason = reason_code("expired")
    expired = 0
    last_id = run.last_account_id
    expire_batch = _expire_batch_function()
    if expire_batch is _expire_batch_portable:
        batch_accounts = min(batch_accounts, PORTABLE_BATCH_ACCOUNTS)
    # The keeper stops outside the batches' transactions: its heartbeat may wait for the run's row lock.
    with lease_kept(lease) as keeper:
        try:
            while True:
                keeper.check()
                with transaction.atomic():
                    locked, points = expire_batch(
                        after=last_id, now=now, reason=str(reason), run=run, limit=batch_accounts
                    )
                    if locked:
                        last_id = locked[-1]
                    # Conditional on the lease, in the batch's transaction: a worker that was taken over
                    # rolls its batch back here, and the cursor never runs ahead of the entries.
                    lease_write(
                        lease=lease,
                        values={"last_account_id": last_id, "points_expired": F("points_expired") + points},
                    )
                expired += points
                if len(locked) < batch_accounts:
                    break
            lease_release(
                lease=lease, values={"status": ExpiryRun.Status.DONE, "finished_at": timezone.now()}
            )
        except LeaseLost:
            logger.warning("points expiry taken over by another worker; stopping", extra={"run": run.pk})
    logger.info("points expired", extra={"points": expired})
    return expired


def _expire_batch(
    *, after: int, now: datetime, reason: str, run: ExpiryRun, limit: int
) -> tuple[list[int], int]:
    """Expire the due lots of the next `limit` accounts after id `after` that have any; returns those
    accounts and the points expired."""
    # Walk the accounts in id order and probe each one's open lots (the FIFO index) for a due one: one
    # pass over the accounts in all, where a DISTINCT over the due lots would re-read every remaining due
    # lot on every batch.
    with connection.cursor() as cursor:
        cursor.execute(
            """SELECT a.id FROM loyalty_loyaltyaccount a
                WHERE a.id > %s AND EXISTS (
                      SELECT 1 FROM loyalty_pointlot l
                       WHERE l.account_id = a.id AND l.state = 'available' AND l.remaining > 0
                         AND l.expires_at <= %s)
                ORDER BY a.id LIMIT %s
                  FOR UPDATE OF a SKIP LOCKED""",
            [after, now, limit],
        )
        locked = [row[0] for row in cursor.fetchall()]
    if not locked:
        return locked, 0
    with connection.cursor() as cursor:
        cursor.execute(
            """
            WITH due AS (
                SELECT id, account_id, remaining FROM loyalty_pointlot
                 WHERE account_id = ANY(%(accounts)s) AND state = 'available' AND remaining > 0
                   AND expires_at <= %(now)s
            ), per_account AS (
                SELECT account_id, SUM(remaining) AS points, COUNT(*) AS lots FROM due GROUP BY account_id
            ), ins AS (
                INSERT INTO loyalty_ledgerentry
                    (account_id, kind, points, pending_delta, owed_delta, idempotency_key, payload_hash,
                     reason, reference, parts, occurred_at, created_at)
                SELECT account_id, 'expire', -points, 0, 0,
                       'expire:' || account_id || ':' || %(run_key)s, '', %(reason)s, '',
                       jsonb_build_object('lots', lots), %(now)s, %(now)s
                  FROM per_account
             RETURNING id, account_id, points
            ), lots AS (
                UPDATE loyalty_pointlot l
                   SET remaining = 0, expired = l.expired + due.remaining, expire_entry_id = ins.id
                  FROM due JOIN ins ON ins.account_id = due.account_id
                 WHERE l.id = due.id
            )
            UPDATE loyalty_loyaltyaccount a SET available = a.available + ins.points
              FROM ins WHERE a.id = ins.account_id
         RETURNING ins.points
            """,
            # One entry per account per run: the run walks each account once, and a resumed run starts
            # after the last account its batches committed.
            {"accounts": locked, "now": now, "reason": reason, "run_key": f"run{run.pk}"},
        )
        return locked, -sum(r[0] for r in cursor.fetchall())


def expiring_notices_emit(*, now: datetime | None = None, batch_size: int = 20000) -> int:
    """Emit one `points_expiring` behaviour event per account whose points expire within the programme's
    notice period and have not been announced yet; campaigns and journeys turn it into a message.
    Returns the events written."""
    now = now or timezone.now()
    horizon = now + timedelta(days=programme_get().expiring_notice_days)
    if connection.vendor != "postgresql":
        return _notices_portable(now, horizon)
    written = 0
    while True:
        with transaction.atomic():
            with connection.cursor() as cursor:
                # Only lots are locked here (SKIP LOCKED, never waiting), so this cannot deadlock with a
                # writer holding an account and updating its lots.
                cursor.execute(
                    """
                    WITH due AS (
                        SELECT id FROM loyalty_pointlot
                         WHERE state = 'available' AND remaining > 0 AND notified_at IS NULL
                           AND expires_at > %(now)s AND expires_at <= %(horizon)s
                         ORDER BY id LIMIT %(limit)s
                           FOR UPDATE SKIP LOCKED
                    )
                    UPDATE loyalty_pointlot l SET notified_at = %(now)s FROM due WHERE l.id = due.id
                 RETURNING l.id, l.account_id, l.remaining, l.expires_at
                    """,
                    {"now": now, "horizon": horizon, "limit": batch_size},
                )
                rows = cursor.fetchall()
            if not rows:
                break
            per_account: dict[int, dict] = {}
            for lot_id, account_id, remaining, expires_at in rows:
                item = per_account.setdefault(
                    account_id, {"points": 0, "expires_at": expires_at, "first_lot": lot_id}
                )
                item["points"] += remaining
                item["expires_at"] = min(item["expires_at"], expires_at)
                item["first_lot"] = min(item["first_lot"], lot_id)
            customers = dict(
                LoyaltyAccount.objects.filter(pk__in=list(per_account)).values_list("pk", "customer_id")
            )
            events_append(
                events=[
                    NewEvent(
                        type=POINTS_EXPIRING,
                        customer_id=customers.get(account_id),
                        occurred_at=now,
                        properties={
                            "account_id": account_id,
                            "points": item["points"],
                            "expires_at": item["expires_at"].isoformat(),
                        },
                        external_id=f"loyalty:points_expiring:{account_id}:{item['first_lot']}",
                    )
                    for account_id, item in per_account.items()
                ],
                now=now,
                skip_existing=True,
                batch_size=5000,
            )
            written += len(per_account)
        if len(rows) < batch_size:
            break
    return written


# --- The same, row by row, for SQLite (`make run`): no data-modifying CTEs, no row locks there. ----------


def _release_portable(now: datetime) -> int:
    released = 0
    due = PointLot.objects.filter(state=PointLot.State.PENDING, available_at__lte=now)
    for account_id in sorted(set(due.values_list("account_id", flat=True))):
        with transaction.atomic():
            account = LoyaltyAccount.objects.select_for_update().get(pk=account_id)
            for lot in due.filter(account_id=account_id).select_related("earn_entry"):
                if lot.remaining > 0:
                    LedgerEntry.objects.create(
                        account_id=account_id,
                        kind=EntryKind.RELEASE,
                        points=lot.remaining,
                        pending_delta=-lot.remaining,
                        idempotency_key=f"release:lot:{lot.pk}",
                        reason=reason_code("released"),
                        reference=lot.earn_entry.reference,
                        order_id=lot.earn_entry.order_id,
                        order_line_id=lot.earn_entry.order_line_id,
                        lot=lot,
                        occurred_at=lot.available_at,
                        created_at=now,
                    )
                    account.available += lot.remaining
                    account.pending -= lot.remaining
                    released += lot.remaining
                PointLot.objects.filter(pk=lot.pk).update(state=PointLot.State.AVAILABLE)
            owed_settle(account=account, now=now, trigger_key=f"release:{now.timestamp()}:{account_id}")
            balances_save(account)
    return released


def _expire_batch_portable(
    *, after: int, now: datetime, reason: str, run: ExpiryRun, limit: int
) -> tuple[list[int], int]:
    """`_expire_batch` without data-modifying CTEs: the next `limit` accounts after id `after` with a due
    lot, their lots, entries and balances written in bulk. The same entries and idempotency keys (one per
    account per run), so the run's cursor and a resumed run work alike on both databases. On SQLite the
    account locks are no-ops: the batch's transaction (IMMEDIATE) holds the database's one write lock."""
    due = PointLot.objects.filter(state=PointLot.State.AVAILABLE, remaining__gt=0, expires_at__lte=now)
    candidates = list(
        due.filter(account_id__gt=after)
        .order_by("account_id")
        .values_list("account_id", flat=True)
        .distinct()[:limit]
    )
    locked = _lock_accounts(candidates)
    if not locked:
        return locked, 0
    per_account: dict[int, list[PointLot]] = {}
    for lot in due.filter(account_id__in=locked).order_by("account_id", "pk"):
        per_account.setdefault(lot.account_id, []).append(lot)
    entries = LedgerEntry.objects.bulk_create(
        [
            LedgerEntry(
                account_id=account_id,
                kind=EntryKind.EXPIRE,
                points=-sum(lot.remaining for lot in lots),
                idempotency_key=f"expire:{account_id}:run{run.pk}",
                reason=reason,
                parts={"lots": len(lots)},
                occurred_at=now,
                created_at=now,
            )
            for account_id, lots in per_account.items()
        ]
    )
    changed = []
    for entry in entries:
        for lot in per_account[entry.account_id]:
            lot.expired += lot.remaining
            lot.remaining = 0
            lot.expire_entry_id = entry.pk
            changed.append(lot)
    PointLot.objects.bulk_update(changed, ["remaining", "expired", "expire_entry"], batch_size=500)
    accounts = list(LoyaltyAccount.objects.filter(pk__in=list(per_account)).order_by("pk"))
    points = {entry.account_id: -entry.points for entry in entries}
    for account in accounts:
        account.available -= points[account.pk]
    LoyaltyAccount.objects.bulk_update(accounts, ["available"], batch_size=500)
    return locked, sum(points.values())


def _notices_portable(now: datetime, horizon: datetime) -> int:
    lots = PointLot.objects.filter(
        state=PointLot.State.AVAILABLE,
        remaining__gt=0,
        notified_at__isnull=True,
        expires_at__gt=now,
        expires_at__lte=horizon,
    )
    per_account: dict[int, dict] = {}
    with transaction.atomic():
        rows = list(lots.values_list("id", "account_id", "remaining", "expires_at"))
        for lot_id, account_id, remaining, expires_at in rows:
            item = per_account.setdefault(
                account_id, {"points": 0, "expires_at": expires_at, "first_lot": lot_id}
            )
            item["points"] += remaining
            item["expires_at"] = min(item["expires_at"], expires_at)
            item["first_lot"] = min(item["first_lot"], lot_id)
        PointLot.objects.filter(pk__in=[r[0] for r in rows]).update(notified_at=now)
        customers = dict(
            LoyaltyAccount.objects.filter(pk__in=list(per_account)).values_list("pk", "customer_id")
        )
        events_append(
            events=[
                NewEvent(
                    type=POINTS_EXPIRING,
                    customer_id=customers.get(account_id),
                    occurred_at=now,
                    properties={
                        "account_id": account_id,
                        "points": item["points"],
                        "expires_at": item["expires_at"].isoformat(),
                    },
                    external_id=f"loyalty:points_expiring:{account_id}:{item['first_lot']}",
                )
                for account_id, item in per_account.items()
            ],
            now=now,
            skip_existing=True,
        )
    return len(per_account)
