"""Earning points: orders (pending through the return window), refunds (exact reversals), bonuses.

Orders arrive through the crm behaviour-event log (`order_placed`, `order_refunded`), read by a cursor
(`events_process`). Work is done in batches: one transaction locks the batch's accounts (primary-key
order), skips what an earlier run already wrote (idempotency keys `order:<external id>:line:<n>`), and
writes every entry, lot and balance change with a few set-based statements. A replay of any batch adds
nothing.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal

from django.db import connection, transaction
from django.utils import timezone

from crm.db import server_binding_cursor
from crm.models import Order
from crm.services.event_log import LoggedEvent, NewEvent, event_log_read, events_append
from loyalty.event_types import POINTS_EARNED
from loyalty.ledger_reasons import reason_code
from loyalty.models import (
    EarnRule,
    EntryKind,
    LedgerEntry,
    LotConsumption,
    LoyaltyAccount,
    OwedPoints,
    PointLot,
    Referral,
    RuleUsage,
)
from loyalty.services.earning import (
    PARTS,
    LineData,
    OrderData,
    earn_key,
    effective_lines,
    order_earnings,
    refunded_fraction,
    reversal_target,
)
from loyalty.services.ledger import (
    accounts_for_customers,
    accounts_lock,
    accounts_lock_for_customers,
    owed_settle,
    payload_hash,
)
from loyalty.services.programme import RuleSet, ruleset_load

logger = logging.getLogger(__name__)

ORDER_PLACED = "order_placed"
ORDER_REFUNDED = "order_refunded"
ACCRUAL_CONSUMER = "loyalty.accrual"  # its crm EventLogCursor


# --- Batch writer -----------------------------------------------------------------------------------


@dataclass
class _Earn:
    account: LoyaltyAccount
    points: int
    pending: bool
    key: str
    fingerprint: str
    earned_at: datetime
    available_at: datetime
    expires_at: datetime | None
    reason: str
    reference: str = ""
    order_id: int | None = None
    order_line_id: int | None = None
    rule_id: int | None = None
    parts: dict = field(default_factory=dict)
    source_event_id: int | None = None


class EarnWriter:
    """Collects earnings for accounts the caller has locked and writes them in three statements: the
    entries, their lots, the accounts' balances; then one `points_earned` event per account that gained
    points, appended to crm's log in the same transaction (so the event exists exactly when the entries
    do, and a replay that writes no entry writes no event)."""

    def __init__(self, now: datetime, done: set[str] | None = None):
        self.now = now
        self.items: dict[str, _Earn] = {}
        self.done = done if done is not None else set()  # keys already in the ledger

    def add(self, item: _Earn) -> None:
        if item.points > 0:
            self.items.setdefault(item.key, item)  # the same key twice in a batch is one earning

    def keys(self) -> list[str]:
        return list(self.items)

    def drop(self, keys) -> None:
        for key in keys:
            self.items.pop(key, None)

    def flush(self) -> list[Written]:
        """Write the collected earnings that are not in the ledger yet (the others are skipped: the
        first write of a key wins) and move the accounts' balances. Returns what was written."""
        items = list(self.items.values())
        self.items = {}
        if not items:
            return []
        if connection.vendor == "postgresql":
            written = self._flush_postgresql(items)
        else:
            written = self._flush_portable(items)
        accounts = {i.account.pk: i.account for i in items}
        for w in written:
            account = accounts[w.account_id]
            account.available += w.points
            account.pending += w.pending_delta
        if connection.vendor != "postgresql":
            balances_save_many(accounts[a] for a in {w.account_id for w in written})
        _points_earned_append(written, {i.key: i for i in items}, self.now)
        return written

    def _flush_postgresql(self, items: list[_Earn]) -> list[Written]:
        # One statement: the entries (a key already written is skipped, which also settles a race with
        # a concurrent run), their lots, and the accounts' balances. Arrays keep it one round trip.
        with server_binding_cursor() as cursor:
            cursor.execute(
                """
                WITH x AS (
                    SELECT * FROM unnest(
                        %(account)b::bigint[], %(points)b::bigint[], %(pending)b::bigint[], %(key)b::text[],
                        %(hash)b::text[], %(reason)b::text[], %(reference)b::text[], %(order)b::bigint[],
                        %(line)b::bigint[], %(rule)b::bigint[], %(event)b::bigint[], %(parts)b::text[],
                        %(earned)b::timestamptz[], %(available)b::timestamptz[], %(expires)b::timestamptz[]
                    ) AS x(account, points, pending, key, hash, reason, reference, order_id, line, rule, event,
                           parts, earned, available, expires)
                ), e AS (
                    INSERT INTO loyalty_ledgerentry
                        (account_id, kind, points, pending_delta, owed_delta, idempotency_key, payload_hash,
                         reason, reference, order_id, order_line_id, rule_id, source_event_id, parts,
                         occurred_at, created_at)
                    SELECT account, 'earn', CASE WHEN pending > 0 THEN 0 ELSE points END,
                           CASE WHEN pending > 0 THEN points ELSE 0 END, 0, key, hash, reason, reference,
                           order_id, line, rule, event, parts::jsonb, earned, %(now)b
                      FROM x
                    ON CONFLICT (idempotency_key) DO NOTHING
                 RETURNING id, account_id, idempotency_key, order_line_id, points, pending_delta, occurred_at
                ), lots AS (
                    INSERT INTO loyalty_pointlot
                        (account_id, earn_entry_id, order_line_id, state, points, remaining, consumed, expired,
                         earned_at, available_at, expires_at)
                    SELECT e.account_id, e.id, e.order_line_id,
                           CASE WHEN e.pending_delta > 0 THEN 'pending' ELSE 'available' END,
                           e.points + e.pending_delta, e.points + e.pending_delta, 0, 0, e.occurred_at,
                           x.available, x.expires
                      FROM e JOIN x ON x.key = e.idempotency_key
                ), balances AS (
                    UPDATE loyalty_loyaltyaccount a
                       SET available = a.available + s.points, pending = a.pending + s.pending
                      FROM (SELECT account_id, SUM(points) AS points, SUM(pending_delta) AS pending
                              FROM e GROUP BY account_id) s
                     WHERE a.id = s.account_id
                )
                SELECT id, account_id, points, pending_delta, idempotency_key FROM e ORDER BY id
                """,
                {
                    "account": [i.account.pk for i in items],
                    "points": [i.points for i in items],
                    "pending": [1 if i.pending else 0 for i in items],
                    "key": [i.key for i in items],
                    "hash": [i.fingerprint for i in items],
                    "reason": [i.reason[:300] for i in items],
                    "reference": [i.reference[:200] for i in items],
                    "order": [i.order_id for i in items],
                    "line": [i.order_line_id for i in items],
                    "rule": [i.rule_id for i in items],
                    "event": [i.source_event_id for i in items],
                    "parts": [json.dumps(i.parts) for i in items],
                    "earned": [i.earned_at for i in items],
                    "available": [i.available_at for i in items],
                    "expires": [i.expires_at for i in items],
                    "now": self.now,
                },
            )
            return [Written(*row) for row in cursor.fetchall()]

    def _flush_portable(self, items: list[_Earn]) -> list[Written]:
        done = existing_keys(i.key for i in items)
        items = [i for i in items if i.key not in done]
        entries = LedgerEntry.objects.bulk_create(
            [
                LedgerEntry(
                    account_id=i.account.pk,
                    kind=EntryKind.EARN,
                    points=0 if i.pending else i.points,
                    pending_delta=i.points if i.pending else 0,
                    idempotency_key=i.key,
                    payload_hash=i.fingerprint,
                    reason=i.reason[:300],
                    reference=i.reference[:200],
                    order_id=i.order_id,
                    order_line_id=i.order_line_id,
                    rule_id=i.rule_id,
                    parts=i.parts,
                    source_event_id=i.source_event_id,
                    occurred_at=i.earned_at,
                    created_at=self.now,
                )
                for i in items
            ]
        )
        PointLot.objects.bulk_create(
            [
                PointLot(
                    account_id=i.account.pk,
                    earn_entry_id=e.pk,
                    order_line_id=i.order_line_id,
                    state=PointLot.State.PENDING if i.pending else PointLot.State.AVAILABLE,
                    points=i.points,
                    remaining=i.points,
                    earned_at=i.earned_at,
                    available_at=i.available_at,
                    expires_at=i.expires_at,
                )
                for i, e in zip(items, entries, strict=True)
            ]
        )
        return [Written(e.pk, e.account_id, e.points, e.pending_delta, e.idempotency_key) for e in entries]


def _points_earned_append(written: list[Written], items: dict[str, _Earn], now: datetime) -> None:
    """One `points_earned` event per account of this write (a batch holding three orders of a customer
    tells them once, with every order's reference), through crm's append and its catalogue. The external
    id names the write's first entry: unique, and the same on a retry of the same transaction."""
    per_account: dict[int, dict] = {}
    for w in written:
        item = items[w.key]
        group = per_account.setdefault(
            w.account_id,
            {"customer_id": item.account.customer_id, "first": w.pk, "points": 0, "pending": 0, "refs": []},
        )
        group["first"] = min(group["first"], w.pk)
        group["points"] += w.points + w.pending_delta
        group["pending"] += w.pending_delta
        if item.reference and item.reference not in group["refs"]:
            group["refs"].append(item.reference)
        group["at"] = max(group.get("at", item.earned_at), item.earned_at)
    events = [
        NewEvent(
            type=POINTS_EARNED,
            customer_id=group["customer_id"],
            occurred_at=group["at"],
            properties={
                "account_id": account_id,
                "points": group["points"],
                "pending_points": group["pending"],
                "references": group["refs"],
            },
            external_id=f"loyalty:points_earned:{group['first']}",
        )
        for account_id, group in sorted(per_account.items())
        if group["points"] > 0 and group["customer_id"] is not None
    ]
    if events:
        events_append(events=events, now=now, skip_existing=True)


@dataclass(frozen=True)
class Written:
    pk: int
    account_id: int
    points: int
    pending_delta: int
    key: str = ""


def balances_save_many(accounts) -> None:
    accounts = list(accounts)
    if not accounts:
        return
    values = ", ".join(["(%s, %s, %s, %s)"] * len(accounts))
    params = [v for a in accounts for v in (a.pk, a.available, a.pending, a.owed)]
    with connection.cursor() as cursor:
        cursor.execute(
            f"""UPDATE loyalty_loyaltyaccount AS a
                   SET available = v.column2, pending = v.column3, owed = v.column4
                  FROM (VALUES {values}) AS v
                 WHERE a.id = v.column1""",
            params,
        )


def existing_keys(keys) -> set[str]:
    """The idempotency keys among `keys` that the ledger already holds. On PostgreSQL a prepared statement
    with an array parameter, the same text whatever the count (an ORM IN-list is planned anew each time)."""
    keys = list(keys)
    found: set[str] = set()
    for start in range(0, len(keys), 5000):
        chunk = keys[start : start + 5000]
        if connection.vendor == "postgresql":
            with server_binding_cursor() as cursor:
                cursor.execute(
                    f"SELECT idempotency_key FROM {LedgerEntry._meta.db_table} "
                    "WHERE idempotency_key = ANY(%s::text[])",
                    [chunk],
                )
                found.update(key for (key,) in cursor.fetchall())
        else:
            found.update(
                LedgerEntry.objects.filter(idempotency_key__in=chunk).values_list(
                    "idempotency_key", flat=True
                )
            )
    return found


# --- Caps -------------------------------------------------------------------------------------------


class CapBook:
    """What capped rules have already given each account (today, and ever), loaded once per batch."""

    def __init__(self, ruleset: RuleSet, now: datetime):
        self.ruleset = ruleset
        self.day = ruleset.local_day(now)
        self.loaded: set[tuple[int, int]] = set()
        self.today: dict[tuple[int, int], int] = defaultdict(int)
        self.ever: dict[tuple[int, int], int] = defaultdict(int)
        self.added: dict[tuple[int, int], int] = defaultdict(int)

    def _load(self, account_id: int, rule: EarnRule) -> None:
        if (account_id, rule.pk) in self.loaded:
            return
        for day, points in RuleUsage.objects.filter(account_id=account_id, rule_id=rule.pk).values_list(
            "day", "points"
        ):
            self.ever[(account_id, rule.pk)] += points
            if day == self.day:
                self.today[(account_id, rule.pk)] += points
        self.loaded.add((account_id, rule.pk))

    def allow(self, account_id: int, rule: EarnRule, points: int) -> int:
        """How many of `points` the rule may still give; records them as given."""
        if rule.cap_per_day is None and rule.cap_per_customer is None:
            return points
        self._load(account_id, rule)
        key = (account_id, rule.pk)
        allowed = points
        if rule.cap_per_day is not None:
            allowed = min(allowed, max(rule.cap_per_day - self.today[key], 0))
        if rule.cap_per_customer is not None:
            allowed = min(allowed, max(rule.cap_per_customer - self.ever[key], 0))
        self.today[key] += allowed
        self.ever[key] += allowed
        self.added[key] += allowed
        return allowed

    def save(self) -> None:
        rows = [(a, r, self.day, p) for (a, r), p in self.added.items() if p > 0]
        if not rows:
            return
        values = ", ".join(["(%s, %s, %s, %s)"] * len(rows))
        with connection.cursor() as cursor:
            cursor.execute(
                f"""INSERT INTO loyalty_ruleusage (account_id, rule_id, day, points) VALUES {values}
                    ON CONFLICT (account_id, rule_id, day)
                    DO UPDATE SET points = loyalty_ruleusage.points + EXCLUDED.points""",
                [v for row in rows for v in row],
            )
        self.added.clear()


# --- Orders -----------------------------------------------------------------------------------------


@dataclass
class AccrualResult:
    orders: int = 0
    entries: int = 0
    points: int = 0
    skipped: int = 0  # earnings an earlier run had already written
    reversals: int = 0
    bonuses: int = 0
    accounts: set = field(default_factory=set)


def _orders_load(order_ids) -> tuple[dict[int, OrderData], dict[int, list[LineData]]]:
    """The orders and their lines, in one query."""
    order_ids = list(order_ids)
    orders: dict[int, OrderData] = {}
    lines: dict[int, list[LineData]] = defaultdict(list)
    if not order_ids:
        return orders, lines
    with server_binding_cursor() as cursor:  # prepared: every accrual batch runs it
        cursor.execute(
            f"""SELECT o.id, o.external_id, o.customer_id, o.placed_at, o.currency, o.total, o.refunded_amount,
                       o.status, l.id, l.line_no, l.sku, l.category, l.quantity, l.line_total, l.refunded_quantity
                  FROM crm_order o LEFT JOIN crm_orderline l ON l.order_id = o.id
                 WHERE o.id IN ({", ".join(["%s"] * len(order_ids))})""",
            order_ids,
        )
        rows = cursor.fetchall()
    portable = connection.vendor != "postgresql"
    for row in rows:
        if portable:
            row = _typed(row)
        if row[0] not in orders:
            orders[row[0]] = OrderData(*row[:8])
        if row[8] is not None:
            lines[row[0]].append(LineData(*row[8:]))
    return orders, lines


def _typed(row: tuple) -> tuple:
    """SQLite (`make run`) hands a raw query's decimals back as floats and its timestamps as naive UTC."""
    row = list(row)
    for i in (5, 6, 13):  # total, refunded_amount, line_total
        if row[i] is not None and not isinstance(row[i], Decimal):
            row[i] = Decimal(str(row[i])).quantize(Decimal("0.01"))
    if isinstance(row[3], str):
        row[3] = datetime.fromisoformat(row[3])
    if row[3] is not None and timezone.is_naive(row[3]):
        row[3] = timezone.make_aware(row[3], UTC)
    return tuple(row)


def order_fingerprint(order: OrderData, line: LineData) -> str:
    # Only what identifies the order line, never the computed points: a replay after a rule change is
    # still the same request, and returns (keeps) the first result.
    return payload_hash(
        {
            "op": "earn_order",
            "order": order.id,
            "line": line.line_no,
            "value": line.line_total,
            "total": order.total,
        }
    )


def orders_accrue(
    *,
    order_ids,
    now: datetime | None = None,
    ruleset: RuleSet | None = None,
    source_events: dict[int, int] | None = None,
) -> AccrualResult:
    """Earn the points of these orders (pending through the return window) for their customers' accounts,
    creating accounts as needed; then award first-order and referral bonuses and apply tier upgrades.
    Idempotent per order line."""
    now = now or timezone.now()
    ruleset = ruleset or ruleset_load()
    result = AccrualResult()
    order_ids = sorted(set(order_ids))
    if not order_ids:
        return result
    with transaction.atomic():
        _commit_without_waiting_for_the_disk()
        orders, lines = _orders_load(order_ids)
        if not orders:
            return result
        entry_tier = ruleset.entry_tier
        by_customer, accounts = accounts_lock_for_customers(
            customer_ids={o.customer_id for o in orders.values()},
            now=now,
            entry_tier_id=entry_tier.pk if entry_tier else None,
        )
        done: set[str] = set()
        if any(
            r.kind != EarnRule.Kind.EVENT and (r.cap_per_day is not None or r.cap_per_customer is not None)
            for r in ruleset.rules
        ):
            # Checked under the account locks (a concurrent run of the same orders has committed or
            # waits) and before caps are counted, so a replay does not use up a cap. Without caps the
            # insert itself skips what is already written (ON CONFLICT DO NOTHING): one query less.
            done = existing_keys(
                earn_key(o.external_id, ln.line_no)
                for o in orders.values()
                for ln in effective_lines(o, lines.get(o.id, []))
            )
        writer = EarnWriter(now, done)
        caps = CapBook(ruleset, now)
        for order in sorted(orders.values(), key=lambda o: (o.placed_at, o.id)):
            account = accounts[by_customer[order.customer_id]]
            if account.status != LoyaltyAccount.Status.ACTIVE and account.merged_into_id:
                continue  # a stale row; the customer's live account is found on the next run
            tier = ruleset.tier_by_id(account.tier_id)
            result.orders += 1
            available_at = ruleset.available_at(order.placed_at)
            expires_at = ruleset.expires_at(order.placed_at)
            for earning in order_earnings(
                ruleset=ruleset, order=order, lines=lines.get(order.id, []), tier=tier
            ):
                if earning.key in done:
                    result.skipped += 1
                    continue
                parts = earning.parts
                rule = next((r for r in ruleset.rules if r.pk == earning.rule_id), None)
                if rule is not None and (rule.cap_per_day is not None or rule.cap_per_customer is not None):
                    allowed = caps.allow(account.pk, rule, parts["base"])
                    if allowed < parts["base"]:
                        parts = {**parts, "base_uncapped": parts["base"], "base": allowed, "capped": True}
                        parts["total"] = sum(parts[p] for p in PARTS)
                if parts["total"] <= 0:
                    continue
                writer.add(
                    _Earn(
                        account=account,
                        points=parts["total"],
                        pending=available_at > now,
                        key=earning.key,
                        fingerprint=order_fingerprint(order, earning.line),
                        earned_at=order.placed_at,
                        available_at=available_at,
                        expires_at=expires_at,
                        reason=reason_code("order", order.external_id),
                        reference=order.external_id,
                        order_id=order.id,
                        order_line_id=earning.line.id,
                        rule_id=earning.rule_id,
                        parts=parts,
                        source_event_id=(source_events or {}).get(order.id),
                    )
                )
        _order_bonuses(
            ruleset=ruleset,
            orders=orders,
            by_customer=by_customer,
            accounts=accounts,
            writer=writer,
            caps=caps,
            now=now,
        )
        attempted = len(writer.items)
        entries = writer.flush()
        caps.save()
        result.skipped += attempted - len(entries)
        result.entries = len(entries)
        result.points = sum(e.points + e.pending_delta for e in entries)
        touched = {e.account_id for e in entries}
        # Owed points are settled from points as they become available: only accounts that just gained
        # available points (bonuses; order points are pending) settle here.
        gained = {e.account_id for e in entries if e.points > 0}
        settled = [
            accounts[a]
            for a in sorted(gained)
            if accounts[a].owed > 0
            and accounts[a].available > 0
            and owed_settle(account=accounts[a], now=now, trigger_key=f"accrual:{entries[-1].pk}:{a}")
        ]
        balances_save_many(settled)
        result.accounts = touched
        if touched:
            from loyalty.services.tiers import tiers_upgrade_locked

            tiers_upgrade_locked(accounts=[accounts[a] for a in sorted(touched)], ruleset=ruleset, now=now)
    return result


def _commit_without_waiting_for_the_disk() -> None:
    """Let this transaction's commit return before its WAL reaches the disk (PostgreSQL only).

    An accrual writes only what can be derived again from orders and events that their writers committed
    durably: if the database server crashes in the fraction of a second before the WAL is flushed, the
    transaction is lost whole, never in part, and is redone. The event cursor's advance is in the same
    transaction (events_process), so the cursor re-reads those events; `accrual_sweep` (nightly) accrues
    any recent order without an earning whatever the reason. A worker killed mid-call is not concerned
    (PostgreSQL still flushes what it committed). What it saves is the fsync wait of each commit, which
    decided whether the accrual met its p99 target (see BENCHMARKS.md, loyalty accrual). SET LOCAL: only this
    transaction, or the caller's enclosing one (events_process, whose writes are derived too)."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL synchronous_commit = off")


def _order_bonuses(*, ruleset, orders, by_customer, accounts, writer, caps, now) -> None:
    """First-order bonus, and both referral bonuses once the referee's first paid order is in."""
    first_rules = ruleset.event_rules("first_order", now)
    referrer_rules = ruleset.event_rules("referral_referrer", now)
    referee_rules = ruleset.event_rules("referral_referee", now)
    if not (first_rules or referrer_rules or referee_rules):
        return
    customers = {o.customer_id for o in orders.values() if o.total > 0}
    first_order = _first_orders(customers)
    firsts = [orders[oid] for cid, oid in first_order.items() if oid in orders]
    if not firsts:
        return
    referrals = {}
    if referrer_rules or referee_rules:
        referrals = {
            r.referee_id: r for r in Referral.objects.filter(referee_id__in=[o.customer_id for o in firsts])
        }
        referrer_ids = {r.referrer_id for r in referrals.values()}
        missing = referrer_ids - set(by_customer)
        if missing:
            entry_tier = ruleset.entry_tier
            extra = accounts_for_customers(
                customer_ids=missing, now=now, entry_tier_id=entry_tier.pk if entry_tier else None
            )
            # Taking more locks after the first set breaks the one lock order only if two runs extend
            # in opposite directions; referrers are added in id order and a deadlock would be retried.
            by_customer.update(extra)
            accounts.update(accounts_lock(extra.values()))
    candidates = [f"bonus:first_order:{o.customer_id}:rule:{r.pk}" for o in firsts for r in first_rules]
    for referral in referrals.values():
        candidates += [f"bonus:referral:{referral.pk}:referee:rule:{r.pk}" for r in referee_rules]
        candidates += [f"bonus:referral:{referral.pk}:referrer:rule:{r.pk}" for r in referrer_rules]
    writer.done |= existing_keys(candidates)  # before caps are counted
    for order in firsts:
        account = accounts[by_customer[order.customer_id]]
        available_at = ruleset.available_at(order.placed_at)
        for rule in first_rules:
            _bonus_add(
                writer=writer,
                caps=caps,
                ruleset=ruleset,
                account=account,
                rule=rule,
                key=f"bonus:first_order:{order.customer_id}:rule:{rule.pk}",
                reason=reason_code("first_order"),
                reference=order.external_id,
                earned_at=order.placed_at,
                available_at=available_at,
                now=now,
                order_id=order.id,
            )
        referral = referrals.get(order.customer_id)
        if referral is None:
            continue
        for rule in referee_rules:
            _bonus_add(
                writer=writer,
                caps=caps,
                ruleset=ruleset,
                account=account,
                rule=rule,
                key=f"bonus:referral:{referral.pk}:referee:rule:{rule.pk}",
                reason=reason_code("referee"),
                reference=order.external_id,
                earned_at=order.placed_at,
                available_at=available_at,
                now=now,
                order_id=order.id,
            )
        referrer_account = accounts[by_customer[referral.referrer_id]]
        for rule in referrer_rules:
            _bonus_add(
                writer=writer,
                caps=caps,
                ruleset=ruleset,
                account=referrer_account,
                rule=rule,
                key=f"bonus:referral:{referral.pk}:referrer:rule:{rule.pk}",
                reason=reason_code("referrer"),
                reference=order.external_id,
                earned_at=order.placed_at,
                available_at=available_at,
                now=now,
                order_id=order.id,
            )


def _first_orders(customer_ids) -> dict[int, int]:
    """{customer id: id of their first paid order} (earliest placed, then lowest id)."""
    if connection.vendor == "postgresql":
        with server_binding_cursor() as cursor:  # prepared: it runs in every accrual call with bonuses
            cursor.execute(
                f"SELECT DISTINCT ON (customer_id) customer_id, id FROM {Order._meta.db_table} "
                "WHERE customer_id = ANY(%s::bigint[]) AND total > 0 ORDER BY customer_id, placed_at, id",
                [list(customer_ids)],
            )
            return dict(cursor.fetchall())
    paid = Order.objects.filter(customer_id__in=customer_ids, total__gt=0).order_by(
        "customer_id", "placed_at", "id"
    )
    first: dict[int, int] = {}
    for customer_id, order_id in paid.values_list("customer_id", "id"):
        first.setdefault(customer_id, order_id)
    return first


def _bonus_add(
    *,
    writer,
    caps,
    ruleset,
    account,
    rule,
    key,
    reason,
    reference,
    earned_at,
    available_at,
    now,
    order_id=None,
    source_event_id=None,
    extra_points=0,
) -> None:
    if key in writer.items or key in writer.done:
        return
    points = caps.allow(account.pk, rule, rule.bonus_points) + extra_points if rule else extra_points
    if points <= 0:
        return
    writer.add(
        _Earn(
            account=account,
            points=points,
            pending=available_at > now,
            key=key,
            fingerprint=payload_hash({"op": "bonus", "key": key, "rule": rule.pk if rule else None}),
            earned_at=earned_at,
            available_at=available_at,
            expires_at=ruleset.expires_at(earned_at),
            reason=reason,
            reference=reference,
            order_id=order_id,
            rule_id=rule.pk if rule else None,
            parts={"bonus": points, "rule": rule.pk if rule else None, "event": rule.event if rule else None},
            source_event_id=source_event_id,
        )
    )


# --- Refunds ----------------------------------------------------------------------------------------


def order_refund_reverse(*, order_id: int, now: datetime | None = None) -> list[LedgerEntry]:
    """Bring the order's reversals up to what has been refunded: for each line, the refunded share of
    each part it earned, less what earlier refunds already took back. Idempotent: reversal keys carry the
    cumulative target, so re-running with the same refund state writes nothing.

    Points come back out of the line's own lot (pending or available); what was already spent becomes
    owed points, settled from later earnings; what had already expired is not taken twice."""
    now = now or timezone.now()
    with transaction.atomic():
        orders, lines = _orders_load([order_id])
        order = orders.get(order_id)
        if order is None:
            return []
        earns = list(
            LedgerEntry.objects.filter(
                order_id=order_id, kind=EntryKind.EARN, idempotency_key__startswith="order:"
            ).values_list("id", "account_id", "order_line_id", "parts", "idempotency_key")
        )
        if not earns:
            return []
        accounts = accounts_lock({e[1] for e in earns})
        reversed_so_far: dict[str, dict] = defaultdict(lambda: dict.fromkeys((*PARTS, "expired"), 0))
        for parts, key in LedgerEntry.objects.filter(order_id=order_id, kind=EntryKind.REVERSE).values_list(
            "parts", "reference"
        ):
            for p in (*PARTS, "expired"):
                reversed_so_far[key][p] += parts.get(p, 0)
        eff_lines = {ln.id: ln for ln in effective_lines(order, lines.get(order_id, []))}
        any_line_refunded = any(ln.refunded_quantity for ln in lines.get(order_id, []))
        lots = {
            lot.earn_entry_id: lot for lot in PointLot.objects.filter(earn_entry_id__in=[e[0] for e in earns])
        }
        written = []
        for entry_id, account_id, line_id, parts, earn_key in sorted(earns, key=lambda e: e[4]):
            line = eff_lines.get(line_id)
            if line is None:
                continue
            target = reversal_target(parts, refunded_fraction(order, line, any_line_refunded))
            done = reversed_so_far[earn_key]
            delta = {p: max(target[p] - done[p], 0) for p in PARTS}
            amount = sum(delta.values())
            if amount <= 0:
                continue
            account = accounts[account_id]
            lot = lots[entry_id]
            key = f"reverse:{earn_key}:to:{target['total']}"
            fingerprint = payload_hash({"op": "reverse", "earn": entry_id, "target": target})
            if LedgerEntry.objects.filter(idempotency_key=key).exists():
                continue
            from_pending = from_available = write_off = owed = 0
            if lot.state == PointLot.State.PENDING:
                from_pending = min(lot.remaining, amount)
            else:
                from_available = min(lot.remaining, amount)
            rest = amount - from_pending - from_available
            # Points of this lot that already expired are gone: the refund does not take them twice.
            write_off = min(rest, max(lot.expired - done["expired"], 0))
            owed = rest - write_off
            entry = LedgerEntry.objects.create(
                account_id=account.pk,
                kind=EntryKind.REVERSE,
                points=-from_available,
                pending_delta=-from_pending,
                owed_delta=owed,
                idempotency_key=key,
                payload_hash=fingerprint,
                reason=reason_code("refund", order.external_id),
                reference=earn_key,
                order_id=order.id,
                order_line_id=line_id,
                lot=lot,
                parts={
                    **delta,
                    "total": amount,
                    "from_lot": from_pending + from_available,
                    "expired": write_off,
                    "owed": owed,
                },
                occurred_at=now,
                created_at=now,
            )
            taken = from_pending + from_available
            if taken:
                LotConsumption.objects.create(lot=lot, entry=entry, points=taken)
                PointLot.objects.filter(pk=lot.pk).update(
                    remaining=lot.remaining - taken, consumed=lot.consumed + taken
                )
                lot.remaining -= taken
                lot.consumed += taken
            if owed:
                OwedPoints.objects.create(
                    account_id=account.pk, entry=entry, points=owed, remaining=owed, created_at=now
                )
            account.pending -= from_pending
            account.available -= from_available
            account.owed += owed
            for p in PARTS:
                done[p] += delta[p]
            done["expired"] += write_off
            written.append(entry)
        balances_save_many(accounts.values())
    return written


# --- Event bonuses ----------------------------------------------------------------------------------


def bonuses_award(*, awards: list[dict], now: datetime | None = None, ruleset: RuleSet | None = None) -> int:
    """Award event bonuses in one batch. Each award: {"customer_id", "rule" (EarnRule or None), "key",
    "reason", "reference", "source_event_id", "extra_points" (tier birthday gift)}. Bonuses are available at
    once. Returns the number of entries written."""
    now = now or timezone.now()
    ruleset = ruleset or ruleset_load()
    if not awards:
        return 0
    with transaction.atomic():
        entry_tier = ruleset.entry_tier
        by_customer = accounts_for_customers(
            customer_ids={a["customer_id"] for a in awards},
            now=now,
            entry_tier_id=entry_tier.pk if entry_tier else None,
        )
        accounts = accounts_lock(by_customer.values())
        done = existing_keys(a["key"] for a in awards)
        writer = EarnWriter(now, done)
        caps = CapBook(ruleset, now)
        for award in awards:
            if award["key"] in done:
                continue
            _bonus_add(
                writer=writer,
                caps=caps,
                ruleset=ruleset,
                account=accounts[by_customer[award["customer_id"]]],
                rule=award.get("rule"),
                key=award["key"],
                reason=award["reason"],
                reference=award.get("reference", ""),
                earned_at=now,
                available_at=now,
                now=now,
                source_event_id=award.get("source_event_id"),
                extra_points=award.get("extra_points", 0),
            )
        entries = writer.flush()
        caps.save()
        touched = {e.account_id for e in entries}
        settled = [
            accounts[a]
            for a in sorted(touched)
            if accounts[a].owed > 0
            and owed_settle(account=accounts[a], now=now, trigger_key=f"bonus:{entries[-1].pk}:{a}")
        ]
        balances_save_many(settled)
    return len(entries)


def _birthdays_portable(now: datetime) -> list[tuple[int, int, int | None]]:
    """The birthday query for SQLite (`make run`), in Python: fine at demo scale."""
    import zoneinfo

    from crm.models import Customer

    rows = []
    tiers = dict(LoyaltyAccount.objects.values_list("customer_id", "tier_id"))
    for customer_id, birthday, tz in Customer.objects.filter(
        birthday__isnull=False, erased_at__isnull=True
    ).values_list("id", "birthday", "time_zone"):
        local = now.astimezone(zoneinfo.ZoneInfo(tz or "UTC")).date()
        same = (birthday.month, birthday.day) == (local.month, local.day)
        leap_stand_in = (
            (birthday.month, birthday.day) == (2, 29)
            and (local.month, local.day) == (2, 28)
            and local.year % 4
        )
        if same or leap_stand_in:
            rows.append((customer_id, local.year, tiers.get(customer_id)))
    return rows


def birthday_bonuses_award(*, now: datetime | None = None, limit: int = 5000) -> int:
    """Birthday points (the birthday rule, plus the member's tier gift) for customers whose birthday it is
    today in their own time zone; 29 February birthdays are celebrated on 28 February in other years.
    Idempotent per customer and year."""
    now = now or timezone.now()
    ruleset = ruleset_load()
    rules = ruleset.event_rules("birthday", now)
    if not rules and not any(t.birthday_gift_points for t in ruleset.tiers):
        return 0
    rule = rules[0] if rules else None
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                """SELECT c.id, EXTRACT(YEAR FROM %(now)s AT TIME ZONE c.time_zone)::int, a.tier_id
                     FROM crm_customer c
                     LEFT JOIN loyalty_loyaltyaccount a ON a.customer_id = c.id
                    WHERE c.birthday IS NOT NULL AND c.erased_at IS NULL
                      AND (
                        to_char(c.birthday, 'MM-DD') = to_char(%(now)s AT TIME ZONE c.time_zone, 'MM-DD')
                        OR (to_char(c.birthday, 'MM-DD') = '02-29'
                            AND to_char(%(now)s AT TIME ZONE c.time_zone, 'MM-DD') = '02-28'
                            AND NOT (EXTRACT(YEAR FROM %(now)s AT TIME ZONE c.time_zone)::int %% 4 = 0))
                      )
                 ORDER BY c.id""",
                {"now": now},
            )
            rows = cursor.fetchall()
    else:
        rows = _birthdays_portable(now)
    awards = []
    for customer_id, year, tier_id in rows:
        tier = ruleset.tier_by_id(tier_id) or ruleset.entry_tier
        gift = tier.birthday_gift_points if tier else 0
        if (rule is None or rule.bonus_points == 0) and not gift:
            continue
        awards.append(
            {
                "customer_id": customer_id,
                "rule": rule,
                "key": f"bonus:birthday:{customer_id}:{year}",
                "reason": reason_code("birthday"),
                "reference": str(year),
                "extra_points": gift,
            }
        )
    written = 0
    for start in range(0, len(awards), limit):
        written += bonuses_award(awards=awards[start : start + limit], now=now, ruleset=ruleset)
    return written


# --- The event cursor -------------------------------------------------------------------------------


@dataclass
class ProcessResult:
    events: int = 0
    last_event_id: int = 0
    accrual: AccrualResult = field(default_factory=AccrualResult)
    reversals: int = 0
    bonuses: int = 0


def _order_ids_of(events: list[LoggedEvent]) -> dict[int, int]:
    """{order id: event id} for order events; the event names its order by pk or by external id."""
    by_pk, by_external = {}, {}
    for event in events:
        props = event.properties
        if props.get("order_id") is not None:
            try:
                by_pk[int(props["order_id"])] = event.id
                continue
            except (TypeError, ValueError):
                pass
        external = props.get("order_external_id") or props.get("external_id")
        if external:
            by_external[str(external)] = event.id
    if by_external:
        for pk, external in Order.objects.filter(external_id__in=list(by_external)).values_list(
            "id", "external_id"
        ):
            by_pk[pk] = by_external[external]
    return by_pk


def events_process(*, now: datetime | None = None, batch_size: int = 1000) -> ProcessResult:
    """Read the next batch of behaviour events for the accrual and turn them into points, in one
    transaction with the cursor's advance (crm.services.event_log: every event once, even one whose
    transaction commits late, and two workers never get the same batch); idempotency keys make a replay
    harmless anyway. Only the types the accrual acts on are read: orders, refunds and those an earn rule
    rewards."""
    now = now or timezone.now()
    result = ProcessResult()
    with transaction.atomic():
        ruleset = ruleset_load()
        bonus_types = ruleset.bonus_event_types()
        ready = event_log_read(
            consumer=ACCRUAL_CONSUMER,
            batch_size=batch_size,
            types={ORDER_PLACED, ORDER_REFUNDED, *bonus_types},
            now=now,
        )
        if not ready:
            return result
        placed = _order_ids_of([e for e in ready if e.type == ORDER_PLACED])
        refunded = _order_ids_of([e for e in ready if e.type == ORDER_REFUNDED])
        if placed:
            result.accrual = orders_accrue(
                order_ids=list(placed), now=now, ruleset=ruleset, source_events=placed
            )
            # An order refunded before its points were earned (its refund event came first, or in the
            # same batch) still gets its reversal.
            already_refunded = Order.objects.filter(id__in=list(placed), refunded_amount__gt=0)
            refunded.update(dict.fromkeys(already_refunded.values_list("id", flat=True), 0))
        for order_id in sorted(refunded):
            result.reversals += len(order_refund_reverse(order_id=order_id, now=now))
        awards = []
        for event in ready:
            if event.type not in bonus_types or not event.customer_id:
                continue
            for rule in ruleset.rules_for_event_type(event.type, event.occurred_at):
                awards.append(
                    {
                        "customer_id": event.customer_id,
                        "rule": rule,
                        "key": _bonus_key(rule, event),
                        "reason": reason_code("rule", str(rule.name)),
                        "reference": event.type,
                        "source_event_id": event.id,
                    }
                )
        if awards:
            result.bonuses = bonuses_award(awards=awards, now=now, ruleset=ruleset)
        result.events = len(ready)
        result.last_event_id = ready[-1].id
    return result


def _bonus_key(rule: EarnRule, event: LoggedEvent) -> str:
    # Sign-up earns once per customer whatever the number of sign-up events; the others once per event.
    if rule.event == "signup":
        return f"bonus:signup:{event.customer_id}:rule:{rule.pk}"
    return f"bonus:event:{event.id}:rule:{rule.pk}"


def events_process_all(
    *, now: datetime | None = None, batch_size: int = 1000, max_batches: int = 1000
) -> int:
    """Run `events_process` until the log is read (or `max_batches`); returns the events read."""
    total = 0
    for _i in range(max_batches):
        result = events_process(now=now, batch_size=batch_size)
        total += result.events
        if result.events < batch_size:
            break
    return total


def accrual_sweep(*, since: datetime, now: datetime | None = None, batch_size: int = 500) -> AccrualResult:
    """Accrue orders placed since `since` that have no earning yet and reconcile their refunds. The event
    cursor misses nothing, so this is the safety net for what is not in the log's hands: an accrual
    committed without waiting for the disk and lost in a server crash (_commit_without_waiting_for_the_disk),
    or orders written by hand in the database. Idempotent."""
    now = now or timezone.now()
    total = AccrualResult()
    last_id = 0
    while True:
        ids = list(
            Order.objects.filter(placed_at__gte=since, total__gt=0, id__gt=last_id)
            .order_by("id")
            .values_list("id", flat=True)[:batch_size]
        )
        if not ids:
            break
        last_id = ids[-1]
        have = set(
            LedgerEntry.objects.filter(order_id__in=ids, kind=EntryKind.EARN).values_list(
                "order_id", flat=True
            )
        )
        missing = [i for i in ids if i not in have]
        if missing:
            r = orders_accrue(order_ids=missing, now=now)
            total.orders += r.orders
            total.entries += r.entries
            total.points += r.points
        refunded = Order.objects.filter(id__in=ids, refunded_amount__gt=0).values_list("id", flat=True)
        for order_id in refunded:
            total.reversals += len(order_refund_reverse(order_id=order_id, now=now))
    return total
