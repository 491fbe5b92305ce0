"""Reads of the loyalty ledger for the member portal, the member API, the admin and the services.

`account_summary` is the hot one (every GET /api/v1/me/points): a fixed handful of queries whatever the
size of the account (pinned in tests/loyalty/test_ledger_selectors.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from django.db import connection
from django.db.models import BigIntegerField, Case, Count, F, Min, Q, QuerySet, Sum, Value, When
from django.db.models.fields.json import KT
from django.db.models.functions import Cast, Coalesce
from django.utils import timezone

from crm.clock import business_time_zone
from crm.db import server_binding_cursor
from crm.models import Order
from loyalty.models import EarnRule, EntryKind, LedgerEntry, LoyaltyAccount, PointLot, Tier
from loyalty.models.rewards import RewardRedemption

EXPIRING_SOON_DAYS = 30


@dataclass(frozen=True)
class TierProgress:
    basis: str  # "spend" or "points"
    window_months: int
    value: Decimal  # qualifying spend (currency units) or points in the window
    next_tier: Tier | None
    amount_to_next: Decimal  # 0 at the top tier
    percent: int  # 0..100 towards the next tier; 100 at the top tier


@dataclass(frozen=True)
class AccountSummary:
    account_id: int
    available: int
    pending: int
    owed: int
    tier: Tier | None
    tier_since: datetime | None
    tier_review_at: datetime | None
    downgrade_at: datetime | None
    progress: TierProgress
    expiring_soon: int  # points that expire within EXPIRING_SOON_DAYS
    expiring_soon_until: datetime  # the end of that window (not an expiry date: see expiring_soon_dates)
    next_expiry_at: datetime | None
    next_available_at: datetime | None  # when the earliest pending points become available
    # The points of expiring_soon by their true expiry instant, soonest first (account_expiring_points).
    expiring_soon_dates: tuple = ()


def _spend_by_customer(customer_ids: list[int], since: datetime) -> list[tuple[int, Decimal]]:
    """(customer id, paid spend net of refunds since `since`). On PostgreSQL a prepared statement with an
    array parameter (the accrual runs this in every call; an ORM `IN (...)` list is parsed and planned
    again for every batch size)."""
    if connection.vendor != "postgresql":
        return list(
            Order.objects.filter(customer_id__in=customer_ids, placed_at__gte=since)
            .values("customer_id")
            .annotate(value=Sum(F("total") - F("refunded_amount")))
            .values_list("customer_id", "value")
        )
    with server_binding_cursor() as cursor:
        cursor.execute(
            f"SELECT customer_id, SUM(total - refunded_amount) FROM {Order._meta.db_table} "
            "WHERE customer_id = ANY(%s::bigint[]) AND placed_at >= %s GROUP BY customer_id",
            [customer_ids, since],
        )
        return cursor.fetchall()


def qualifying_values(
    *, account_ids, since: datetime, basis: str, customer_by_account: dict[int, int] | None = None
) -> dict[int, Decimal]:
    """What each account counts towards its tier since `since`: paid spend net of refunds (orders of the
    account's customer) or points earned net of reversals. Not the spendable balance. One query.

    `customer_by_account` ({account id: customer id}), when the caller has the accounts loaded, lets the
    spend query read the orders by customer without joining through customers and accounts: on the
    accrual path, where this runs in every call, that join cost more to plan than to run."""
    account_ids = list(account_ids)
    if not account_ids:
        return {}
    if basis == "spend" and customer_by_account is not None:
        account_by_customer = {customer_by_account[aid]: aid for aid in account_ids}
        rows = [
            (account_by_customer[customer_id], value)
            for customer_id, value in _spend_by_customer(list(account_by_customer), since)
        ]
    elif basis == "spend":
        rows = (
            Order.objects.filter(customer__loyalty_account__id__in=account_ids, placed_at__gte=since)
            .values("customer__loyalty_account__id")
            .annotate(value=Sum(F("total") - F("refunded_amount")))
            .values_list("customer__loyalty_account__id", "value")
        )
    else:
        signed = Case(
            When(kind="earn", then=F("points") + F("pending_delta")),
            default=-Coalesce(Cast(KT("parts__total"), BigIntegerField()), Value(0)),
            output_field=BigIntegerField(),
        )
        rows = (
            LedgerEntry.objects.filter(
                account_id__in=account_ids, kind__in=["earn", "reverse"], occurred_at__gte=since
            )
            .values("account_id")
            .annotate(value=Sum(signed))
            .values_list("account_id", "value")
        )
    # Quantized: SQLite (make run) sums decimals as floats-in-text with spurious digits.
    found = {aid: Decimal(value or 0).quantize(Decimal("0.01")) for aid, value in rows}
    return {aid: found.get(aid, Decimal(0)) for aid in account_ids}


def tier_progress(*, ruleset, tier: Tier | None, value: Decimal) -> TierProgress:
    nxt = ruleset.next_tier(tier)
    if nxt is None:
        amount, percent = Decimal(0), 100
    else:
        threshold = Decimal(ruleset.threshold_of(nxt))
        amount = max(threshold - value, Decimal(0))
        percent = 100 if threshold <= 0 else int(min(value / threshold * 100, Decimal(100)))
    return TierProgress(
        basis=ruleset.programme.tier_basis,
        window_months=ruleset.programme.tier_window_months,
        value=value,
        next_tier=nxt,
        amount_to_next=amount,
        percent=percent,
    )


def account_summary_build(
    *,
    account: LoyaltyAccount,
    now: datetime,
    ruleset,
    qualifying_value: Decimal,
    expiring_soon: list,
    next_expiry_at: datetime | None,
    next_available_at: datetime | None,
) -> AccountSummary:
    """The one place an AccountSummary is put together: from the account row and the figures read about
    it, whichever way they were read (`account_summary` below, or the member API's one-statement query in
    loyalty.services.members). `expiring_soon` is the ExpiringPoints of the next EXPIRING_SOON_DAYS."""
    tier = ruleset.tier_by_id(account.tier_id) or (
        Tier.objects.filter(pk=account.tier_id).first() if account.tier_id else None
    )
    return AccountSummary(
        account_id=account.pk,
        available=account.available,
        pending=account.pending,
        owed=account.owed,
        tier=tier,
        tier_since=account.tier_since,
        tier_review_at=account.tier_review_at,
        downgrade_at=account.downgrade_at,
        progress=tier_progress(ruleset=ruleset, tier=tier, value=qualifying_value),
        expiring_soon=sum(item.points for item in expiring_soon),
        expiring_soon_until=now + timedelta(days=EXPIRING_SOON_DAYS),
        next_expiry_at=next_expiry_at,
        next_available_at=next_available_at,
        expiring_soon_dates=tuple(expiring_soon),
    )


def account_summary(*, account: LoyaltyAccount, now: datetime, ruleset=None) -> AccountSummary:
    """Balances, tier and progress to the next tier, and points expiring in the next 30 days."""
    from loyalty.services.programme import ruleset_load

    ruleset = ruleset or ruleset_load()
    value = qualifying_values(
        account_ids=[account.pk],
        since=ruleset.window_start(now),
        basis=ruleset.programme.tier_basis,
        customer_by_account={account.pk: account.customer_id},
    )[account.pk]
    open_lots = PointLot.objects.filter(account_id=account.pk, remaining__gt=0)
    dates = open_lots.aggregate(
        next_expiry=Min("expires_at"),
        next_available=Min("available_at", filter=Q(state=PointLot.State.PENDING)),
    )
    return account_summary_build(
        account=account,
        now=now,
        ruleset=ruleset,
        qualifying_value=value,
        expiring_soon=account_expiring_points(account=account, now=now),
        next_expiry_at=dates["next_expiry"],
        next_available_at=dates["next_available"],
    )


def account_history(*, account: LoyaltyAccount) -> QuerySet[LedgerEntry]:
    """The account's entries, newest first (paginate with the id: the index is (account, -id))."""
    return (
        LedgerEntry.objects.filter(account_id=account.pk)
        .select_related("order", "order_line", "rule")
        .order_by("-id")
    )


# --- The member's history and expiring points (member portal) ---------------------------------------


@dataclass(frozen=True)
class ExpiringPoints:
    """The available points of an account that expire at one instant (the member portal, the member API
    and the customer 360 all read them from `account_expiring_points`)."""

    points: int
    expires_at: datetime  # the first instant they are gone
    last_day: date  # the last business day on which they can be spent (`lot_last_day`)
    # Whether they expire at the end of a business day (a business midnight: end-of-year expiry), so that
    # "valid until 31 Dec 2026" says it all; otherwise (rolling expiry) the time matters too.
    at_day_end: bool


def lot_last_day(expires_at: datetime) -> date:
    """The last day, in the business time zone, on which points expiring at `expires_at` can be spent.
    `expires_at` is the first instant they are gone (midnight opening the next year for the end-of-year
    policy), so the day before that instant is the one a person reads: 2026-12-31, not 2027-01-01."""
    return (expires_at - timedelta(microseconds=1)).astimezone(business_time_zone()).date()


def expiring_points_item(expires_at: datetime, points: int) -> ExpiringPoints:
    local = expires_at.astimezone(business_time_zone())
    return ExpiringPoints(
        points=int(points),
        expires_at=expires_at,
        last_day=lot_last_day(expires_at),
        at_day_end=(local.hour, local.minute, local.second, local.microsecond) == (0, 0, 0, 0),
    )


def account_expiring_points(
    *, account: LoyaltyAccount, now: datetime, days: int | None = EXPIRING_SOON_DAYS, limit: int | None = None
) -> list[ExpiringPoints]:
    """The available points that expire after `now` (within `days` of it; None: whenever), one item per
    expiry instant, soonest first, at most `limit` of them (one query, on the FIFO index)."""
    rows = PointLot.objects.filter(
        account_id=account.pk, state=PointLot.State.AVAILABLE, remaining__gt=0, expires_at__gt=now
    )
    if days is not None:
        rows = rows.filter(expires_at__lte=now + timedelta(days=days))
    rows = rows.values("expires_at").annotate(points=Sum("remaining")).order_by("expires_at")
    if limit is not None:
        rows = rows[:limit]
    return [expiring_points_item(row["expires_at"], row["points"]) for row in rows]


@dataclass(frozen=True)
class HistoryRow:
    """One line of the member's points history: all the entries one event wrote (the lines of an order
    earned together, their release, one refund of it), or a single entry."""

    last_entry_id: int
    kind: str
    occurred_at: datetime
    points: int  # change of the available balance
    pending_delta: int
    owed_delta: int
    balance: int  # available points after this row
    order_id: int | None
    order_external_id: str = ""
    products: list[str] = field(default_factory=list)
    reward_name: str = ""
    redemption_id: int | None = None
    rule_name: str = ""
    reason: str = ""  # what staff wrote on a manual adjustment


# The entries an event wrote for the lines of one order share kind, order and time: they form one row.
# Entries without an order line (bonuses, adjustments, redemptions, expiry) are rows of their own. Rows
# go by when they happened (an order's points by when it was placed, even when they were accrued later,
# as after an import of past orders), ties by the order they were written; the balance after each row is
# the running sum of `points` in that order, and after the last row it is the account's available balance.
_HISTORY_GROUPS = """
    SELECT MAX(id) AS last_id, kind, order_id, MIN(occurred_at) AS occurred_at,
           SUM(points) AS points, SUM(pending_delta) AS pending_delta, SUM(owed_delta) AS owed_delta,
           MAX(rule_id) AS rule_id, MAX(reason) AS reason, COUNT(order_line_id) AS lines
      FROM {entries}
     WHERE account_id = %s
     GROUP BY kind, order_id, occurred_at, CASE WHEN order_line_id IS NULL THEN id END
"""


class AccountHistory:
    """The account's history rows, newest first, as a sequence Django's Paginator can page: `count()` is
    one query, a slice at most four (rows with their running balance; the lines of their orders; rewards
    of their redemptions; names of their bonus rules), whatever the page size."""

    def __init__(self, *, account: LoyaltyAccount):
        self.account = account
        self._groups = _HISTORY_GROUPS.format(entries=LedgerEntry._meta.db_table)

    def count(self) -> int:
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT COUNT(*) FROM ({self._groups}) g", [self.account.pk])
            return cursor.fetchone()[0]

    def __len__(self) -> int:
        return self.count()

    def __getitem__(self, key):
        if not isinstance(key, slice) or key.step is not None:
            raise TypeError("AccountHistory takes a slice, as the Paginator asks")
        start = key.start or 0
        limit = max((key.stop if key.stop is not None else start + 1000) - start, 0)
        with connection.cursor() as cursor:
            cursor.execute(
                f"""SELECT last_id, kind, order_id, occurred_at, points, pending_delta, owed_delta, rule_id,
                           reason, lines, SUM(points) OVER (ORDER BY occurred_at, last_id) AS balance
                      FROM ({self._groups}) g
                     ORDER BY occurred_at DESC, last_id DESC LIMIT %s OFFSET %s""",
                [self.account.pk, limit, start],
            )
            rows = cursor.fetchall()
        return self._rows(rows)

    def _rows(self, rows) -> list[HistoryRow]:
        rows = [(*r[:3], _aware(r[3]), *r[4:]) for r in rows]
        # A row made of order lines names its order and the products of its own lines (a refund of one
        # line names that line, not the whole order): read from the entries of the page's orders.
        order_ids = {r[2] for r in rows if r[2] is not None and r[9]}
        orders: dict[int, str] = {}
        products: dict[tuple, list[str]] = {}
        if order_ids:
            for kind, order_id, occurred_at, external_id, name, sku, quantity in (
                LedgerEntry.objects.filter(
                    account_id=self.account.pk, order_id__in=order_ids, order_line__isnull=False
                )
                .order_by("order_line__line_no", "id")
                .values_list(
                    "kind",
                    "order_id",
                    "occurred_at",
                    "order__external_id",
                    "order_line__name",
                    "order_line__sku",
                    "order_line__quantity",
                )
            ):
                orders[order_id] = external_id
                label = name or sku
                if kind != "reverse" and quantity > 1:
                    label = f"{label} ×{quantity}"
                products.setdefault((kind, order_id, occurred_at), []).append(label)
        redeem_ids = [r[0] for r in rows if r[1] == "redeem"]
        redemptions = {
            entry_id: (pk, name)
            for entry_id, pk, name in (
                RewardRedemption.objects.filter(ledger_entry_id__in=redeem_ids).values_list(
                    "ledger_entry_id", "pk", "reward__name"
                )
                if redeem_ids
                else []
            )
        }
        rule_ids = {r[7] for r in rows if r[7] and not r[9]}
        rules = dict(EarnRule.objects.filter(pk__in=rule_ids).values_list("pk", "name")) if rule_ids else {}
        found = []
        for (
            last_id,
            kind,
            order_id,
            occurred_at,
            points,
            pending,
            owed,
            rule_id,
            reason,
            lines,
            balance,
        ) in rows:
            redemption = redemptions.get(last_id)
            found.append(
                HistoryRow(
                    last_entry_id=last_id,
                    kind=kind,
                    occurred_at=occurred_at,
                    points=int(points),
                    pending_delta=int(pending),
                    owed_delta=int(owed),
                    balance=int(balance),
                    order_id=order_id,
                    order_external_id=orders.get(order_id, ""),
                    products=products.get((kind, order_id, occurred_at), []) if lines else [],
                    reward_name=redemption[1] if redemption else "",
                    redemption_id=redemption[0] if redemption else None,
                    rule_name="" if lines else rules.get(rule_id, ""),
                    reason=reason if kind in ("adjust", "transfer_in", "transfer_out") else "",
                )
            )
        return found


def _aware(moment) -> datetime:
    """A time read by raw SQL as an aware datetime (SQLite hands back text, naive, in UTC)."""
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    return moment.replace(tzinfo=UTC) if timezone.is_naive(moment) else moment


def account_lots(*, account: LoyaltyAccount) -> QuerySet[PointLot]:
    return PointLot.objects.filter(account_id=account.pk).order_by("expires_at", "id")


def account_tier_history(*, account: LoyaltyAccount):
    return account.tier_changes.select_related("from_tier", "to_tier").order_by("-changed_at", "-id")


def account_of_customer(*, customer) -> LoyaltyAccount | None:
    return LoyaltyAccount.objects.filter(customer_id=customer.pk).select_related("tier").first()


EXPIRY_DATES_SHOWN = 5
RECENT_ENTRIES_SHOWN = 10


def customer_points_overview(*, customer_id: int, now: datetime) -> dict | None:
    """What the customer 360 shows of a member: balances, tier and progress, the next expiry dates with
    their points, and the latest ledger entries; None for a customer without a loyalty account. A fixed
    number of queries."""
    account = LoyaltyAccount.objects.filter(customer_id=customer_id).select_related("tier").first()
    if account is None:
        return None
    summary = account_summary(account=account, now=now)
    return {
        "account": account,
        "summary": summary,
        "expiring": account_expiring_points(account=account, now=now, days=None, limit=EXPIRY_DATES_SHOWN),
        "entries": list(account_history(account=account)[:RECENT_ENTRIES_SHOWN]),
    }


@dataclass(frozen=True)
class LoyaltyHomeFigures:
    """The programme's figures on the admin home page (config/admin_home.py)."""

    members: int  # active accounts (a merged account is folded into another)
    outstanding_points: int  # available to spend now: the points liability
    pending_points: int  # earned, still inside the return window
    point_value: Decimal
    currency: str
    issued_points: int  # made available over the programme's life: earned, released, added by hand
    redeemed_points: int

    @property
    def liability_value(self) -> Decimal:
        return (self.outstanding_points * self.point_value).quantize(Decimal("0.01"))

    @property
    def redemption_rate(self) -> float | None:
        return self.redeemed_points / self.issued_points if self.issued_points else None


# The entries that put points in members' hands (available), for the redemption rate's denominator.
# Transfers move points between members and issue none; reversals take back what an earn gave.
_ISSUING_KINDS = (EntryKind.EARN, EntryKind.RELEASE, EntryKind.ADJUST)


def loyalty_home_figures() -> LoyaltyHomeFigures:
    """Three queries: the programme settings, the accounts' balances, the ledger's issued and redeemed
    totals (a sum over the ledger, set-based; a sweep of the table, fine for a page opened a few times a
    day)."""
    # Imported here: loyalty.services imports this module (members, tiers), so a module-level import
    # would be circular.
    from loyalty.services.programme import programme_get

    programme = programme_get()
    accounts = LoyaltyAccount.objects.filter(status=LoyaltyAccount.Status.ACTIVE).aggregate(
        members=Count("pk"), available=Sum("available"), pending=Sum("pending")
    )
    ledger = LedgerEntry.objects.aggregate(
        issued=Sum("points", filter=Q(kind__in=_ISSUING_KINDS, points__gt=0)),
        reversed=Sum("points", filter=Q(kind=EntryKind.REVERSE, points__lt=0)),
        redeemed=Sum("points", filter=Q(kind=EntryKind.REDEEM)),
    )
    return LoyaltyHomeFigures(
        members=accounts["members"],
        outstanding_points=accounts["available"] or 0,
        pending_points=accounts["pending"] or 0,
        point_value=programme.point_value,
        currency=programme.currency,
        issued_points=(ledger["issued"] or 0) + (ledger["reversed"] or 0),
        redeemed_points=-(ledger["redeemed"] or 0),
    )


@dataclass(frozen=True)
class MemberSnapshot:
    """What a message says of a member: balances, tier, and the points that expire soonest."""

    customer_id: int
    account_id: int
    available: int
    pending: int
    tier_code: str
    tier_name: str
    expiring_soon: int  # available points expiring within EXPIRING_SOON_DAYS
    expiring_last_day: date | None  # the last business day the soonest of them can be spent


def members_snapshot(
    *, customer_ids, now: datetime, days: int = EXPIRING_SOON_DAYS
) -> dict[int, MemberSnapshot]:
    """Members' balances, tiers and points expiring soon, for many customers at once (two queries
    whatever their number); customers without an account are absent."""
    ids = list({int(pk) for pk in customer_ids})
    if not ids:
        return {}
    if connection.vendor == "postgresql":
        rows = _members_snapshot_rows_postgresql(ids, now=now, until=now + timedelta(days=days))
    else:
        rows = _members_snapshot_rows(ids, now=now, until=now + timedelta(days=days))
    return {
        customer_id: MemberSnapshot(
            customer_id=customer_id,
            account_id=account_id,
            available=int(available),
            pending=int(pending),
            tier_code=tier_code or "",
            tier_name=tier_name or "",
            expiring_soon=int(points or 0),
            expiring_last_day=lot_last_day(_aware(first)) if first else None,
        )
        for account_id, customer_id, available, pending, tier_code, tier_name, points, first in rows
    }


def _members_snapshot_rows_postgresql(ids: list[int], *, now: datetime, until: datetime) -> list[tuple]:
    """One statement with the ids as one array parameter: a 1,000-id `IN` list built by the ORM cost more
    than the query (see BENCHMARKS.md, template rendering)."""
    accounts, tiers, lots = LoyaltyAccount._meta.db_table, Tier._meta.db_table, PointLot._meta.db_table
    with server_binding_cursor() as cursor:
        cursor.execute(
            f"""SELECT a.id, a.customer_id, a.available, a.pending, t.code, t.name, e.points, e.first
                  FROM {accounts} a
                  LEFT JOIN {tiers} t ON t.id = a.tier_id
                  LEFT JOIN LATERAL (
                       SELECT SUM(l.remaining) AS points, MIN(l.expires_at) AS first FROM {lots} l
                        WHERE l.account_id = a.id AND l.state = %s AND l.remaining > 0
                          AND l.expires_at > %s AND l.expires_at <= %s) e ON true
                 WHERE a.customer_id = ANY(%s::bigint[]) AND a.status = %s""",
            [PointLot.State.AVAILABLE.value, now, until, ids, LoyaltyAccount.Status.ACTIVE.value],
        )
        return cursor.fetchall()


def _members_snapshot_rows(ids: list[int], *, now: datetime, until: datetime) -> list[tuple]:
    accounts = list(
        LoyaltyAccount.objects.filter(customer_id__in=ids, status=LoyaltyAccount.Status.ACTIVE).values_list(
            "pk", "customer_id", "available", "pending", "tier__code", "tier__name"
        )
    )
    if not accounts:
        return []
    expiring = {
        account_id: (points, first)
        for account_id, points, first in PointLot.objects.filter(
            account_id__in=[a[0] for a in accounts],
            state=PointLot.State.AVAILABLE,
            remaining__gt=0,
            expires_at__gt=now,
            expires_at__lte=until,
        )
        .values("account_id")
        .annotate(points=Sum("remaining"), first=Min("expires_at"))
        .values_list("account_id", "points", "first")
    }
    return [(*account, *expiring.get(account[0], (0, None))) for account in accounts]
