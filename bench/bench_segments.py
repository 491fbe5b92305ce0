"""Benchmark: segment counts, the builder's preview and snapshots at scale.

Builds (once) a PostgreSQL database `mo_bench_segments` with N customers, 3N orders (about 1.3 lines
each), 10N behaviour events, consents, identities, tags and one metrics row per customer, all with
set-based SQL (generate_series), then times:

- five-condition segment counts: on profile, consent, tags and metrics only; with an order aggregate
  over a window; with a behaviour-event condition over the raw event log (with a property filter); with
  a "did not" anti-join; and a nested OR group;
- the builder's preview (count + 10-member sample);
- a snapshot of a ~100,000-member segment (INSERT ... SELECT), deleted again after each run.

Counts go through `segment_count`, the selector the admin uses (which turns PostgreSQL's JIT off for
the query). Each workload runs once to warm the cache, then `--runs` times; the median, min and max are
printed.
`--explain` prints EXPLAIN (ANALYZE, BUFFERS) of each count, to see where the time goes.

    flock /tmp/bench.lock env DJANGO_ENV=test .venv/bin/python bench/bench_segments.py --customers 1000000
    flock /tmp/bench.lock env DJANGO_ENV=test .venv/bin/python bench/bench_segments.py --customers 20000 --db mo_bench_segments_small

A 1,000,000-customer build takes about 15 minutes on the 2-core machine; later runs reuse it.
`--rebuild` drops it first. bench_dashboards.py uses the same database.
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

# The data describe two years up to this moment; rules with "last N days" windows are evaluated at it.
BENCH_NOW = "2026-11-23 00:00:00+00"
PRODUCTS = 500
CATEGORIES = [
    "baby",
    "maternity",
    "beauty",
    "formula",
    "diapers",
    "toys",
    "food",
    "health",
    "clothes",
    "home",
]
CAMPAIGNS = ["double11", "618", "spring", "newyear", "cny", "summer", "members_day", "launch"]
SOURCES = ["baidu", "wechat_ads", "douyin", "xiaohongshu", "email", "sms"]


def _arr(items) -> str:
    return "ARRAY[" + ",".join("'" + s + "'" for s in items) + "]"


def seed_sql(n: int) -> list[tuple[str, str]]:
    """(label, statement) pairs building the data set for n customers. Customer ids are 1..n (fresh
    database); a customer signs up at a time that grows with the id over the two years, and every order
    and event of theirs happens after that."""
    created = f"(TIMESTAMPTZ '2024-11-23' + ({{id}}::float8 / {n}) * INTERVAL '730 days')"
    now = f"TIMESTAMPTZ '{BENCH_NOW}'"

    def after_signup(id_expr: str, fraction: str = "random()") -> str:
        c = created.format(id=id_expr)
        return f"({c} + {fraction} * ({now} - {c}))"

    categories = _arr(CATEGORIES)
    sources = _arr(SOURCES)
    campaigns = _arr(CAMPAIGNS)
    return [
        ("seed", "SELECT setseed(0.20261123)"),
        (
            "customers",
            f"""
            INSERT INTO crm_customer (id, external_id, name, email, phone, birthday, gender, city, region, time_zone,
                acquisition_channel, utm_source, utm_medium, utm_campaign, created_at, updated_at, erased_at)
            SELECT i, 'C' || lpad(i::text, 8, '0'), 'Customer ' || i, 'user' || i || '@example.cn',
                '+86138' || lpad(i::text, 8, '0'), DATE '1970-01-01' + (i::bigint * 7919 % 15000)::int,
                (ARRAY['', 'female', 'male'])[1 + i % 3],
                (ARRAY['上海', '北京', '杭州', '深圳', '成都', '广州'])[1 + (i * 31) % 6], '', 'Asia/Shanghai',
                (ARRAY['wechat', 'tmall', 'jd', 'app', 'web', 'store'])[1 + (i * 17) % 6],
                CASE WHEN i % 4 = 0 THEN ({sources})[1 + i % 6] ELSE '' END, '',
                CASE WHEN i % 4 = 0 THEN ({campaigns})[1 + i % 8] ELSE '' END,
                {created.format(id="i")}, now(), CASE WHEN i % 5000 = 0 THEN now() END
            FROM generate_series(1, {n}) AS i
            """,
        ),
        (
            "identities",
            """
            INSERT INTO crm_customeridentity (customer_id, kind, value, source, created_at)
            SELECT id, 'email', email, 'bench', created_at FROM crm_customer
            UNION ALL
            SELECT id, 'wechat_openid', 'oWx' || md5(external_id), 'bench', created_at FROM crm_customer WHERE id % 2 = 0
            """,
        ),
        (
            "consents",
            f"""
            INSERT INTO crm_consent (customer_id, channel, status, changed_at, source)
            SELECT id, 'email', CASE WHEN r < 0.6 THEN 'opted_in' ELSE 'opted_out' END, {now}, 'bench'
            FROM (SELECT id, random() AS r FROM crm_customer) t WHERE r < 0.7
            UNION ALL
            SELECT id, 'sms', CASE WHEN r < 0.5 THEN 'opted_in' ELSE 'opted_out' END, {now}, 'bench'
            FROM (SELECT id, random() AS r FROM crm_customer) t WHERE r < 0.65
            """,
        ),
        (
            "tags",
            """
            INSERT INTO crm_tag (id, name, kind, description, created_at)
            SELECT t, 'tag' || t, 'manual', '', now() FROM generate_series(1, 20) t
            """,
        ),
        (
            "customer tags",
            """
            INSERT INTO crm_customertag (customer_id, tag_id, source, added_at)
            SELECT id, 1 + (id * 7) % 20, 'bench', now() FROM crm_customer WHERE random() < 0.8
            UNION ALL
            SELECT id, 1 + (id * 13 + 5) % 20, 'bench', now() FROM crm_customer WHERE random() < 0.7
            """,
        ),
        (
            "products",
            f"""
            INSERT INTO crm_product (id, sku, name, category, price, currency, created_at)
            SELECT p, 'SKU-' || lpad(p::text, 5, '0'), 'Product ' || p, ({categories})[1 + p % 10],
                round((20 + (p * 37) % 480)::numeric, 2), 'CNY', now()
            FROM generate_series(1, {PRODUCTS}) p
            """,
        ),
        (
            "orders",
            # 60% of customers buy (ids 1, 2, 3 mod 5), about five orders each, after signing up.
            f"""
            INSERT INTO crm_order (external_id, customer_id, channel, store, placed_at, currency, total,
                refunded_amount, status, fingerprint, created_at)
            SELECT 'O' || j, cid, (ARRAY['wechat', 'tmall', 'jd', 'app', 'web', 'store'])[1 + j % 6], '',
                {after_signup("cid")}, 'CNY', total,
                CASE WHEN r < 0.03 THEN total WHEN r < 0.06 THEN round(total * 0.3, 2) ELSE 0 END,
                CASE WHEN r < 0.03 THEN 'refunded' WHEN r < 0.06 THEN 'partially_refunded' ELSE 'paid' END,
                repeat('0', 64), now()
            FROM (
                SELECT j, LEAST({n}, 5 * floor(random() * {n // 5})::int + 1 + floor(random() * 3)::int) AS cid,
                    round((20 + random() * 500)::numeric, 2) AS total, random() AS r
                FROM generate_series(1, {3 * n}) j
            ) o
            """,
        ),
        (
            "order lines",
            # Customers buy around a "home" range of products, so bought-together pairs exist.
            f"""
            INSERT INTO crm_orderline (order_id, line_no, product_id, sku, name, category, quantity, unit_price,
                line_total, refunded_quantity)
            SELECT o.id, l, pid, 'SKU-' || lpad(pid::text, 5, '0'), 'Product ' || pid, ({categories})[1 + pid % 10],
                1 + o.id % 3, round(o.total / (1 + o.id % 3), 2), o.total,
                CASE WHEN o.status = 'refunded' THEN 1 + o.id % 3 ELSE 0 END
            FROM crm_order o
            CROSS JOIN LATERAL generate_series(1, 1 + (o.id % 3 = 0)::int) l
            CROSS JOIN LATERAL (
                SELECT 1 + ((o.customer_id % 50) * 10 + floor(power(random() + l * 0, 2) * 40)::int) % {PRODUCTS} AS pid
            ) p
            """,
        ),
        (
            "events: order_placed",
            """
            INSERT INTO crm_event (customer_id, type, properties, occurred_at, channel, received_at)
            SELECT customer_id, 'order_placed',
                jsonb_build_object('order_external_id', external_id, 'total', total), placed_at, channel, placed_at
            FROM crm_order
            """,
        ),
        (
            "events: page_view",
            f"""
            INSERT INTO crm_event (customer_id, type, properties, occurred_at, channel, received_at)
            SELECT cid, 'page_view',
                CASE WHEN r < 0.25 THEN jsonb_build_object('path', '/', 'utm_source', ({sources})[1 + (cid + j) % 6],
                                                         'utm_campaign', ({campaigns})[1 + (cid * 3 + j) % 8])
                     ELSE jsonb_build_object('path', '/p/' || (j % 500)) END,
                {after_signup("cid", "r2")}, 'web', now()
            FROM (SELECT j, 1 + floor(random() * {n})::int AS cid, random() AS r, random() AS r2
                  FROM generate_series(1, {35 * n // 10}) j) e
            """,
        ),
        (
            "events: product_view",
            f"""
            INSERT INTO crm_event (customer_id, type, properties, occurred_at, channel, received_at)
            SELECT cid, 'product_view',
                jsonb_build_object('sku', 'SKU-' || lpad(pid::text, 5, '0'), 'category', ({categories})[1 + pid % 10],
                                   'price', 20 + (pid * 37) % 480),
                {after_signup("cid", "r2")}, 'app', now()
            FROM (SELECT 1 + floor(random() * {n})::int AS cid, 1 + floor(random() * {PRODUCTS})::int AS pid,
                         random() AS r2
                  FROM generate_series(1, {2 * n}) j) e
            """,
        ),
        (
            "events: add_to_cart",
            f"""
            INSERT INTO crm_event (customer_id, type, properties, occurred_at, channel, received_at)
            SELECT customer_id, 'add_to_cart', properties || jsonb_build_object('qty', 1 + id % 3),
                occurred_at + INTERVAL '4 minutes', channel, now()
            FROM crm_event WHERE type = 'product_view' AND random() < 0.45 AND occurred_at < {now} - INTERVAL '4 minutes'
            """,
        ),
        (
            "events: checkout_started",
            f"""
            INSERT INTO crm_event (customer_id, type, properties, occurred_at, channel, received_at)
            SELECT customer_id, 'checkout_started', properties, occurred_at + INTERVAL '3 minutes', channel, now()
            FROM crm_event WHERE type = 'add_to_cart' AND random() < 0.45 AND occurred_at < {now} - INTERVAL '3 minutes'
            """,
        ),
        (
            "metrics",
            f"""
            WITH agg AS (
                SELECT customer_id, COUNT(*) AS n, SUM(total - refunded_amount) AS spend,
                       MIN(placed_at) AS first_at, MAX(placed_at) AS last_at
                FROM crm_order WHERE status <> 'refunded' GROUP BY customer_id
            ),
            scored AS (
                SELECT c.id, a.n, a.spend, a.first_at, a.last_at,
                       EXTRACT(day FROM {now} - a.last_at)::int AS days,
                       CASE WHEN a.n IS NULL THEN NULL ELSE ntile(5) OVER (PARTITION BY a.n IS NULL ORDER BY a.last_at) END AS r,
                       CASE WHEN a.n IS NULL THEN NULL ELSE ntile(5) OVER (PARTITION BY a.n IS NULL ORDER BY a.n, c.id) END AS f,
                       CASE WHEN a.n IS NULL THEN NULL ELSE ntile(5) OVER (PARTITION BY a.n IS NULL ORDER BY a.spend) END AS m
                FROM crm_customer c LEFT JOIN agg a ON a.customer_id = c.id
            )
            INSERT INTO crm_customermetrics (customer_id, as_of, computed_at, order_count, first_order_date,
                last_order_date, total_value, average_order_value, purchase_cycle_days, days_since_last_order,
                frequency, recency_days, tenure_days, monetary_value, r_score, f_score, m_score, rfm_segment,
                lifecycle_stage, stage_since, p_alive, expected_purchases_90d, predicted_clv_365d,
                expected_next_purchase_date, churn_risk, value_tier, sleeping_high_value)
            SELECT id, DATE '2026-11-22', {now}, COALESCE(n, 0), first_at::date, last_at::date, COALESCE(spend, 0),
                round(spend / n, 2), CASE WHEN n > 1 THEN EXTRACT(day FROM last_at - first_at) / (n - 1) END, days,
                GREATEST(COALESCE(n, 0) - 1, 0), COALESCE(EXTRACT(day FROM last_at - first_at)::int, 0),
                COALESCE(EXTRACT(day FROM {now} - first_at)::int, 0), COALESCE(round(spend / n, 2), 0),
                r, f, m,
                CASE WHEN n IS NULL THEN '' WHEN r >= 4 AND f >= 4 THEN 'champions' WHEN r >= 3 AND f >= 3 THEN 'loyal'
                     WHEN r >= 4 THEN 'promising' WHEN r = 3 THEN 'need_attention' WHEN f >= 4 THEN 'cant_lose'
                     WHEN r = 2 THEN 'at_risk' ELSE 'hibernating' END,
                CASE WHEN n IS NULL THEN 'prospect' WHEN first_at > {now} - INTERVAL '30 days' THEN 'new'
                     WHEN days <= 90 THEN 'active' WHEN days <= 180 THEN 'at_risk' WHEN days <= 365 THEN 'dormant'
                     ELSE 'churned' END,
                COALESCE(last_at::date, DATE '2026-01-01'),
                CASE WHEN n IS NULL THEN NULL ELSE exp(-days / 200.0) END,
                CASE WHEN n IS NULL THEN NULL ELSE round((exp(-days / 200.0) * n / 8.0)::numeric, 3)::float8 END,
                CASE WHEN n IS NULL THEN NULL ELSE round(exp(-days / 200.0)::numeric * n / 2.0 * spend / n, 2) END,
                CASE WHEN n IS NULL THEN NULL ELSE last_at::date + 60 END,
                CASE WHEN n IS NULL THEN NULL ELSE 1 - exp(-days / 200.0) END,
                CASE WHEN n IS NULL THEN 'none' WHEN m = 5 THEN 'high' WHEN m >= 3 THEN 'medium' ELSE 'low' END,
                n IS NOT NULL AND m = 5 AND days > 180
            FROM scored
            """,
        ),
        (
            "events: lifecycle_stage_changed",
            # Every month of the last year, a share of customers moved between stages.
            f"""
            INSERT INTO crm_event (customer_id, type, properties, occurred_at, channel, received_at)
            SELECT 1 + floor(random() * {n})::int, 'lifecycle_stage_changed',
                jsonb_build_object('from', (ARRAY['prospect', 'new', 'active', 'at_risk', 'dormant'])[1 + k % 5],
                                   'to', (ARRAY['new', 'active', 'at_risk', 'dormant', 'churned'])[1 + k % 5],
                                   'as_of', to_char(d, 'YYYY-MM-DD')),
                d + INTERVAL '1 day', '', now()
            FROM (SELECT k, DATE '2025-11-23' + (random() * 364)::int AS d FROM generate_series(1, {n // 5}) k) t
            """,
        ),
        (
            "sequences",
            # Ids above were given explicitly (the formulas refer to them); move the sequences past them.
            """
            SELECT setval(pg_get_serial_sequence('crm_customer', 'id'), (SELECT MAX(id) FROM crm_customer));
            SELECT setval(pg_get_serial_sequence('crm_tag', 'id'), (SELECT MAX(id) FROM crm_tag));
            SELECT setval(pg_get_serial_sequence('crm_product', 'id'), (SELECT MAX(id) FROM crm_product))
            """,
        ),
        (
            "metrics run",
            """
            INSERT INTO crm_metricsrun (as_of, started_at, finished_at, status, message, customers, buyers,
                repeat_buyers, stage_changes, timings)
            VALUES (DATE '2025-11-22', now(), now(), 'done', 'bench seed', 0, 0, 0, 0, '{}')
            """,
        ),
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


def setup_django(db: str, rebuild: bool) -> None:
    os.environ["DATABASE_URL"] = ensure_database(db, rebuild)
    os.environ.setdefault("DJANGO_ENV", "test")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()


def build(n: int) -> None:
    from django.core.management import call_command
    from django.db import connection

    from crm.models import Customer, CustomerMetrics

    call_command("migrate", verbosity=0)
    have = Customer.objects.count()
    if have == n and CustomerMetrics.objects.exists():
        return
    if have:
        raise SystemExit(
            f"database holds {have} customers (or an unfinished build), not {n}: run with --rebuild"
        )
    total = time.perf_counter()
    with connection.cursor() as cursor:
        for label, statement in seed_sql(n):
            started = time.perf_counter()
            cursor.execute(statement)
            print(f"  {label:34} {time.perf_counter() - started:7.1f} s", flush=True)
    started = time.perf_counter()
    old = connection.connection.autocommit
    connection.connection.autocommit = True
    with connection.connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")  # statistics, and visibility maps for index-only scans
    connection.connection.autocommit = old
    print(f"  {'vacuum analyze':34} {time.perf_counter() - started:7.1f} s", flush=True)
    print(f"built {n:,} customers in {time.perf_counter() - total:.0f} s", flush=True)


def bench_now():
    from datetime import datetime

    return datetime.fromisoformat(BENCH_NOW.replace("+00", "+00:00"))


def rules() -> dict[str, dict]:
    def c(field, operator, value=None, **params):
        out = {"field": field, "operator": operator, **params}
        if value is not None:
            out["value"] = value
        return out

    last = lambda days: {"kind": "last_days", "days": days}  # noqa: E731
    return {
        "5 conditions: profile, consent, tag, 2 metrics": {
            "op": "and",
            "conditions": [
                c("profile.city", "in", ["上海", "北京"]),
                c("consent.status", "opted_in", channel="sms"),
                c("tags.tagged", "has_any", [3]),
                c("metrics.lifecycle_stage", "in", ["active", "at_risk"]),
                c("metrics.predicted_clv_365d", "gte", 100),
            ],
        },
        "5 conditions incl. orders count in 90 days": {
            "op": "and",
            "conditions": [
                c("profile.city", "in", ["上海", "北京", "杭州"]),
                c("consent.status", "opted_in", channel="email"),
                c("tags.tagged", "has_none", [5]),
                c("metrics.rfm_segment", "in", ["champions", "loyal", "promising"]),
                c("orders.count", "gte", 2, window=last(90)),
            ],
        },
        "5 conditions incl. raw events (add_to_cart x2 in 365 d, property)": {
            "op": "and",
            "conditions": [
                c("profile.acquisition_channel", "in", ["tmall", "jd"]),
                c("consent.status", "opted_in", channel="sms"),
                c("metrics.value_tier", "in", ["high", "medium"]),
                c(
                    "events.performed",
                    "at_least",
                    2,
                    event_type="add_to_cart",
                    window=last(365),
                    properties=[
                        {"key": "category", "operator": "in", "value": ["baby", "formula", "diapers"]}
                    ],
                ),
                c("orders.last_order_at", "more_than_days_ago", 30),
            ],
        },
        "5 conditions incl. did-not event (page_view, 60 d)": {
            "op": "and",
            "conditions": [
                c("profile.city", "eq", "深圳"),
                c("consent.status", "opted_in", channel="email"),
                c("metrics.lifecycle_stage", "in", ["dormant", "at_risk"]),
                c("orders.total_spend", "gte", 1000),
                c("events.performed", "did_not", event_type="page_view", window=last(60)),
            ],
        },
        "nested OR: tag or spend 365 d or checkout 14 d": {
            "op": "and",
            "conditions": [
                c("profile.city", "in", ["上海", "杭州"]),
                c("consent.status", "opted_in", channel="sms"),
                {
                    "op": "or",
                    "conditions": [
                        c("tags.tagged", "has_any", [7]),
                        c("orders.total_spend", "gte", 1500, window=last(365)),
                        c("events.performed", "did", event_type="checkout_started", window=last(14)),
                    ],
                },
                c("metrics.p_alive", "gte", 0.3),
            ],
        },
    }


SNAPSHOT_RULE = {
    "op": "and",
    "conditions": [
        {"field": "profile.city", "operator": "eq", "value": "上海"},
        {"field": "consent.status", "operator": "opted_in", "channel": "email"},
    ],
}


def timed(fn, runs: int) -> tuple[list[float], object]:
    result = fn()  # warm-up
    timings = []
    for _ in range(runs):
        started = time.perf_counter()
        result = fn()
        timings.append((time.perf_counter() - started) * 1000)
    return timings, result


def report(name: str, timings: list[float], extra: str = "") -> None:
    print(
        f"{name:62} {statistics.median(timings):9.0f} {min(timings):7.0f} {max(timings):7.0f}  {extra}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--db", default="mo_bench_segments")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--rebuild", action="store_true")
    parser.add_argument("--build-only", action="store_true")
    parser.add_argument("--explain", action="store_true")
    args = parser.parse_args()
    setup_django(args.db, args.rebuild)
    build(args.customers)
    if args.build_only:
        return

    from django.db import connection

    from crm.models import Segment, SegmentSnapshot
    from crm.segments.compiler import rule_queryset
    from crm.segments.selectors import segment_count, segment_preview
    from crm.segments.services import segment_snapshot_create
    from crm.segments.sql import segment_query_settings

    now = bench_now()
    print(f"segments at {args.customers:,} customers; {args.runs} runs after a warm-up; times in ms")
    print(f"{'workload':62} {'median':>9} {'min':>7} {'max':>7}  members")
    for name, rule in rules().items():
        timings, count = timed(lambda rule=rule: segment_count(rule=rule, now=now), args.runs)
        report("count: " + name, timings, f"{count:,}")
        if args.explain:
            sql, params = rule_queryset(rule, now=now).order_by().values("id").query.sql_with_params()
            with segment_query_settings(), connection.cursor() as cursor:
                cursor.execute(f"EXPLAIN (ANALYZE, BUFFERS) SELECT COUNT(*) FROM ({sql}) q", params)
                print("\n".join("    " + row[0] for row in cursor.fetchall()))

    first = next(iter(rules().values()))
    timings, result = timed(lambda: segment_preview(rule=first, now=now), args.runs)
    report("preview (count + 10-member sample): first rule", timings, f"{result['count']:,}")

    segment, _ = Segment.objects.update_or_create(name="bench snapshot", defaults={"rule": SNAPSHOT_RULE})
    timings = []
    members = 0
    for i in range(args.runs + 1):
        started = time.perf_counter()
        snapshot = segment_snapshot_create(segment=segment, purpose="bench", now=now)
        elapsed = (time.perf_counter() - started) * 1000
        members = snapshot.member_count
        SegmentSnapshot.objects.filter(pk=snapshot.pk).delete()
        if i:  # the first run warms the cache
            timings.append(elapsed)
    report("snapshot (INSERT ... SELECT) of a segment", timings, f"{members:,}")


if __name__ == "__main__":
    main()
