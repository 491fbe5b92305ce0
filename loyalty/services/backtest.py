"""What a rule, tier, promotion or programme change would have done, before it is saved.

Pure computation: the past orders of the window are run through the accrual arithmetic twice, once with
the programme as it is and once with the draft in place (`RuleSet.with_draft`), and the tier each member
would hold is worked out from both. Nothing is written.

Reported: members whose tier would change (up / down, and from→to counts), points the orders of the
window would have issued, and the outstanding points liability (available + pending) adjusted by the
difference in points issued and, for an expiry change, by what the new policy would already have expired
or would not yet have expired.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime

from django.db.models import Sum
from django.utils import timezone

from crm.models import Order, OrderLine
from loyalty.models import LoyaltyAccount, PointLot
from loyalty.selectors import qualifying_values
from loyalty.services.earning import LineData, OrderData, order_earnings
from loyalty.services.programme import RuleSet, ruleset_load


@dataclass
class BacktestResult:
    since: datetime
    until: datetime
    orders: int = 0
    members: int = 0
    points_current: int = 0
    points_draft: int = 0
    tier_up: int = 0
    tier_down: int = 0
    tier_moves: dict = field(default_factory=dict)  # {(from name, to name): members}
    liability_current: int = 0
    liability_draft: int = 0
    expiry_now_draft: int = 0  # points still open that the draft expiry policy would already have expired
    expiry_restored: int = 0  # points expired under the current policy that the draft would still hold

    @property
    def points_delta(self) -> int:
        return self.points_draft - self.points_current

    @property
    def tier_changes(self) -> int:
        return self.tier_up + self.tier_down


def _orders(since, until, chunk=5000):
    last = 0
    while True:
        rows = list(
            Order.objects.filter(placed_at__gte=since, placed_at__lt=until, total__gt=0, id__gt=last)
            .order_by("id")
            .values_list(
                "id",
                "external_id",
                "customer_id",
                "placed_at",
                "currency",
                "total",
                "refunded_amount",
                "status",
            )[:chunk]
        )
        if not rows:
            return
        last = rows[-1][0]
        lines = defaultdict(list)
        for row in OrderLine.objects.filter(order_id__in=[r[0] for r in rows]).values_list(
            "order_id", "id", "line_no", "sku", "category", "quantity", "line_total", "refunded_quantity"
        ):
            lines[row[0]].append(LineData(*row[1:]))
        for row in rows:
            yield OrderData(*row), lines.get(row[0], [])


def backtest_run(
    *,
    draft_rule=None,
    draft_tier=None,
    draft_promotion=None,
    draft_programme=None,
    since: datetime | None = None,
    until: datetime | None = None,
    now: datetime | None = None,
) -> BacktestResult:
    now = now or timezone.now()
    current = ruleset_load()
    draft = current.with_draft(
        rule=draft_rule, tier=draft_tier, promotion=draft_promotion, programme=draft_programme
    )
    until = until or now
    since = since or min(current.window_start(now), draft.window_start(now))
    result = BacktestResult(since=since, until=until)

    accounts = dict(LoyaltyAccount.objects.filter(status="active").values_list("customer_id", "id"))
    tiers = dict(LoyaltyAccount.objects.filter(status="active").values_list("id", "tier_id"))
    points_by_account: dict[str, Counter] = {"current": Counter(), "draft": Counter()}
    for order, lines in _orders(since, until):
        result.orders += 1
        account_id = accounts.get(order.customer_id)
        tier_now = current.tier_by_id(tiers.get(account_id))
        tier_draft = draft.tier_by_id(tiers.get(account_id)) or tier_now  # a draft of this tier, if any
        for label, ruleset, tier in (("current", current, tier_now), ("draft", draft, tier_draft)):
            earned = sum(
                e.total for e in order_earnings(ruleset=ruleset, order=order, lines=lines, tier=tier)
            )
            if label == "current":
                result.points_current += earned
            else:
                result.points_draft += earned
            if account_id is not None:
                points_by_account[label][account_id] += earned

    _tiers_compare(result, current, draft, list(tiers), points_by_account, now)
    totals = LoyaltyAccount.objects.filter(status="active").aggregate(a=Sum("available"), p=Sum("pending"))
    result.liability_current = (totals["a"] or 0) + (totals["p"] or 0)
    if draft_programme is not None and (
        draft_programme.expiry_policy != current.programme.expiry_policy
        or draft_programme.expiry_months != current.programme.expiry_months
    ):
        _expiry_compare(result, draft, now)
    result.liability_draft = max(
        result.liability_current + result.points_delta - result.expiry_now_draft + result.expiry_restored, 0
    )
    return result


def _tiers_compare(result, current: RuleSet, draft: RuleSet, account_ids, points_by_account, now) -> None:
    result.members = len(account_ids)
    if not (current.tiers or draft.tiers):
        return
    moves: Counter = Counter()
    for start in range(0, len(account_ids), 10000):
        chunk = account_ids[start : start + 10000]
        values = {}
        for label, ruleset in (("current", current), ("draft", draft)):
            if ruleset.programme.tier_basis == "spend":
                values[label] = qualifying_values(
                    account_ids=chunk, since=ruleset.window_start(now), basis="spend"
                )
            else:
                values[label] = {aid: points_by_account[label][aid] for aid in chunk}
        for aid in chunk:
            before = current.tier_for_value(values["current"][aid])
            after = draft.tier_for_value(values["draft"][aid])
            rank_before = -1 if before is None else before.rank
            rank_after = -1 if after is None else after.rank
            if rank_after > rank_before:
                result.tier_up += 1
            elif rank_after < rank_before:
                result.tier_down += 1
            else:
                continue
            moves[(before.name if before else "-", after.name if after else "-")] += 1
    result.tier_moves = dict(moves)


def _expiry_compare(result, draft: RuleSet, now) -> None:
    for earned_at, remaining in (
        PointLot.objects.filter(state="available")
        .filter(remaining__gt=0)
        .values_list("earned_at", "remaining")
        .iterator(chunk_size=10000)
    ):
        expires = draft.expires_at(earned_at)
        if expires is not None and expires <= now:
            result.expiry_now_draft += remaining
    for earned_at, expired in (
        PointLot.objects.filter(expired__gt=0).values_list("earned_at", "expired").iterator(chunk_size=10000)
    ):
        expires = draft.expires_at(earned_at)
        if expires is None or expires > now:
            result.expiry_restored += expired
