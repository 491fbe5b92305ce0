"""Benchmark: the nightly `manage.py compute_metrics` at scale.

Builds (once) a PostgreSQL database with N customers, about 3 orders per customer on average among the
80% who buy (3,000,000 orders at 1,000,000 customers) and 10 behaviour events per customer, generated with
set-based SQL (generate_series + random(), seeded), then:

1. empties the metrics table and the lifecycle events of earlier runs;
2. runs `manage.py compute_metrics --as-of D-3` (the first run: baseline, no stage-change events);
3. runs it for D-2, D-1 and D (nightly runs: each compares with the night before and writes the stage
   changes as events), and prints each run's wall time (a fresh process, as beat's worker would) with
   the service's own breakdown.

    flock /tmp/bench.lock .venv/bin/python bench/bench_compute_metrics.py --customers 1000000
    flock /tmp/bench.lock .venv/bin/python bench/bench_compute_metrics.py --customers 100000 --db mo_bench_metrics_100k

The database (user postgres on 127.0.0.1:5432, or PGHOST/PGPORT/PGUSER) is created if missing and kept
for later runs; `--rebuild` drops it first, `--drop` drops it at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from datetime import date, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

AS_OF = date(2026, 11, 22)  # the last of the nightly runs; orders go back three years from it
HISTORY_DAYS = 3 * 365


def seed_sql(n: int, events_per_customer: int) -> list[str]:
    """Customers join uniformly over three years; 80% buy, on the day they join first. Each buyer has
    their own purchase rate, active life and spend level, so that the models have heterogeneity to find:
    1 + floor(Exp(μ)) orders with μ ~ Exp(mean 3.25) (≈ 3 orders per customer overall), the later ones
    uniform over an active life ~ Exp(mean 400 days) cut at the as-of date; order values around a
    log-normal personal level (median ≈ 150 CNY). 2% of orders are refunded in full."""
    as_of = AS_OF.isoformat()
    return [
        "SELECT setseed(0.20261123)",
        # Foreign keys are right by construction here; their per-row triggers would cost more than the
        # inserts themselves (10 million queued checks). Needs a superuser, as the bench runs anyway.
        "SET session_replication_role = replica",
        f"""
        INSERT INTO crm_customer (external_id, name, email, phone, gender, city, region, time_zone,
            acquisition_channel, utm_source, utm_medium, utm_campaign, created_at, updated_at)
        SELECT 'M' || lpad(i::text, 8, '0'), '', 'm' || i || '@example.cn', '', '', '', '', 'Asia/Shanghai',
            (ARRAY['wechat', 'tmall', 'jd', 'app', 'web', 'store'])[1 + i % 6], '', '', '',
            DATE '{as_of}' - {HISTORY_DAYS} + (i::bigint * {HISTORY_DAYS} / {n})::int + TIME '09:00', now()
        FROM generate_series(1, {n}) AS i
        """,
        f"""
        CREATE TEMPORARY TABLE bench_buyer AS
        SELECT customer_id, joined,
               1 + floor(-ln(1 - random()) * -ln(1 - random()) * 3.25)::int AS orders,
               greatest(1, least(DATE '{as_of}' - joined, floor(-ln(1 - random()) * 400)::int)) AS span,
               exp(5 + 0.6 * sqrt(-2 * ln(1 - random())) * cos(2 * pi() * random())) AS level
        FROM (SELECT id AS customer_id, created_at::date AS joined FROM crm_customer WHERE random() < 0.8) c
        """,
        """
        INSERT INTO crm_order (external_id, customer_id, channel, store, placed_at, currency, total,
            refunded_amount, status, fingerprint, created_at)
        SELECT o.external_id, o.customer_id, 'tmall', '', o.placed_at, 'CNY', o.total,
               CASE WHEN o.refunded THEN o.total ELSE 0 END,
               CASE WHEN o.refunded THEN 'refunded' ELSE 'paid' END, md5(o.external_id), o.placed_at
        FROM (
            SELECT 'BO' || b.customer_id || '-' || g AS external_id, b.customer_id,
                   (b.joined + CASE WHEN g = 1 THEN 0 ELSE floor(random() * (b.span + 1))::int END)
                       + random() * INTERVAL '14 hours' + TIME '08:00' AS placed_at,
                   round((b.level * (0.5 + random()))::numeric, 2) AS total,
                   random() < 0.02 AS refunded
            FROM bench_buyer b CROSS JOIN LATERAL generate_series(1, b.orders) AS g
        ) o
        -- Stored in the order they happened, as ingestion writes them: a table laid out by customer
        -- would flatter any plan that reads it in customer order.
        ORDER BY o.placed_at
        """,
        f"""
        INSERT INTO crm_event (customer_id, type, properties, occurred_at, channel, received_at)
        SELECT 1 + floor(random() * {n})::bigint,
               (ARRAY['page_view', 'page_view', 'page_view', 'product_view', 'add_to_cart', 'search',
                      'login'])[1 + floor(random() * 7)::int],
               '{{}}'::jsonb, TIMESTAMPTZ '{as_of}' - random() * INTERVAL '365 days', 'web', now()
        FROM generate_series(1, {n * events_per_customer}) AS i
        """,
        "SET session_replication_role = DEFAULT",
        "ANALYZE",
    ]


def ensure_database(name: str, rebuild: bool) -> str:
    import psycopg

    host = os.environ.get("PGHOST", "127.0.0.1")
    port = os.environ.get("PGPORT", "5432")
    user = os.environ.get("PGUSER", "postgres")
    with psycopg.connect(f"host={host} port={port} user={user} dbname=postgres", autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
        if exists and rebuild:
            conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
            exists = None
        if not exists:
            conn.execute(f'CREATE DATABASE "{name}"')
    return f"postgres://{user}@{host}:{port}/{name}"


def drop_database(name: str) -> None:
    import psycopg

    host = os.environ.get("PGHOST", "127.0.0.1")
    port = os.environ.get("PGPORT", "5432")
    user = os.environ.get("PGUSER", "postgres")
    with psycopg.connect(f"host={host} port={port} user={user} dbname=postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def build(n: int, events_per_customer: int) -> None:
    from django.core.management import call_command
    from django.db import connection

    from crm.models import Customer

    call_command("migrate", verbosity=0)
    have = Customer.objects.count()
    if have == n:
        return
    if have:
        raise SystemExit(f"database holds {have} customers, not {n}: run with --rebuild")
    started = time.perf_counter()
    with connection.cursor() as cursor:
        for statement in seed_sql(n, events_per_customer):
            cursor.execute(statement)
    print(f"seeded in {time.perf_counter() - started:.0f} s", flush=True)


def counts() -> dict[str, int]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT (SELECT count(*) FROM crm_customer), (SELECT count(*) FROM crm_order),"
            " (SELECT count(*) FROM crm_event WHERE type <> 'lifecycle_stage_changed')"
        )
        customers, orders, events = cursor.fetchone()
    return {"customers": customers, "orders": orders, "events": events}


def reset() -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE crm_customermetrics")
        cursor.execute("DELETE FROM crm_event WHERE type = 'lifecycle_stage_changed'")
        cursor.execute("DELETE FROM crm_metricsrun")
        cursor.execute("VACUUM ANALYZE crm_customermetrics")
        cursor.execute("VACUUM ANALYZE crm_event")


def run_command(as_of: date, env: dict) -> float:
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "manage.py", "compute_metrics", "--as-of", as_of.isoformat()],
        cwd=ROOT,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--events-per-customer", type=int, default=10)
    parser.add_argument("--nights", type=int, default=3, help="nightly runs after the baseline")
    parser.add_argument("--db", default=None, help="database name (default mo_bench_metrics[_<scale>])")
    parser.add_argument("--rebuild", action="store_true")
    parser.add_argument("--drop", action="store_true", help="drop the database when done")
    args = parser.parse_args()
    db = args.db or (
        "mo_bench_metrics" if args.customers == 1_000_000 else f"mo_bench_metrics_{args.customers}"
    )

    os.environ["DATABASE_URL"] = ensure_database(db, args.rebuild)
    os.environ.setdefault("DJANGO_ENV", "test")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    import django

    django.setup()
    from crm.models.metrics import MetricsRun

    build(args.customers, args.events_per_customer)
    scale = counts()
    print(
        f"scale: {scale['customers']:,} customers, {scale['orders']:,} orders, {scale['events']:,} events",
        flush=True,
    )
    reset()
    env = dict(os.environ)
    first = AS_OF - timedelta(days=args.nights)
    print(f"{'run':26} {'wall s':>7} {'service s':>9} {'changes':>8}  breakdown (s)")
    nightly = []
    for i in range(args.nights + 1):
        as_of = first + timedelta(days=i)
        wall = run_command(as_of, env)
        run = MetricsRun.objects.order_by("-started_at", "-id").first()
        label = f"{as_of} {'baseline' if i == 0 else 'nightly'}"
        print(
            f"{label:26} {wall:7.1f} {run.duration_seconds:9.1f} {run.stage_changes:8,}  {json.dumps(run.timings)}",
            flush=True,
        )
        if i:
            nightly.append(wall)
    last = MetricsRun.objects.order_by("-started_at", "-id").first()
    print(
        f"fit: r={last.bgnbd_r:.4f} alpha={last.bgnbd_alpha:.3f} d a={last.bgnbd_a:.4f} b={last.bgnbd_b:.4f} "
        f"LL={last.bgnbd_log_likelihood:.1f}; p={last.gg_p:.3f} q={last.gg_q:.3f} gamma={last.gg_gamma:.3f}"
    )
    print(f"median nightly wall time: {statistics.median(nightly):.1f} s over {len(nightly)} runs")
    if args.drop:
        from django.db import connections

        connections.close_all()
        drop_database(db)


if __name__ == "__main__":
    main()
