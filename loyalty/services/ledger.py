"""Writes to the points ledger: every one idempotent, every one under the account's row lock.

The rules every function here keeps:

- An entry's `idempotency_key` is unique. Applying the same request again returns the first entry and
  changes nothing; the same key with a different payload raises `IdempotencyConflict` (HTTP 409).
- Anything that changes an account's entries, lots or debts holds the account row lock first
  (`SELECT ... FOR UPDATE`, several accounts in primary-key order). Lots are never locked on their own,
  so writers only ever wait on account rows, in one order: no deadlocks, no overdraft. The CHECK
  constraint `available >= 0` is the last line of defence.
- The cached balances on the account move in the same transaction as the entries; they are the sums of
  the entries' columns and `account_rebuild_balances` recomputes them.
- Spending takes the oldest lots first: soonest expiry, then the lot written first (ids grow with time;
  this is also the order of the FIFO index, so no sort is needed).
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from datetime import datetime

import psycopg
from django.db import IntegrityError, connection, transaction
from django.db.models import Sum
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from crm.db import server_binding_cursor
from loyalty.ledger_reasons import reason_code
from loyalty.models import (
    EntryKind,
    LedgerEntry,
    LotConsumption,
    LoyaltyAccount,
    ManualAdjustment,
    OwedPoints,
    PointLot,
)

# --- Errors -----------------------------------------------------------------------------------------


class LoyaltyError(Exception):
    """A request the ledger refuses; `code` is stable for API clients, `status_code` the HTTP status."""

    code = "loyalty_error"
    status_code = 400
    default_message = _("The points request was refused.")

    def __init__(self, message=None, **details):
        self.message = message or self.default_message
        self.details = details
        super().__init__(str(self.message))


class InsufficientPoints(LoyaltyError):
    code = "insufficient_points"
    status_code = 409
    default_message = _("Not enough points available.")


class IdempotencyConflict(LoyaltyError):
    code = "idempotency_conflict"
    status_code = 409
    default_message = _("This idempotency key was already used for a different request.")


class InvalidPoints(LoyaltyError):
    code = "invalid_points"
    status_code = 400
    default_message = _("Points must be a positive whole number.")


class AccountInactive(LoyaltyError):
    code = "account_inactive"
    status_code = 409
    default_message = _("This loyalty account was merged into another one.")


class TransferDisabled(LoyaltyError):
    code = "transfer_disabled"
    status_code = 403
    default_message = _("Points transfer is not enabled for this programme.")


# --- Small helpers ----------------------------------------------------------------------------------


def payload_hash(payload: dict) -> str:
    """A stable fingerprint of what a request asked for, stored with its entry to spot a reused key."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def entry_replayed(*, idempotency_key: str, fingerprint: str) -> LedgerEntry | None:
    """The entry an earlier identical request wrote, or None; refuses a reused key with another payload."""
    entry = LedgerEntry.objects.filter(idempotency_key=idempotency_key).first()
    if entry is not None and entry.payload_hash != fingerprint:
        raise IdempotencyConflict(idempotency_key=idempotency_key)
    return entry


def _check_points(points) -> int:
    if isinstance(points, bool) or not isinstance(points, int) or points <= 0:
        raise InvalidPoints(points=points)
    return points


def accounts_lock(account_ids) -> dict[int, LoyaltyAccount]:
    """Lock accounts in primary-key order (the one lock order of the app) and return them by id."""
    ids = sorted(set(account_ids))
    return {a.pk: a for a in LoyaltyAccount.objects.select_for_update().filter(pk__in=ids).order_by("pk")}


def account_lock(account_id: int) -> LoyaltyAccount:
    return LoyaltyAccount.objects.select_for_update().get(pk=account_id)


def balances_save(account: LoyaltyAccount) -> None:
    """Write the (locked) account's in-memory balances; callers changed them alongside their entries."""
    LoyaltyAccount.objects.filter(pk=account.pk).update(
        available=account.available, pending=account.pending, owed=account.owed
    )


# --- Accounts ---------------------------------------------------------------------------------------


def account_for_customer(*, customer, now: datetime | None = None) -> LoyaltyAccount:
    """The customer's loyalty account, created (at the entry tier) the first time it is needed."""
    account = LoyaltyAccount.objects.filter(customer_id=customer.pk).select_related("tier").first()
    if account is not None:
        return account
    from loyalty.services.programme import ruleset_load

    now = now or timezone.now()
    ruleset = ruleset_load()
    entry_tier = ruleset.entry_tier
    try:
        with transaction.atomic():
            account = LoyaltyAccount.objects.create(
                customer_id=customer.pk,
                tier=entry_tier,
                tier_since=now if entry_tier else None,
                created_at=now,
            )
    except IntegrityError:
        # Another request created it between our read and our insert.
        account = LoyaltyAccount.objects.select_related("tier").get(customer_id=customer.pk)
    return account


def accounts_for_customers(*, customer_ids, now: datetime, entry_tier_id: int | None) -> dict[int, int]:
    """{customer id: account id} for many customers at once, creating the missing accounts in one insert."""
    customer_ids = set(customer_ids)
    found = dict(LoyaltyAccount.objects.filter(customer_id__in=customer_ids).values_list("customer_id", "id"))
    missing = customer_ids - set(found)
    if missing:
        LoyaltyAccount.objects.bulk_create(
            [
                LoyaltyAccount(
                    customer_id=cid,
                    tier_id=entry_tier_id,
                    tier_since=now if entry_tier_id else None,
                    created_at=now,
                )
                for cid in sorted(missing)
            ],
            ignore_conflicts=True,  # a concurrent creator wins; we read its row below
        )
        found.update(LoyaltyAccount.objects.filter(customer_id__in=missing).values_list("customer_id", "id"))
    return found


def accounts_lock_for_customers(
    *, customer_ids, now: datetime, entry_tier_id: int | None
) -> tuple[dict[int, int], dict[int, LoyaltyAccount]]:
    """Find (creating the missing ones) and lock the accounts of these customers, in primary-key order:
    ({customer id: account id}, {account id: locked account}). One query when they all exist."""
    ids = sorted(set(customer_ids))
    locked = _accounts_select_for_update(ids)
    missing = set(ids) - {a.customer_id for a in locked}
    if missing:
        accounts_for_customers(customer_ids=missing, now=now, entry_tier_id=entry_tier_id)
        # New rows have the highest ids, so locking them second keeps the ascending order.
        locked += _accounts_select_for_update(sorted(missing))
    return {a.customer_id: a.pk for a in locked}, {a.pk: a for a in locked}


@functools.cache
def _accounts_lock_sql() -> tuple[str, list[str]]:
    fields = LoyaltyAccount._meta.concrete_fields
    columns = ", ".join(connection.ops.quote_name(f.column) for f in fields)
    sql = (
        f"SELECT {columns} FROM {LoyaltyAccount._meta.db_table} "
        "WHERE customer_id = ANY(%s::bigint[]) ORDER BY id FOR UPDATE"
    )
    return sql, [f.attname for f in fields]


def _accounts_select_for_update(customer_ids: list[int]) -> list[LoyaltyAccount]:
    """The accounts of these customers, locked in primary-key order. On PostgreSQL one prepared statement
    (an array parameter, so the text is the same whatever the count; an ORM `IN (...)` list is new SQL,
    parsed and planned again, for every batch size): every accrual call starts here."""
    if connection.vendor != "postgresql":
        return list(
            LoyaltyAccount.objects.select_for_update().filter(customer_id__in=customer_ids).order_by("pk")
        )
    sql, attnames = _accounts_lock_sql()
    with server_binding_cursor() as cursor:
        cursor.execute(sql, [list(customer_ids)])
        rows = cursor.fetchall()
    return [LoyaltyAccount.from_db(connection.alias, attnames, row) for row in rows]


# --- Lots -------------------------------------------------------------------------------------------


@dataclass
class Take:
    lot_id: int
    points: int


def lots_take_fifo(*, account: LoyaltyAccount, points: int, entry: LedgerEntry, exclude_lot_id=None) -> int:
    """Consume up to `points` from the account's available lots, soonest-expiring first, recording a
    `LotConsumption` per lot. Returns the points taken. The caller holds the account lock."""
    takes: list[Take] = []
    still = points
    offset = 0
    while still > 0:
        qs = PointLot.objects.filter(account_id=account.pk, state=PointLot.State.AVAILABLE, remaining__gt=0)
        if exclude_lot_id:
            qs = qs.exclude(pk=exclude_lot_id)
        chunk = list(qs.order_by("expires_at", "id").values_list("id", "remaining")[offset : offset + 50])
        if not chunk:
            break
        offset += len(chunk)
        for lot_id, remaining in chunk:
            n = min(remaining, still)
            takes.append(Take(lot_id, n))
            still -= n
            if still == 0:
                break
    lots_consume(takes=takes, entry=entry)
    return points - still


def lots_consume(*, takes: list[Take], entry: LedgerEntry) -> None:
    """Record what `entry` took out of each lot, and lower the lots' `remaining` (one statement each)."""
    takes = [t for t in takes if t.points > 0]
    if not takes:
        return
    LotConsumption.objects.bulk_create(
        [LotConsumption(lot_id=t.lot_id, entry=entry, points=t.points) for t in takes]
    )
    values = ", ".join(["(%s, %s)"] * len(takes))
    params = [v for t in takes for v in (t.lot_id, t.points)]
    with connection.cursor() as cursor:
        cursor.execute(
            # VALUES columns are column1, column2... in both PostgreSQL and SQLite (make run).
            f"""UPDATE loyalty_pointlot AS l
                   SET remaining = l.remaining - v.column2, consumed = l.consumed + v.column2
                  FROM (VALUES {values}) AS v
                 WHERE l.id = v.column1""",
            params,
        )


def lot_create(
    *,
    account: LoyaltyAccount,
    entry: LedgerEntry,
    points: int,
    pending: bool,
    earned_at: datetime,
    available_at: datetime,
    expires_at: datetime | None,
    order_line_id: int | None = None,
) -> PointLot:
    return PointLot.objects.create(
        account_id=account.pk,
        earn_entry=entry,
        order_line_id=order_line_id,
        state=PointLot.State.PENDING if pending else PointLot.State.AVAILABLE,
        points=points,
        remaining=points,
        earned_at=earned_at,
        available_at=available_at,
        expires_at=expires_at,
    )


# --- Owed points --------------------------------------------------------------------------------------


def owed_settle(*, account: LoyaltyAccount, now: datetime, trigger_key: str) -> LedgerEntry | None:
    """Pay off what the account owes (oldest debt first) from its available points. Called, under the
    account lock, whenever points become available. The caller saves the balances."""
    amount = min(account.owed, account.available)
    if amount <= 0:
        return None
    key = f"settle:{trigger_key}"
    fingerprint = payload_hash({"op": "settle", "account": account.pk, "points": amount})
    existing = entry_replayed(idempotency_key=key, fingerprint=fingerprint)
    if existing is not None:
        return existing
    entry = LedgerEntry.objects.create(
        account_id=account.pk,
        kind=EntryKind.SETTLE,
        points=-amount,
        owed_delta=-amount,
        idempotency_key=key,
        payload_hash=fingerprint,
        reason=reason_code("settled"),
        occurred_at=now,
        created_at=now,
    )
    taken = lots_take_fifo(account=account, points=amount, entry=entry)
    if taken != amount:  # available is the sum of the open lots: a mismatch is a broken ledger
        raise AssertionError(f"account {account.pk}: available {account.available} but lots hold {taken}")
    left = amount
    for debt in OwedPoints.objects.filter(account_id=account.pk, remaining__gt=0).order_by("id"):
        n = min(debt.remaining, left)
        OwedPoints.objects.filter(pk=debt.pk).update(remaining=debt.remaining - n)
        left -= n
        if left == 0:
            break
    account.available -= amount
    account.owed -= amount
    return entry


# --- Spending and adjusting ---------------------------------------------------------------------------


def points_redeem(
    *,
    account: LoyaltyAccount,
    points: int,
    idempotency_key: str,
    reason: str,
    reference: str = "",
    created_by=None,
    now: datetime | None = None,
) -> LedgerEntry:
    """Spend `points` from the available balance, oldest lots first.

    Raises InsufficientPoints (nothing written) when the balance is short, IdempotencyConflict when the key
    was used for a different request. Safe to call inside a caller's transaction (a reward redemption):
    then the debit commits or rolls back with it."""
    _check_points(points)
    now = now or timezone.now()
    fingerprint = payload_hash(
        {"op": "redeem", "account": account.pk, "points": points, "reference": reference}
    )
    try:
        return _redeem(
            account=account,
            points=points,
            idempotency_key=idempotency_key,
            fingerprint=fingerprint,
            reason=reason,
            reference=reference,
            created_by=created_by,
            now=now,
        )
    except IntegrityError:
        # The same key was written for another account between our check and our insert.
        existing = entry_replayed(idempotency_key=idempotency_key, fingerprint=fingerprint)
        if existing is not None:
            return existing
        raise


def _redeem(*, account, points, idempotency_key, fingerprint, reason, reference, created_by, now):
    if connection.vendor == "postgresql":
        entry = _redeem_postgresql(
            account=account,
            points=points,
            idempotency_key=idempotency_key,
            fingerprint=fingerprint,
            reason=reason,
            reference=reference,
            created_by=created_by,
            now=now,
        )
        if entry is not None:
            return entry
    with transaction.atomic():
        existing = entry_replayed(idempotency_key=idempotency_key, fingerprint=fingerprint)
        if existing is not None:
            return existing
        locked = account_lock(account.pk)
        # A concurrent retry of this very request may have committed while we waited for the lock.
        existing = entry_replayed(idempotency_key=idempotency_key, fingerprint=fingerprint)
        if existing is not None:
            return existing
        if locked.status != LoyaltyAccount.Status.ACTIVE:
            raise AccountInactive(account=account.pk)
        if locked.available < points:
            raise InsufficientPoints(available=locked.available, requested=points)
        entry = LedgerEntry.objects.create(
            account_id=locked.pk,
            kind=EntryKind.REDEEM,
            points=-points,
            idempotency_key=idempotency_key,
            payload_hash=fingerprint,
            reason=reason[:300],
            reference=reference[:200],
            created_by=created_by,
            occurred_at=now,
            created_at=now,
        )
        taken = lots_take_fifo(account=locked, points=points, entry=entry)
        if taken != points:
            raise AssertionError(f"account {locked.pk}: available {locked.available} but lots hold {taken}")
        locked.available -= points
        balances_save(locked)
    _refresh(account, locked)
    return entry


# The whole redemption in one statement, run after the account row is locked (a separate statement, so
# this one's snapshot sees whatever the previous lock holder committed): replay check, FIFO choice of lots
# (running sums over the oldest FAST_LOTS open lots), the entry, the consumptions, the lots and the
# balance. Two round trips instead of eight ORM queries: redemption is the hot path of the member API.
FAST_LOTS = 50
_REDEEM_SQL = """
WITH prior AS (
    SELECT id, payload_hash FROM loyalty_ledgerentry WHERE idempotency_key = %(key)s
), acct AS (
    SELECT available, status FROM loyalty_loyaltyaccount WHERE id = %(account)s
), open_lots AS (
    SELECT id, remaining, SUM(remaining) OVER (ORDER BY expires_at, id) AS upto
      FROM (SELECT id, remaining, expires_at, earned_at FROM loyalty_pointlot
             WHERE account_id = %(account)s AND state = 'available' AND remaining > 0
             ORDER BY expires_at, id LIMIT %(max_lots)s) oldest
), take AS (
    SELECT id, LEAST(remaining, %(points)s - (upto - remaining)) AS n FROM open_lots WHERE upto - remaining < %(points)s
), go AS (
    SELECT 1 FROM acct
     WHERE status = 'active' AND available >= %(points)s AND NOT EXISTS (SELECT 1 FROM prior)
       AND (SELECT COALESCE(SUM(n), 0) FROM take) = %(points)s
), e AS (
    INSERT INTO loyalty_ledgerentry (account_id, kind, points, pending_delta, owed_delta, idempotency_key, payload_hash,
                                     reason, reference, created_by_id, parts, occurred_at, created_at)
    SELECT %(account)s, 'redeem', -%(points)s, 0, 0, %(key)s, %(hash)s, %(reason)s, %(reference)s, %(user)s,
           '{}'::jsonb, %(now)s, %(now)s
      FROM go
 RETURNING id
), consumed AS (
    INSERT INTO loyalty_lotconsumption (lot_id, entry_id, points) SELECT take.id, e.id, take.n FROM take CROSS JOIN e
), lots AS (
    UPDATE loyalty_pointlot l SET remaining = l.remaining - take.n, consumed = l.consumed + take.n
      FROM take WHERE l.id = take.id AND EXISTS (SELECT 1 FROM e)
), balance AS (
    UPDATE loyalty_loyaltyaccount a SET available = a.available - %(points)s
     WHERE a.id = %(account)s AND EXISTS (SELECT 1 FROM e)
 RETURNING a.available
)
SELECT (SELECT id FROM e), (SELECT id FROM prior), (SELECT payload_hash FROM prior), (SELECT available FROM acct),
       (SELECT available FROM balance), (SELECT status FROM acct)
"""


def _redeem_postgresql(*, account, points, idempotency_key, fingerprint, reason, reference, created_by, now):
    """The fast path; returns None when the redemption needs more than FAST_LOTS lots (the general path
    takes over, still under the lock)."""
    with transaction.atomic():
        connection.ensure_connection()
        conn = connection.connection
        params = {
            "key": idempotency_key,
            "hash": fingerprint,
            "account": account.pk,
            "points": points,
            "max_lots": FAST_LOTS,
            "reason": reason[:300],
            "reference": reference[:200],
            "user": created_by.pk if created_by is not None else None,
            "now": now,
        }
        # Pipelined: the lock and the work go to the server together, so no round trip to this process
        # (which may be waiting for a core) happens while the account row is held; the second statement
        # still starts after the lock is granted, with a snapshot that sees the previous holder's commit.
        # Django's error wrapper keeps a unique violation a django.db.IntegrityError for the caller.
        with connection.wrap_database_errors:
            with psycopg.ClientCursor(conn) as lock, psycopg.ClientCursor(conn) as work:
                with conn.pipeline():
                    lock.execute(
                        "SELECT 1 FROM loyalty_loyaltyaccount WHERE id = %s FOR UPDATE", [account.pk]
                    )
                    work.execute(_REDEEM_SQL, params)
                if lock.fetchone() is None:
                    raise LoyaltyAccount.DoesNotExist(account.pk)
                entry_id, prior_id, prior_hash, available, after, status = work.fetchone()
        if prior_id is not None:
            if prior_hash != fingerprint:
                raise IdempotencyConflict(idempotency_key=idempotency_key)
            return LedgerEntry.objects.get(pk=prior_id)
        if entry_id is None:
            if status != LoyaltyAccount.Status.ACTIVE:
                raise AccountInactive(account=account.pk)
            if available < points:
                raise InsufficientPoints(available=available, requested=points)
            return None
    account.available = after
    entry = LedgerEntry(
        id=entry_id,
        account_id=account.pk,
        kind=EntryKind.REDEEM,
        points=-points,
        idempotency_key=idempotency_key,
        payload_hash=fingerprint,
        reason=reason[:300],
        reference=reference[:200],
        created_by=created_by,
        occurred_at=now,
        created_at=now,
    )
    entry._state.adding = False
    entry._state.db = "default"
    return entry


def points_adjust(
    *,
    account: LoyaltyAccount,
    points: int,
    idempotency_key: str,
    reason: str,
    created_by=None,
    reference: str = "",
    allow_owed: bool = False,
    now: datetime | None = None,
) -> LedgerEntry:
    """A manual adjustment: positive adds an available lot, negative spends oldest lots first.

    A removal larger than the available balance is refused (InsufficientPoints), or with `allow_owed`
    takes what is there and records the rest as owed points, settled from later earnings."""
    if isinstance(points, bool) or not isinstance(points, int) or points == 0:
        raise InvalidPoints(points=points)
    if not (reason or "").strip():
        raise LoyaltyError(_("A reason is required for a manual adjustment."))
    now = now or timezone.now()
    fingerprint = payload_hash(
        {"op": "adjust", "account": account.pk, "points": points, "reference": reference, "reason": reason}
    )
    with transaction.atomic():
        existing = entry_replayed(idempotency_key=idempotency_key, fingerprint=fingerprint)
        if existing is not None:
            return existing
        locked = account_lock(account.pk)
        existing = entry_replayed(idempotency_key=idempotency_key, fingerprint=fingerprint)
        if existing is not None:
            return existing
        if locked.status != LoyaltyAccount.Status.ACTIVE:
            raise AccountInactive(account=account.pk)
        entry = adjust_locked(
            account=locked,
            points=points,
            idempotency_key=idempotency_key,
            fingerprint=fingerprint,
            reason=reason,
            reference=reference,
            created_by=created_by,
            allow_owed=allow_owed,
            now=now,
        )
        balances_save(locked)
    _refresh(account, locked)
    return entry


def manual_adjustment_create(
    *, account: LoyaltyAccount, points: int, reason: str, idempotency_key: str, created_by, now=None
) -> ManualAdjustment:
    """A staff adjustment from the admin form: the ledger entry and its audit record, together. The
    form's one-time token is the key, so a double submit (or a browser retry) adjusts once."""
    now = now or timezone.now()
    key = f"manual:{idempotency_key}"
    with transaction.atomic():
        entry = points_adjust(
            account=account,
            points=points,
            idempotency_key=key,
            reason=reason,
            created_by=created_by,
            reference="admin",
            now=now,
        )
        adjustment, _created = ManualAdjustment.objects.get_or_create(
            idempotency_key=key,
            defaults={
                "account_id": account.pk,
                "points": points,
                "reason": reason[:300],
                "entry": entry,
                "created_by": created_by,
                "created_at": now,
            },
        )
    return adjustment


def adjust_locked(
    *, account, points, idempotency_key, fingerprint, reason, reference, created_by, allow_owed, now
) -> LedgerEntry:
    """The body of an adjustment, for callers that already hold the account lock (bulk adjustments)."""
    from loyalty.services.programme import ruleset_load

    if points > 0:
        entry = LedgerEntry.objects.create(
            account_id=account.pk,
            kind=EntryKind.ADJUST,
            points=points,
            idempotency_key=idempotency_key,
            payload_hash=fingerprint,
            reason=reason[:300],
            reference=reference[:200],
            created_by=created_by,
            occurred_at=now,
            created_at=now,
        )
        lot_create(
            account=account,
            entry=entry,
            points=points,
            pending=False,
            earned_at=now,
            available_at=now,
            expires_at=ruleset_load().expires_at(now),
        )
        account.available += points
        owed_settle(account=account, now=now, trigger_key=idempotency_key)
        return entry
    wanted = -points
    if wanted > account.available and not allow_owed:
        raise InsufficientPoints(available=account.available, requested=wanted)
    taken_target = min(wanted, account.available)
    owed = wanted - taken_target
    entry = LedgerEntry.objects.create(
        account_id=account.pk,
        kind=EntryKind.ADJUST,
        points=-taken_target,
        owed_delta=owed,
        idempotency_key=idempotency_key,
        payload_hash=fingerprint,
        reason=reason[:300],
        reference=reference[:200],
        created_by=created_by,
        occurred_at=now,
        created_at=now,
    )
    taken = lots_take_fifo(account=account, points=taken_target, entry=entry)
    if taken != taken_target:
        raise AssertionError(f"account {account.pk}: available {account.available} but lots hold {taken}")
    if owed:
        OwedPoints.objects.create(
            account_id=account.pk, entry=entry, points=owed, remaining=owed, created_at=now
        )
    account.available -= taken_target
    account.owed += owed
    return entry


def points_transfer(
    *,
    source: LoyaltyAccount,
    target: LoyaltyAccount,
    points: int,
    idempotency_key: str,
    reason: str = "",
    created_by=None,
    now: datetime | None = None,
) -> tuple[LedgerEntry, LedgerEntry]:
    """Move available points between two members (only when the programme enables transfers). The target
    gets a new lot that keeps the programme's expiry from the transfer date."""
    from loyalty.services.programme import ruleset_load

    _check_points(points)
    if source.pk == target.pk:
        raise LoyaltyError(_("Cannot transfer points to the same account."))
    ruleset = ruleset_load()
    if not ruleset.programme.transfer_enabled:
        raise TransferDisabled()
    now = now or timezone.now()
    fingerprint = payload_hash({"op": "transfer", "source": source.pk, "target": target.pk, "points": points})
    out_key, in_key = f"{idempotency_key}:out", f"{idempotency_key}:in"
    with transaction.atomic():
        existing = entry_replayed(idempotency_key=out_key, fingerprint=fingerprint)
        if existing is not None:
            return existing, LedgerEntry.objects.get(idempotency_key=in_key)
        locked = accounts_lock([source.pk, target.pk])
        existing = entry_replayed(idempotency_key=out_key, fingerprint=fingerprint)
        if existing is not None:
            return existing, LedgerEntry.objects.get(idempotency_key=in_key)
        src, dst = locked[source.pk], locked[target.pk]
        if src.status != LoyaltyAccount.Status.ACTIVE or dst.status != LoyaltyAccount.Status.ACTIVE:
            raise AccountInactive()
        if src.available < points:
            raise InsufficientPoints(available=src.available, requested=points)
        out = LedgerEntry.objects.create(
            account_id=src.pk,
            kind=EntryKind.TRANSFER_OUT,
            points=-points,
            idempotency_key=out_key,
            payload_hash=fingerprint,
            reason=reason[:300],
            reference=f"account:{dst.pk}",
            created_by=created_by,
            occurred_at=now,
            created_at=now,
        )
        lots_take_fifo(account=src, points=points, entry=out)
        src.available -= points
        into = LedgerEntry.objects.create(
            account_id=dst.pk,
            kind=EntryKind.TRANSFER_IN,
            points=points,
            idempotency_key=in_key,
            payload_hash=fingerprint,
            reason=reason[:300],
            reference=f"account:{src.pk}",
            created_by=created_by,
            occurred_at=now,
            created_at=now,
        )
        lot_create(
            account=dst,
            entry=into,
            points=points,
            pending=False,
            earned_at=now,
            available_at=now,
            expires_at=ruleset.expires_at(now),
        )
        dst.available += points
        owed_settle(account=dst, now=now, trigger_key=in_key)
        balances_save(src)
        balances_save(dst)
    _refresh(source, src)
    _refresh(target, dst)
    return out, into


def _refresh(account: LoyaltyAccount, locked: LoyaltyAccount) -> None:
    """Let the caller's account object show the balances just written."""
    if account is not locked:
        account.available, account.pending, account.owed = locked.available, locked.pending, locked.owed


# --- Rebuilding ---------------------------------------------------------------------------------------


def balances_from_entries(*, account_id: int) -> dict[str, int]:
    sums = LedgerEntry.objects.filter(account_id=account_id).aggregate(
        available=Sum("points"), pending=Sum("pending_delta"), owed=Sum("owed_delta")
    )
    return {k: v or 0 for k, v in sums.items()}


def account_rebuild_balances(*, account: LoyaltyAccount) -> dict[str, int]:
    """Recompute the cached balances from the entries (under the lock) and return them."""
    with transaction.atomic():
        locked = account_lock(account.pk)
        sums = balances_from_entries(account_id=locked.pk)
        locked.available, locked.pending, locked.owed = sums["available"], sums["pending"], sums["owed"]
        balances_save(locked)
    _refresh(account, locked)
    return sums
