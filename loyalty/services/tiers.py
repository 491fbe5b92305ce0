"""Tier qualification: upgrade the moment the threshold is reached; downgrade only at a review, after a
grace period.

- An account is upgraded (as far as it qualifies) whenever new earnings push its qualifying value over a
  threshold: inside the accrual transaction, under the account locks the accrual already holds.
- Each tier above the entry tier has a review date (`tier_review_months` after it was reached or last
  confirmed). At the review the member keeps the tier if the qualifying value over the window still
  reaches it; otherwise a grace period of `downgrade_grace_days` starts, and at its end the member drops
  to the tier they then qualify for. Qualifying again during grace confirms the tier.
- The entry tier is never reviewed.

Every move writes a `TierChange` and a `tier_changed` behaviour event for campaigns and journeys.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from crm.db import server_binding_cursor
from crm.services.event_log import NewEvent, events_append
from loyalty.event_types import TIER_CHANGED
from loyalty.models import LoyaltyAccount, Tier, TierChange
from loyalty.selectors import qualifying_values
from loyalty.services.programme import RuleSet, add_months, ruleset_load

logger = logging.getLogger(__name__)


def _rank(tier: Tier | None) -> int:
    return -1 if tier is None else tier.rank


def _review_at(ruleset: RuleSet, tier: Tier | None, start: datetime) -> datetime | None:
    entry = ruleset.entry_tier
    if tier is None or (entry is not None and tier.pk == entry.pk):
        return None
    return add_months(start, ruleset.programme.tier_review_months)


def _move(*, account, ruleset, to_tier, reason, value, now, changes, created_by=None, note="") -> None:
    from_tier = ruleset.tier_by_id(account.tier_id) or (
        Tier.objects.filter(pk=account.tier_id).first() if account.tier_id else None
    )
    changes.append(
        TierChange(
            account_id=account.pk,
            from_tier=from_tier,
            to_tier=to_tier,
            reason=reason,
            qualifying_value=value,
            note=note[:300],
            created_by=created_by,
            changed_at=now,
        )
    )
    if to_tier is not None and (from_tier is None or to_tier.pk != from_tier.pk):
        account.tier_id = to_tier.pk
        account.tier = to_tier
        account.tier_since = now


def _event_properties(change: TierChange) -> dict:
    return {
        "account_id": change.account_id,
        "from_tier": change.from_tier.code if change.from_tier else None,
        "to_tier": change.to_tier.code if change.to_tier else None,
        "direction": "up" if _rank(change.to_tier) > _rank(change.from_tier) else "down",
        "reason": change.reason,
        "qualifying_value": str(change.qualifying_value),
    }


def _changes_save(changes: list[TierChange], customers: dict[int, int | None], now: datetime) -> None:
    """Write the tier history and, for real moves, the tier_changed events (idempotent by external id)."""
    if not changes:
        return
    saved = TierChange.objects.bulk_create(changes)
    events_append(
        events=[
            NewEvent(
                type=TIER_CHANGED,
                customer_id=customers.get(change.account_id),
                occurred_at=now,
                properties=_event_properties(change),
                external_id=f"loyalty:tier_changed:{change.pk}",
            )
            for change in saved
            if change.from_tier_id != change.to_tier_id
        ],
        now=now,
        skip_existing=True,
    )


# The tier fields of the moved accounts, their TierChange rows and the tier_changed events of real moves,
# in one statement: on the accrual's hot path the three statements this took before (a multi-row UPDATE and
# _changes_save's two inserts) slowed every call in which a batch crossed a threshold, and those calls set
# the accrual's p99 (see BENCHMARKS.md, loyalty accrual). Server-bound
# (crm.db.server_binding_cursor), so PostgreSQL prepares it after a few runs.
_MOVES_SQL = """
WITH moved AS (  -- run for its effect: data-modifying CTEs always run, read or not
    UPDATE loyalty_loyaltyaccount AS a
       SET tier_id = m.tier_id, tier_since = m.tier_since, tier_review_at = m.review_at,
           downgrade_at = m.downgrade_at
      FROM unnest(%(account)s::bigint[], %(tier)s::bigint[], %(since)s::timestamptz[],
                  %(review)s::timestamptz[], %(downgrade)s::timestamptz[])
           AS m(id, tier_id, tier_since, review_at, downgrade_at)
     WHERE a.id = m.id
), changes AS (
    INSERT INTO loyalty_tierchange (account_id, from_tier_id, to_tier_id, reason, qualifying_value, note,
                                    created_by_id, changed_at)
    SELECT c.account_id, c.from_tier_id, c.to_tier_id, c.reason, c.value, c.note, c.created_by_id, %(now)s
      FROM unnest(%(c_account)s::bigint[], %(c_from)s::bigint[], %(c_to)s::bigint[], %(c_reason)s::text[],
                  %(c_value)s::numeric[], %(c_note)s::text[], %(c_by)s::integer[])
           AS c(account_id, from_tier_id, to_tier_id, reason, value, note, created_by_id)
    RETURNING id, account_id
), events AS (
    INSERT INTO crm_event (customer_id, type, properties, occurred_at, channel, external_id, received_at)
    SELECT e.customer_id, %(type)s, e.properties, %(now)s, '', 'loyalty:tier_changed:' || changes.id, %(now)s
      FROM changes
      JOIN unnest(%(e_account)s::bigint[], %(e_customer)s::bigint[], %(e_properties)s::jsonb[])
           AS e(account_id, customer_id, properties) ON e.account_id = changes.account_id
    ON CONFLICT DO NOTHING
)
SELECT id, account_id FROM changes
"""


def _moves_save(
    moved: list[LoyaltyAccount], changes: list[TierChange], customers: dict[int, int | None], now: datetime
) -> None:
    """Save the moved accounts' tier fields and `_changes_save(changes, ...)`, in one statement on PostgreSQL.
    Each account has at most one change here (tiers_upgrade_locked), so rows are matched by account."""
    if not changes and not moved:
        return
    if connection.vendor != "postgresql":
        for account in moved:
            _account_tier_save(account)
        _changes_save(changes, customers, now)
        return
    from psycopg.types.json import Jsonb

    real = [c for c in changes if c.from_tier_id != c.to_tier_id]
    params = {
        "account": [a.pk for a in moved],
        "tier": [a.tier_id for a in moved],
        "since": [a.tier_since for a in moved],
        "review": [a.tier_review_at for a in moved],
        "downgrade": [a.downgrade_at for a in moved],
        "c_account": [c.account_id for c in changes],
        "c_from": [c.from_tier_id for c in changes],
        "c_to": [c.to_tier_id for c in changes],
        "c_reason": [c.reason for c in changes],
        "c_value": [c.qualifying_value for c in changes],
        "c_note": [c.note for c in changes],
        "c_by": [c.created_by_id for c in changes],
        "e_account": [c.account_id for c in real],
        "e_customer": [customers.get(c.account_id) for c in real],
        "e_properties": [Jsonb(_event_properties(c)) for c in real],
        "type": TIER_CHANGED,
        "now": now,
    }
    with server_binding_cursor() as cursor:
        cursor.execute(_MOVES_SQL, params)
        ids = dict((account_id, pk) for pk, account_id in cursor.fetchall())
    for change in changes:
        change.pk = ids[change.account_id]


def _account_tier_save(account: LoyaltyAccount) -> None:
    LoyaltyAccount.objects.filter(pk=account.pk).update(
        tier_id=account.tier_id,
        tier_since=account.tier_since,
        tier_review_at=account.tier_review_at,
        downgrade_at=account.downgrade_at,
    )


def tiers_upgrade_locked(
    *, accounts: list[LoyaltyAccount], ruleset: RuleSet, now: datetime
) -> list[TierChange]:
    """Upgrade the accounts (locked by the caller) that now reach a better tier; confirm a tier in grace
    that is reached again."""
    if not ruleset.tiers:
        return []
    values = qualifying_values(
        account_ids=[a.pk for a in accounts],
        since=ruleset.window_start(now),
        basis=ruleset.programme.tier_basis,
        customer_by_account={a.pk: a.customer_id for a in accounts},
    )
    changes: list[TierChange] = []
    moved = []
    for account in accounts:
        value = values[account.pk]
        current = ruleset.tier_by_id(account.tier_id)
        qualified = ruleset.tier_for_value(value)
        if qualified is None:
            continue
        if _rank(qualified) > _rank(current):
            _move(
                account=account,
                ruleset=ruleset,
                to_tier=qualified,
                reason=TierChange.Reason.UPGRADE,
                value=value,
                now=now,
                changes=changes,
            )
            account.tier_review_at = _review_at(ruleset, qualified, now)
            account.downgrade_at = None
            moved.append(account)
        elif account.downgrade_at is not None and _rank(qualified) >= _rank(current):
            _move(
                account=account,
                ruleset=ruleset,
                to_tier=current,
                reason=TierChange.Reason.RENEWED,
                value=value,
                now=now,
                changes=changes,
            )
            account.tier_review_at = _review_at(ruleset, current, now)
            account.downgrade_at = None
            moved.append(account)
    _moves_save(moved, changes, {a.pk: a.customer_id for a in accounts}, now)
    return changes


def tier_evaluate(*, account: LoyaltyAccount, now: datetime | None = None) -> list[TierChange]:
    """Upgrade one account now if it qualifies (after a manual adjustment or a backfill)."""
    now = now or timezone.now()
    with transaction.atomic():
        locked = LoyaltyAccount.objects.select_for_update().get(pk=account.pk)
        return tiers_upgrade_locked(accounts=[locked], ruleset=ruleset_load(), now=now)


def tier_reviews_run(*, now: datetime | None = None, batch_size: int = 1000) -> dict[str, int]:
    """Review every account whose review date or grace end has come: confirm, start grace, or downgrade.
    Accounts another transaction holds are skipped (SKIP LOCKED) and picked up by the next run."""
    now = now or timezone.now()
    ruleset = ruleset_load()
    counts = {"renewed": 0, "grace": 0, "downgraded": 0, "upgraded": 0}
    grace = timedelta(days=ruleset.programme.downgrade_grace_days)
    due = Q(status=LoyaltyAccount.Status.ACTIVE) & (
        Q(downgrade_at__lte=now) | Q(downgrade_at__isnull=True, tier_review_at__lte=now)
    )
    last_id = 0
    while True:
        with transaction.atomic():
            accounts = list(
                LoyaltyAccount.objects.select_for_update(skip_locked=True)
                .filter(due, id__gt=last_id)
                .order_by("id")[:batch_size]
            )
            if not accounts:
                break
            last_id = accounts[-1].pk
            values = qualifying_values(
                account_ids=[a.pk for a in accounts],
                since=ruleset.window_start(now),
                basis=ruleset.programme.tier_basis,
                customer_by_account={a.pk: a.customer_id for a in accounts},
            )
            changes: list[TierChange] = []
            for account in accounts:
                value = values[account.pk]
                current = ruleset.tier_by_id(account.tier_id) or (
                    Tier.objects.filter(pk=account.tier_id).first() if account.tier_id else None
                )
                qualified = ruleset.tier_for_value(value) or ruleset.entry_tier
                if _rank(qualified) >= _rank(current):
                    reason = (
                        TierChange.Reason.UPGRADE
                        if _rank(qualified) > _rank(current)
                        else TierChange.Reason.RENEWED
                    )
                    counts["upgraded" if reason == TierChange.Reason.UPGRADE else "renewed"] += 1
                    _move(
                        account=account,
                        ruleset=ruleset,
                        to_tier=qualified,
                        reason=reason,
                        value=value,
                        now=now,
                        changes=changes,
                    )
                    account.tier_review_at = _review_at(ruleset, qualified, now)
                    account.downgrade_at = None
                elif account.downgrade_at is None and grace:
                    counts["grace"] += 1
                    _move(
                        account=account,
                        ruleset=ruleset,
                        to_tier=current,
                        reason=TierChange.Reason.GRACE,
                        value=value,
                        now=now,
                        changes=changes,
                    )
                    account.downgrade_at = (account.tier_review_at or now) + grace
                else:
                    counts["downgraded"] += 1
                    _move(
                        account=account,
                        ruleset=ruleset,
                        to_tier=qualified,
                        reason=TierChange.Reason.DOWNGRADE,
                        value=value,
                        now=now,
                        changes=changes,
                    )
                    account.tier_review_at = _review_at(ruleset, qualified, now)
                    account.downgrade_at = None
                _account_tier_save(account)
            _changes_save(changes, {a.pk: a.customer_id for a in accounts}, now)
        if len(accounts) < batch_size:
            break
    logger.info("tier reviews done", extra=counts)
    return counts


def tier_set(
    *, account: LoyaltyAccount, tier: Tier, note: str, created_by=None, now: datetime | None = None
) -> TierChange:
    """Staff put a member on a tier by hand (a status match, a complaint); the review clock restarts."""
    now = now or timezone.now()
    ruleset = ruleset_load()
    with transaction.atomic():
        locked = LoyaltyAccount.objects.select_for_update().get(pk=account.pk)
        changes: list[TierChange] = []
        _move(
            account=locked,
            ruleset=ruleset,
            to_tier=tier,
            reason=TierChange.Reason.MANUAL,
            value=0,
            now=now,
            changes=changes,
            created_by=created_by,
            note=note,
        )
        locked.tier_review_at = _review_at(ruleset, tier, now)
        locked.downgrade_at = None
        _account_tier_save(locked)
        _changes_save(changes, {locked.pk: locked.customer_id}, now)
    return changes[0]
