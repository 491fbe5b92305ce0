"""Reads of the loyalty ledger for the member portal, the member API, the admin and the services.

`account_summary` is the hot one (every GET /api/v1/me/points): a fixed handful of queries whatever the
size of the account (pinned in tests/loyalty/test_ledger_selectors.py)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from django.db import connection
from django.db.models import BigIntegerField, Case, Count, F, Min, Q, QuerySet, Sum, Value, When
from django.db.models.fields.json import KT
from django.db.models.functions import Cast, Coalesce

from crm.db import server_binding_cursor
from crm.models import Order
from loyalty.models import EntryKind, LedgerEntry, LoyaltyAccount, PointLot, Tier

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
    expiring_soon_until: datetime
    next_expiry_at: datetime | None
    next_available_at: datetime | None  # when the earliest pending points become available


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
    expiring_soon: int | None,
    next_expiry_at: datetime | None,
    next_available_at: datetime | None,
) -> AccountSummary:
    """The one place an AccountSummary is put together: from the account row and the figures read about
    it, whichever way they were read (`account_summary` below, or the member API's one-statement query in
    loyalty.services.members)."""
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
        expiring_soon=int(expiring_soon or 0),
        expiring_soon_until=now + timedelta(days=EXPIRING_SOON_DAYS),
        next_expiry_at=next_expiry_at,
        next_available_at=next_available_at,
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
    until = now + timedelta(days=EXPIRING_SOON_DAYS)
    open_lots = PointLot.objects.filter(account_id=account.pk, remaining__gt=0)
    expiring = open_lots.filter(
        state=PointLot.State.AVAILABLE, expires_at__gt=now, expires_at__lte=until
    ).aggregate(points=Sum("remaining"))
    dates = open_lots.aggregate(
        next_expiry=Min("expires_at"),
        next_available=Min("available_at", filter=Q(state=PointLot.State.PENDING)),
    )
    return account_summary_build(
        account=account,
        now=now,
        ruleset=ruleset,
        qualifying_value=value,
        expiring_soon=expiring["points"],
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


def account_lots(*, account: LoyaltyAccount) -> QuerySet[PointLot]:
    return PointLot.objects.filter(account_id=account.pk).order_by("expires_at", "id")


def account_tier_history(*, account: LoyaltyAccount):
    return account.tier_changes.select_related("from_tier", "to_tier").order_by("-changed_at", "-id")


def account_of_customer(*, customer) -> LoyaltyAccount | None:
    return LoyaltyAccount.objects.filter(customer_id=customer.pk).select_related("tier").first()


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
