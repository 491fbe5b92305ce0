"""Lots expire oldest first, set-based, once; an expiring-soon notice goes out as a behaviour event."""

from datetime import UTC, datetime, timedelta

import pytest

from crm.models import Event
from loyalty.models import LedgerEntry, PointLot
from loyalty.services import lifecycle
from loyalty.services.ledger import account_for_customer, points_adjust, points_redeem
from loyalty.services.lifecycle import expiring_notices_emit, points_expire_due
from loyalty.services.programme import ruleset_load
from tests.loyalty.ledger_helpers import T0, assert_consistent, customer_make, programme_setup

pytestmark = pytest.mark.django_db


def _earn(account, points, at):
    return points_adjust(
        account=account, points=points, idempotency_key=f"e-{points}-{at}", reason="earn", now=at
    )


def test_spending_uses_oldest_lots_so_expiry_takes_only_what_is_left_of_them():
    programme_setup(expiry_policy="rolling_months", expiry_months=12)
    account = account_for_customer(customer=customer_make())
    _earn(account, 100, T0)  # expires T0 + 12 months
    _earn(account, 100, T0 + timedelta(days=60))  # expires two months later
    points_redeem(
        account=account, points=150, idempotency_key="r", reason="reward", now=T0 + timedelta(days=90)
    )

    expired = points_expire_due(now=T0 + timedelta(days=366))

    assert expired == 0  # the oldest lot was spent first; nothing of it is left to expire
    expired = points_expire_due(now=T0 + timedelta(days=430))
    assert expired == 50
    account.refresh_from_db()
    assert account.available == 0
    assert_consistent(account)
    # Running again expires nothing twice.
    assert points_expire_due(now=T0 + timedelta(days=430)) == 0
    assert LedgerEntry.objects.filter(kind="expire").count() == 1


def test_portable_expiry_used_on_sqlite_takes_the_same_points_in_a_leased_run_and_reports_them_positive(
    monkeypatch,
):
    # make run's SQLite database takes this path (points_expire_due picks it by vendor); here on PostgreSQL.
    from loyalty.models import ExpiryRun

    monkeypatch.setattr(lifecycle, "_expire_batch_function", lambda: lifecycle._expire_batch_portable)
    programme_setup(expiry_policy="rolling_months", expiry_months=12)
    account = account_for_customer(customer=customer_make())
    _earn(account, 100, T0)
    _earn(account, 100, T0 + timedelta(days=60))
    points_redeem(
        account=account, points=150, idempotency_key="r", reason="reward", now=T0 + timedelta(days=90)
    )

    assert points_expire_due(now=T0 + timedelta(days=430)) == 50
    account.refresh_from_db()
    assert account.available == 0
    assert_consistent(account)
    assert points_expire_due(now=T0 + timedelta(days=430)) == 0
    runs = list(ExpiryRun.objects.order_by("pk").values_list("status", "points_expired", "lease_token"))
    assert runs == [("done", 50, None), ("done", 0, None)]
    entry = LedgerEntry.objects.get(kind="expire")
    assert entry.idempotency_key == f"expire:{account.pk}:run{ExpiryRun.objects.order_by('pk').first().pk}"


def test_end_of_following_year_policy_counts_years_in_the_programme_time_zone():
    programme_setup(expiry_policy="end_of_following_year")
    ruleset = ruleset_load()
    # 31 Dec 2026 20:00 UTC is already 1 Jan 2027 in Shanghai: the points last until the end of 2028.
    assert ruleset.expires_at(datetime(2026, 12, 31, 20, 0, tzinfo=UTC)) == datetime(
        2028, 12, 31, 16, 0, tzinfo=UTC
    )
    assert ruleset.expires_at(datetime(2026, 6, 1, tzinfo=UTC)) == datetime(2027, 12, 31, 16, 0, tzinfo=UTC)


def test_expiring_soon_notice_is_emitted_once_per_lot_as_a_behaviour_event():
    programme_setup(expiry_policy="rolling_months", expiry_months=1)
    customer = customer_make()
    account = account_for_customer(customer=customer)
    _earn(account, 40, T0)
    _earn(account, 60, T0 + timedelta(days=2))
    now = T0 + timedelta(days=5)

    assert expiring_notices_emit(now=now) == 1
    assert expiring_notices_emit(now=now) == 0

    event = Event.objects.get(type="points_expiring")
    assert event.customer_id == customer.pk
    assert event.properties["points"] == 100
    assert PointLot.objects.filter(notified_at__isnull=True).count() == 0


@pytest.mark.parametrize(
    "batch_name", ["_expire_batch", "_expire_batch_portable"], ids=["postgresql", "portable-for-sqlite"]
)
def test_an_expiry_run_whose_worker_died_is_resumed_where_it_stopped_and_expires_each_account_once(
    batch_name, monkeypatch, django_capture_on_commit_callbacks
):
    from django.db.models.functions import Now

    from loyalty import tasks
    from loyalty.models import ExpiryRun

    programme_setup(expiry_policy="rolling_months", expiry_months=12)
    accounts = [account_for_customer(customer=customer_make()) for _ in range(3)]
    for n, account in enumerate(accounts):
        points_adjust(account=account, points=40, idempotency_key=f"e-{n}", reason="earn", now=T0)
    monkeypatch.setattr(lifecycle, "_expire_batch_function", lambda: getattr(lifecycle, batch_name))
    real_batch = getattr(lifecycle, batch_name)
    batches = []

    def killed_in_the_second_batch(**kwargs):
        batches.append(kwargs["after"])
        if len(batches) == 2:
            raise SystemExit("worker killed")
        return real_batch(**kwargs)

    monkeypatch.setattr(lifecycle, batch_name, killed_in_the_second_batch)
    with pytest.raises(SystemExit):
        points_expire_due(now=T0 + timedelta(days=400), batch_accounts=1)
    run = ExpiryRun.objects.get()
    assert (run.status, run.last_account_id, run.points_expired) == ("running", accounts[0].pk, 40)
    monkeypatch.setattr(lifecycle, batch_name, real_batch)
    assert lifecycle.points_expiry_resume(run_id=run.pk) == 0  # its lease has not lapsed yet

    ExpiryRun.objects.filter(pk=run.pk).update(lease_expires_at=Now() - timedelta(seconds=1))
    queued = []
    monkeypatch.setattr(tasks.expiry_run_resume, "delay", queued.append)
    from crm.services.leases import leases_reap

    with django_capture_on_commit_callbacks(execute=True):
        leases_reap()
    assert queued == [run.pk]
    assert lifecycle.points_expiry_resume(run_id=run.pk, batch_accounts=1) == 80

    run.refresh_from_db()
    assert (run.status, run.points_expired, run.lease_token, run.lease_claims) == ("done", 120, None, 2)
    assert LedgerEntry.objects.filter(kind="expire").count() == 3
    for account in accounts:
        account.refresh_from_db()
        assert account.available == 0
        assert_consistent(account)
