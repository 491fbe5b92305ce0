"""Benchmark: a journey's results against its holdout (journeys.analytics.journey_results), the figures the
designer's header shows on opening and with every counts refresh.

Builds (once) a PostgreSQL database with N customers (1,000,000 by default), one journey with an
enrollment per customer (90 % treated, 10 % holdout, entered over the last 60 days), an `order_placed`
event and an order for about one customer in five after they entered (treated a little more often), and
three older events per customer of other types (so the goal look-up has rows to skip). Then times
journey_results (a warm-up, then --runs fresh calls) and prints the median and the spread.

    DJANGO_ENV=test PGPORT=5503 .venv/bin/python bench/bench_journey_results.py --customers 100000
    DJANGO_ENV=test PGPORT=5503 .venv/bin/python bench/bench_journey_results.py

The database (mo_bench_journey_results[_<scale>]) is created if missing on PGHOST/PGPORT/PGUSER and kept
for later runs; `--rebuild` drops it first.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_admin_list import ensure_database  # noqa: E402
from bench.bench_campaign_report import customers_sql  # noqa: E402


def build(n: int):
    from django.core.management import call_command
    from django.db import connection

    from crm.models import Customer
    from journeys.library import library_journey_copy
    from journeys.models import Journey, JourneyVersion

    call_command("migrate", verbosity=0)
    journey = Journey.objects.filter(name="bench results").first()
    if journey and Customer.objects.count() == n:
        return journey
    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE crm_customer, journeys_journey CASCADE")
        cursor.execute(customers_sql(n))
    from datetime import timedelta

    from django.utils import timezone

    # Made before the 60 days of entries below: no enrollment predates its journey.
    journey = library_journey_copy(
        code="dormant_winback", name="bench results", now=timezone.now() - timedelta(days=90)
    )
    version = JourneyVersion.objects.get(journey=journey)
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO journeys_enrollment (customer_id, journey_id, version_id, node_id, state, arm, occurrence,
                entered_at, steps_taken, attempts, waiting_for, wake_handle, reason, reason_params)
            SELECT id, %(journey)s, %(version)s, 'done', CASE WHEN id %% 10 = 0 THEN 'exited' ELSE 'completed' END,
                CASE WHEN id %% 10 = 0 THEN 'holdout' ELSE 'treated' END, 'bench',
                now() - ((id %% 60) * INTERVAL '1 day'), 1, 0, '', '', '', '{}'::jsonb
            FROM crm_customer
            """,
            {"journey": journey.pk, "version": version.pk},
        )
        cursor.execute(
            """
            INSERT INTO crm_event (customer_id, type, properties, occurred_at, channel, received_at)
            SELECT id, (ARRAY['page_view', 'add_to_cart', 'product_view'])[1 + k], '{}'::jsonb,
                now() - ((70 + (id * 7 + k) % 300) * INTERVAL '1 day'), 'web', now()
            FROM crm_customer, generate_series(0, 2) AS k
            """
        )
        # About 20 % of the treated and 15 % of the holdout convert (the holdout's ids are multiples of 10).
        converted = "CASE WHEN id % 10 = 0 THEN (id / 10 * 31) % 100 < 15 ELSE (id * 31) % 100 < 20 END"
        cursor.execute(
            f"""
            INSERT INTO crm_event (customer_id, type, properties, occurred_at, channel, received_at)
            SELECT id, 'order_placed', '{{}}'::jsonb, now() - ((id % 60) * INTERVAL '1 day') + INTERVAL '2 hours',
                'tmall', now()
            FROM crm_customer WHERE {converted}
            """
        )
        cursor.execute(
            f"""
            INSERT INTO crm_order (external_id, customer_id, channel, store, placed_at, currency, total,
                refunded_amount, status, fingerprint, created_at)
            SELECT 'JR' || id, id, 'tmall', '', now() - ((id % 60) * INTERVAL '1 day') + INTERVAL '2 hours', 'CNY',
                (50 + (id * 11) % 450)::numeric(14, 2), 0, 'paid', md5('jr' || id), now()
            FROM crm_customer WHERE {converted}
            """
        )
        cursor.execute("VACUUM ANALYZE")
    return journey


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--rebuild", action="store_true")
    args = parser.parse_args()
    name = "mo_bench_journey_results" + ("" if args.customers == 1_000_000 else f"_{args.customers}")
    os.environ["DATABASE_URL"] = ensure_database(name, args.rebuild)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from journeys.analytics import journey_results

    started = time.perf_counter()
    journey = build(args.customers)
    print(f"data ready in {time.perf_counter() - started:.1f} s")
    journey_results(journey=journey)  # warm-up
    times = []
    for _ in range(args.runs):
        t = time.perf_counter()
        results = journey_results(journey=journey)
        times.append(time.perf_counter() - t)
    for arm in ("treated", "holdout"):
        figures = getattr(results, arm)
        print(
            f"  {arm:8} enrolled {figures.enrolled:>9,} converted {figures.converted:>8,} revenue {figures.revenue:>14,}"
        )
    print(f"  conversion difference {results.rate_difference}")
    print(f"  revenue difference    {results.revenue_difference}")
    print(
        f"journey_results over {args.customers:,} enrollments: median {statistics.median(times) * 1000:.0f} ms "
        f"(min {min(times) * 1000:.0f}, max {max(times) * 1000:.0f}; {args.runs} runs after a warm-up)"
    )


if __name__ == "__main__":
    main()
