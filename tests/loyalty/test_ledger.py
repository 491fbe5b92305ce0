"""The ledger's contract: idempotent writes, FIFO spending, no overdraft, append-only rows, rebuildable
balances, and accounts folded on a customer merge."""

from datetime import timedelta

import pytest
from django.db import DatabaseError, transaction

from crm.services.customers import customer_merge
from loyalty.models import LedgerEntry, LotConsumption, LoyaltyAccount, PointLot
from loyalty.selectors import account_history, account_summary
from loyalty.services.ledger import (
    IdempotencyConflict,
    InsufficientPoints,
    InvalidPoints,
    account_for_customer,
    account_rebuild_balances,
    points_adjust,
    points_redeem,
)
from tests.loyalty.ledger_helpers import (
    T0,
    assert_consistent,
    customer_make,
    order_make,
    process,
    programme_setup,
)

pytestmark = pytest.mark.django_db


def _account_with_lots(*amounts_and_expiry):
    """An account holding available lots of (points, months until expiry)."""
    programme_setup()
    customer = customer_make()
    account = account_for_customer(customer=customer)
    for n, (points, _months) in enumerate(amounts_and_expiry):
        points_adjust(account=account, points=points, idempotency_key=f"seed-{n}", reason="seed", now=T0)
    lots = list(PointLot.objects.filter(account=account).order_by("id"))
    for lot, (_points, months) in zip(lots, amounts_and_expiry, strict=True):
        PointLot.objects.filter(pk=lot.pk).update(expires_at=T0 + timedelta(days=30 * months))
    account.refresh_from_db()
    return account


def test_redeem_spends_the_soonest_expiring_lots_first():
    account = _account_with_lots((100, 12), (50, 3), (70, 6))
    entry = points_redeem(account=account, points=120, idempotency_key="r-1", reason="reward")

    taken = {c.lot.points: c.points for c in LotConsumption.objects.filter(entry=entry).select_related("lot")}
    assert taken == {50: 50, 70: 70}
    account.refresh_from_db()
    assert account.available == 100
    assert_consistent(account)


def test_same_idempotency_key_returns_the_first_result_and_changes_nothing():
    account = _account_with_lots((100, 12))
    first = points_redeem(account=account, points=30, idempotency_key="req-1", reason="reward")
    again = points_redeem(account=account, points=30, idempotency_key="req-1", reason="reward")
    assert again.pk == first.pk
    account.refresh_from_db()
    assert account.available == 70


def test_same_key_with_a_different_payload_is_refused():
    account = _account_with_lots((100, 12))
    points_redeem(account=account, points=30, idempotency_key="req-1", reason="reward")
    with pytest.raises(IdempotencyConflict) as info:
        points_redeem(account=account, points=31, idempotency_key="req-1", reason="reward")
    assert info.value.status_code == 409
    account.refresh_from_db()
    assert account.available == 70


def test_redeem_more_than_available_is_refused_and_writes_nothing():
    account = _account_with_lots((100, 12))
    with pytest.raises(InsufficientPoints):
        points_redeem(account=account, points=101, idempotency_key="r", reason="reward")
    with pytest.raises(InvalidPoints):
        points_redeem(account=account, points=0, idempotency_key="r0", reason="reward")
    assert LedgerEntry.objects.filter(kind="redeem").count() == 0
    account.refresh_from_db()
    assert account.available == 100


def test_redeem_inside_a_rolled_back_caller_transaction_leaves_no_trace():
    account = _account_with_lots((100, 12))
    with pytest.raises(RuntimeError), transaction.atomic():
        points_redeem(account=account, points=40, idempotency_key="r", reason="reward")
        raise RuntimeError("stock ran out")
    account.refresh_from_db()
    assert account.available == 100
    assert not LedgerEntry.objects.filter(idempotency_key="r").exists()


def test_negative_adjustment_beyond_balance_is_refused_unless_owed_is_allowed():
    account = _account_with_lots((100, 12))
    with pytest.raises(InsufficientPoints):
        points_adjust(account=account, points=-150, idempotency_key="a1", reason="correction")
    points_adjust(account=account, points=-150, idempotency_key="a2", reason="correction", allow_owed=True)
    account.refresh_from_db()
    assert (account.available, account.owed) == (0, 50)
    assert_consistent(account)


def test_entries_cannot_be_edited_or_deleted_in_the_database():
    account = _account_with_lots((100, 12))
    entry = LedgerEntry.objects.get()
    with pytest.raises(DatabaseError), transaction.atomic():
        LedgerEntry.objects.filter(pk=entry.pk).update(points=1_000_000)
    with pytest.raises(DatabaseError), transaction.atomic():
        LedgerEntry.objects.filter(pk=entry.pk).delete()
    assert LedgerEntry.objects.get().points == 100
    assert account.available == 100


def test_cached_balance_can_be_rebuilt_from_entries():
    account = _account_with_lots((100, 12), (20, 12))
    LoyaltyAccount.objects.filter(pk=account.pk).update(available=7)
    sums = account_rebuild_balances(account=account)
    account.refresh_from_db()
    assert sums["available"] == account.available == 120


def test_summary_shows_balances_tier_progress_and_points_expiring_soon():
    account = _account_with_lots((100, 12), (40, 0.5))
    summary = account_summary(account=account, now=T0)
    assert (summary.available, summary.pending, summary.owed) == (140, 0, 0)
    assert summary.expiring_soon == 40
    assert summary.tier.code == "member"
    assert summary.progress.next_tier.code == "silver"
    assert summary.progress.amount_to_next == 1000
    assert [e.points for e in account_history(account=account)] == [40, 100]


def test_merging_customers_folds_their_accounts_into_the_survivor():
    programme_setup(return_window_days=0)
    survivor, merged = customer_make(), customer_make()
    order_make(survivor, total="100")
    order_make(merged, total="250")
    process(T0 + timedelta(hours=1))
    kept = LoyaltyAccount.objects.get(customer=survivor)
    gone = LoyaltyAccount.objects.get(customer=merged)
    points_redeem(account=gone, points=50, idempotency_key="g1", reason="reward")

    customer_merge(survivor=survivor, merged=merged)

    kept.refresh_from_db()
    gone.refresh_from_db()
    assert kept.available == 300
    assert (gone.status, gone.merged_into_id, gone.customer_id, gone.available) == (
        "merged",
        kept.pk,
        None,
        0,
    )
    assert LedgerEntry.objects.filter(account=kept).count() == 3
    assert_consistent(kept)
    # Spending after the merge still takes the oldest lots, whichever account they came from.
    points_redeem(account=kept, points=300, idempotency_key="k1", reason="reward")
    assert_consistent(kept)
