"""Concurrent redemptions against PostgreSQL, from real threads and real processes: the account row lock
serialises them, so the balance never goes below zero and every sum is exact."""

import multiprocessing
import threading
from collections import Counter

import pytest
from django.db import connections

from loyalty.models import LedgerEntry, LoyaltyAccount
from loyalty.services.audit import ledger_audit
from loyalty.services.ledger import InsufficientPoints, account_for_customer, points_adjust, points_redeem
from tests.loyalty.ledger_helpers import T0, assert_consistent, customer_make, programme_setup

pytestmark = pytest.mark.django_db(transaction=True)

LOTS, LOT_POINTS, PRICE = 100, 10, 7  # 1,000 points; 142 redemptions of 7 fit, the 143rd cannot


def _funded_account():
    programme_setup()
    account = account_for_customer(customer=customer_make())
    for n in range(LOTS):
        points_adjust(account=account, points=LOT_POINTS, idempotency_key=f"fund-{n}", reason="seed", now=T0)
    return account


def _redeem_many(account_id: int, prefix: str, count: int, results: list) -> None:
    try:
        account = LoyaltyAccount.objects.get(pk=account_id)
        for n in range(count):
            try:
                points_redeem(account=account, points=PRICE, idempotency_key=f"{prefix}-{n}", reason="reward")
                results.append("ok")
            except InsufficientPoints:
                results.append("short")
    finally:
        connections.close_all()  # each thread has its own connection; leave none open


def _assert_exact(account_id: int, successes: int) -> None:
    account = LoyaltyAccount.objects.get(pk=account_id)
    assert successes == (LOTS * LOT_POINTS) // PRICE
    assert account.available == LOTS * LOT_POINTS - successes * PRICE >= 0
    assert LedgerEntry.objects.filter(account=account, kind="redeem").count() == successes
    assert_consistent(account)
    assert ledger_audit() == []


def test_redeem_never_overdraws_under_concurrency_from_threads():
    account = _funded_account()
    results: list[str] = []
    threads = [
        threading.Thread(target=_redeem_many, args=(account.pk, f"t{n}", 25, results)) for n in range(8)
    ]  # 200 attempts for room for 142
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    counts = Counter(results)
    assert counts["ok"] + counts["short"] == 200
    _assert_exact(account.pk, counts["ok"])


def _process_worker(account_id: int, prefix: str, count: int, queue) -> None:
    results: list[str] = []
    _redeem_many(account_id, prefix, count, results)
    queue.put(results)


def test_redeem_never_overdraws_under_concurrency_from_processes():
    account = _funded_account()
    connections.close_all()  # forked children must open their own connections
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_process_worker, args=(account.pk, f"p{n}", 50, queue)) for n in range(4)]
    for p in procs:
        p.start()
    results = []
    for _p in procs:
        results.extend(queue.get(timeout=120))
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    counts = Counter(results)
    assert counts["ok"] + counts["short"] == 200
    _assert_exact(account.pk, counts["ok"])


def test_retry_storm_of_one_idempotency_key_spends_once():
    account = _funded_account()
    entry_ids: list[int] = []
    errors: list[Exception] = []

    def retry():
        try:
            entry = points_redeem(
                account=LoyaltyAccount.objects.get(pk=account.pk),
                points=300,
                idempotency_key="storm",
                reason="x",
            )
            entry_ids.append(entry.pk)
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=retry) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(set(entry_ids)) == 1 and len(entry_ids) == 16
    account.refresh_from_db()
    assert account.available == LOTS * LOT_POINTS - 300
    assert LedgerEntry.objects.filter(idempotency_key="storm").count() == 1
    assert ledger_audit() == []
