"""Nightly expiry of 1,000,000 lots: seconds for `points_expire_due`, set-based over batches of accounts.

    flock /tmp/bench.lock .venv/bin/python bench/bench_loyalty_expiry.py
    flock /tmp/bench.lock .venv/bin/python bench/bench_loyalty_expiry.py --help

Target (issue): nightly expiry of 1,000,000 lots <= 60 s.

What it does:
1. creates the database `mo_bench_loyalty`, migrates it, seeds --accounts customers with loyalty accounts;
2. per run: empties the ledger, writes --lots-per-account available lots per account (each with its earn
   entry) of which all but --keep-per-account expired yesterday, so --accounts x (--lots-per-account -
   --keep-per-account) lots are due; VACUUM ANALYZE; then times `points_expire_due(now)` (one `expire`
   entry per account per batch of --batch-accounts accounts, every due lot zeroed and pointing at it,
   the cached balances moved, all in one statement per batch);
3. prints the wall time and the CPU time spent (this process + its PostgreSQL backend, from /proc: what
   the job costs whatever else the shared machine runs); checks that every due lot expired, nothing else did, and the cached balances equal the entries;
   after the last run, runs loyalty_audit over the whole ledger;
4. drops the database (unless --keep-db).
"""

from __future__ import annotations

import argparse
import time

from bench_loyalty_common import (
    accounts_seed,
    audit_or_die,
    backend_cpu_seconds,
    customers_seed,
    database_create,
    database_drop,
    django_setup,
    lots_seed,
    median,
    programme_seed,
    sql,
)


def parse_args():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--accounts", type=int, default=100_000)
    parser.add_argument("--lots-per-account", type=int, default=11)
    parser.add_argument("--keep-per-account", type=int, default=1, help="lots per account not yet due")
    parser.add_argument("--batch-accounts", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--keep-db", action="store_true")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    database_create()
    django_setup()
    try:
        run(args)
    finally:
        if not args.keep_db:
            database_drop()


def run(args) -> None:
    from django.db import connection
    from django.utils import timezone

    from loyalty.models import LedgerEntry, LoyaltyAccount, PointLot
    from loyalty.services.lifecycle import points_expire_due

    programme_seed(expiry_policy="rolling_months")
    customers_seed(args.accounts)
    accounts_seed()
    due_per_account = args.lots_per_account - args.keep_per_account
    times = []
    cpus = []
    for r in range(args.runs):
        t = time.perf_counter()
        sql(
            "TRUNCATE loyalty_lotconsumption, loyalty_pointlot, loyalty_owedpoints, loyalty_ledgerentry CASCADE"
        )
        sql("UPDATE loyalty_loyaltyaccount SET available = 0, pending = 0, owed = 0")
        lots_seed(account_ids=None, lots=due_per_account, points=10, expires_in="-1 day")
        lots_seed(
            account_ids=None,
            lots=args.keep_per_account,
            points=10,
            expires_in="200 days",
            earned_ago="10 days",
            tag="b",
        )
        # Each run starts from the same state: clean tables and fresh statistics, as after the nightly vacuum.
        connection.ensure_connection()
        old_autocommit = connection.get_autocommit()
        connection.set_autocommit(True)
        sql("VACUUM ANALYZE loyalty_pointlot")
        sql("VACUUM ANALYZE loyalty_ledgerentry")
        sql("VACUUM ANALYZE loyalty_loyaltyaccount")
        connection.set_autocommit(old_autocommit)
        due = PointLot.objects.filter(expires_at__lte=timezone.now()).count()
        print(f"run {r + 1}: seeded {due:,} due lots in {time.perf_counter() - t:.1f}s", flush=True)

        backend0, cpu0 = backend_cpu_seconds(), time.process_time()
        t0 = time.perf_counter()
        expired = points_expire_due(now=timezone.now(), batch_accounts=args.batch_accounts)
        elapsed = time.perf_counter() - t0
        cpu = time.process_time() - cpu0 + backend_cpu_seconds() - backend0
        times.append(elapsed)
        cpus.append(cpu)
        left = PointLot.objects.filter(expires_at__lte=timezone.now(), remaining__gt=0).count()
        untouched = PointLot.objects.filter(expires_at__gt=timezone.now(), expired=0).count()
        entries = LedgerEntry.objects.filter(kind="expire").count()
        bad = LoyaltyAccount.objects.exclude(available=args.keep_per_account * 10).count()
        print(
            f"run {r + 1}: expired {due:,} lots ({-expired:,} points) of {args.accounts:,} accounts in {elapsed:.1f}s "
            f"= {due / elapsed:,.0f} lots/s; expire entries {entries:,}; due lots left {left}; "
            f"not-due lots untouched {untouched:,}; accounts with a wrong balance {bad}; CPU (this process + "
            f"its PostgreSQL backend) {cpu:.1f}s",
            flush=True,
        )
        if left or bad or untouched != args.accounts * args.keep_per_account:
            raise SystemExit("expiry incomplete or wrong")
    print(f"MEDIAN: {median(times):.1f}s for {due:,} lots; CPU {median(cpus):.1f}s", flush=True)
    audit_or_die()


if __name__ == "__main__":
    main()
