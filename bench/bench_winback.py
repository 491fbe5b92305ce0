"""Benchmark: the nightly win-back selection and its report at scale.

Builds a private PostgreSQL database `mo_bench_winback` (created, migrated, dropped at the end unless
--keep) with N customers and their metrics rows; a fifth of them dormant (400 days since the last order,
a 60-day cycle, p_alive 0.05 to 0.45), the rest active; value tiers high/medium/low in turn; SMS consent
for 90 %, WeChat (consent and openid) for a third. A programme with a budget of --offers offers, a 10 %
holdout, an offer per tier (a ¥30 coupon for high and medium, 100 bonus points for high). Then it times:

1. the run (`winback_run`): the selection (candidates with their exclusions, channel and score into a
   temporary table, the ranking by window functions within capacity and budget, the assignments by one
   INSERT ... SELECT with the hashed holdout), then the enrollment of the treated into the journey in
   batches (journey entry, coupons issued through loyalty, points on the ledger, assignments marked);
2. a second run of the same night (nothing to do);
3. with 12 % of the treated and 8 % of the holdout given an order in the window: the outcomes refresh,
   and the report (`winback_report`, median of --repeat).

    DJANGO_ENV=test PGPORT=5504 .venv/bin/python bench/bench_winback.py --customers 1000000
    DJANGO_ENV=test PGPORT=5504 .venv/bin/python bench/bench_winback.py --customers 100000 --offers 5000 --keep
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_loyalty_common import database_create as _database_create  # noqa: E402
from bench_loyalty_common import database_drop  # noqa: E402
from bench_loyalty_common import django_setup as _django_setup  # noqa: E402

DB_NAME = "mo_bench_winback"


def database_create() -> None:
    _database_create(DB_NAME)


def django_setup() -> None:
    _django_setup(DB_NAME)


def seed(n: int) -> None:
    from django.db import connection

    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute(
            f"""INSERT INTO crm_customer (external_id, name, email, phone, gender, city, region, time_zone,
                  acquisition_channel, utm_source, utm_medium, utm_campaign, language, preferred_channel,
                  created_at, updated_at)
                SELECT 'W' || i, '会员' || i, 'm' || i || '@example.cn', '+86139' || lpad(i::text, 8, '0'), '',
                  '上海', '', 'Asia/Shanghai', '', '', '', '', '', '', now(), now()
                FROM generate_series(1, {n}) i"""
        )
        cursor.execute(
            """INSERT INTO crm_customermetrics (customer_id, as_of, computed_at, order_count, total_value,
                  average_order_value, purchase_cycle_days, days_since_last_order, frequency, recency_days,
                  tenure_days, monetary_value, rfm_segment, lifecycle_stage, stage_since, p_alive, value_tier,
                  sleeping_high_value)
               SELECT id, current_date, now(), 3, 600, 100 + mod(id, 900), 60,
                  CASE WHEN mod(id, 5) = 0 THEN 400 ELSE 10 END, 2, 100, 500, 200, '',
                  CASE WHEN mod(id, 5) = 0 THEN 'dormant' ELSE 'active' END, current_date,
                  CASE WHEN mod(id, 5) = 0 THEN 0.05 + mod(id * 7919, 400) / 1000.0 ELSE 0.95 END,
                  (ARRAY['high', 'medium', 'low'])[1 + mod(id, 3)],
                  mod(id, 5) = 0 AND mod(id, 3) = 0
               FROM crm_customer"""
        )
        cursor.execute(
            "INSERT INTO crm_consent (customer_id, channel, status, changed_at, source) "
            "SELECT id, 'sms', 'opted_in', now(), 'signup' FROM crm_customer WHERE mod(id, 10) <> 0"
        )
        cursor.execute(
            "INSERT INTO crm_consent (customer_id, channel, status, changed_at, source) "
            "SELECT id, 'wechat', 'opted_in', now(), 'signup' FROM crm_customer WHERE mod(id, 3) = 1"
        )
        cursor.execute(
            "INSERT INTO crm_customeridentity (customer_id, kind, value, source, created_at) "
            "SELECT id, 'wechat_openid', 'openid-' || id, 'bench', now() FROM crm_customer WHERE mod(id, 3) = 1"
        )
        cursor.execute("ANALYZE")
    print(f"seeded {n:,} customers in {time.perf_counter() - started:.1f}s", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--offers", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()

    database_create()
    django_setup()
    from django.db import connection
    from django.utils import timezone

    from journeys.models import WinbackAssignment, WinbackOffer, WinbackProgramme
    from journeys.services.winback import winback_outcomes_refresh, winback_run
    from journeys.services.winback_journey import winback_journey_version
    from journeys.winback_report import winback_report
    from loyalty.models import CouponProgramme

    seed(args.customers)
    coupons = CouponProgramme.objects.create(
        name="回归礼券 ¥30",
        discount_kind="amount",
        discount_value=Decimal("30"),
        uses_per_code=1,
        valid_days_after_issue=30,
    )
    programme = WinbackProgramme.objects.create(
        name="沉睡客户唤醒", budget_offers=args.offers, holdout_percent=10, max_p_alive=0.6, value_tiers=[]
    )
    WinbackOffer.objects.create(
        programme=programme, value_tier="high", coupon_programme=coupons, points_bonus=100, cost=10
    )
    WinbackOffer.objects.create(programme=programme, value_tier="medium", coupon_programme=coupons, cost=10)
    WinbackOffer.objects.create(programme=programme, value_tier="low", cost=2)
    now = timezone.now().replace(hour=2, minute=0, second=0, microsecond=0)
    winback_journey_version(programme=programme, now=now)  # built once, as on the first night
    print(f"machine load {os.getloadavg()[0]:.1f}", flush=True)

    started = time.perf_counter()
    run = winback_run(programme=programme, now=now)
    elapsed = time.perf_counter() - started
    print(
        f"run: {elapsed:.2f}s; {run.considered:,} considered, {run.eligible:,} eligible, {run.selected:,} selected, "
        f"{run.held_out:,} held out, {run.enrolled:,} enrolled; selection steps {run.timings}",
        flush=True,
    )
    started = time.perf_counter()
    winback_run(programme=programme, now=now)
    print(f"second run of the night: {time.perf_counter() - started:.3f}s", flush=True)

    with connection.cursor() as cursor:
        cursor.execute(
            """INSERT INTO crm_order (external_id, customer_id, channel, store, placed_at, currency, total,
                  refunded_amount, status, fingerprint, created_at)
               SELECT 'WB-' || a.id, a.customer_id, '', '', a.selected_at + interval '3 days', 'CNY', 199, 0,
                  'paid', md5(a.id::text), now()
               FROM journeys_winbackassignment a
               WHERE mod(a.id * 7, 100) < CASE WHEN a.arm = 'treated' THEN 12 ELSE 8 END"""
        )
        cursor.execute("ANALYZE crm_order")
    started = time.perf_counter()
    winback_outcomes_refresh(programme=programme, now=now)
    print(
        f"outcomes refresh: {time.perf_counter() - started:.2f}s for {WinbackAssignment.objects.count():,} assignments"
    )
    times = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        report = winback_report(programme=programme)
        times.append(time.perf_counter() - t0)
    d = report.total.difference
    print(
        f"report: median {statistics.median(times) * 1000:.0f} ms, max {max(times) * 1000:.0f} ms ({args.repeat} runs); "
        f"treated {report.total.treated.rate:.3f} vs holdout {report.total.holdout.rate:.3f}, "
        f"uplift {d.estimate:+.4f} [{d.low:+.4f}, {d.high:+.4f}]",
        flush=True,
    )
    connection.close()
    if not args.keep:
        database_drop(DB_NAME)
    return 0


if __name__ == "__main__":
    sys.exit(main())
