"""Benchmark: the customer 360's "Messages" panel (campaigns.selectors.customer_messages) with 10^7 messages
in the outbox, and the delivery overview's figures over the same table.

Builds (once) a PostgreSQL database of 100,000 customers and 10,000,000 messages (generate_series; about
100 a customer, a mix of channels, statuses and reasons, created over the last 180 days) plus one heavy
customer with 20,000 messages, then times the selector: page 1 of a typical customer, page 1 and a deep
page (offset 1,000) of the heavy one, each for random customers, and prints medians and p90 (with the
plan of the panel's query, to show it reads the campaigns_message_customer index). Then it times the
delivery overview (campaigns.selectors.delivery_overview) and the admin home's message figures.

    DJANGO_ENV=test PGPORT=5508 .venv/bin/python bench/bench_messages_panel.py
    DJANGO_ENV=test PGPORT=5508 .venv/bin/python bench/bench_messages_panel.py --messages 1000000

The database (mo_bench_messages[_<scale>]) is created if missing on PGHOST/PGPORT/PGUSER (user postgres
on 127.0.0.1:5432 by default) and kept for later runs; `--rebuild` drops it first.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_admin_list import ensure_database, seed_sql  # noqa: E402

CUSTOMERS = 100_000
HEAVY_MESSAGES = 20_000


def messages_sql(n: int, customers: int) -> str:
    """One INSERT ... SELECT: message i goes to customer 1 + i % customers, created i * (180 days / n) ago
    from now back, so every customer's messages are spread over the whole period (the worst case for the
    panel: its rows are scattered over the heap, not adjacent)."""
    return f"""
    INSERT INTO campaigns_message (customer_id, channel, purpose, source_kind, source_ref, occurrence,
        source_label, payload_fingerprint, template_id, language, data, priority, on_cap, status, reason,
        reason_params, due_at, attempts, address, provider, provider_message_id, error_code, error_detail,
        subject, created_at, sent_at, finished_at, history)
    SELECT c, ch, CASE WHEN i % 5 = 0 THEN 'transactional' ELSE 'marketing' END,
        CASE WHEN i % 5 = 0 THEN 'notice' ELSE 'campaign' END,
        'bench-' || (i % 500), 'o' || i,
        CASE WHEN i % 5 = 0 THEN '积分到账' ELSE '双11大促 ' || (i % 500) END,
        '', (SELECT min(id) FROM campaigns_messagetemplate), 'zh-hans', '{{}}'::jsonb, (i % 3)::smallint,
        'defer', st,
        CASE st WHEN 'suppressed' THEN (ARRAY['no_consent', 'capped', 'lower_priority'])[1 + i % 3]
                WHEN 'deferred' THEN 'quiet_hours' WHEN 'failed' THEN 'provider_rejected' ELSE '' END,
        CASE st WHEN 'suppressed' THEN jsonb_build_object('channel', ch, 'limit', 2, 'period', 'day',
                    'than', '双11大促')
                WHEN 'deferred' THEN jsonb_build_object('until', '2026-12-08T00:00:00+00:00')
                WHEN 'failed' THEN jsonb_build_object('error', '43004 not subscribed')
                ELSE '{{}}'::jsonb END,
        at, 1, '', '', '', CASE st WHEN 'failed' THEN '43004' ELSE '' END, '', '', at,
        CASE WHEN st IN ('sent', 'delivered', 'opened', 'clicked') THEN at END,
        CASE WHEN st NOT IN ('queued', 'deferred') THEN at END,
        '[]'::jsonb
    FROM (
        SELECT i, 1 + i % {customers} AS c,
            (ARRAY['wechat', 'sms', 'email', 'push'])[1 + (i / 7) % 4] AS ch,
            (ARRAY['sent', 'delivered', 'delivered', 'opened', 'clicked', 'suppressed', 'suppressed',
                   'failed', 'deferred', 'queued'])[1 + (i / 3) % 10] AS st,
            now() - (i * (INTERVAL '180 days' / {n})) AS at
        FROM generate_series(1, {n}) AS i
    ) AS g
    """


def heavy_sql(customer_id: int, n: int) -> str:
    return f"""
    INSERT INTO campaigns_message (customer_id, channel, purpose, source_kind, source_ref, occurrence,
        source_label, payload_fingerprint, template_id, language, data, priority, on_cap, status, reason,
        reason_params, due_at, attempts, address, provider, provider_message_id, error_code, error_detail,
        subject, created_at, history)
    SELECT {customer_id}, 'sms', 'marketing', 'journey', 'heavy', 'h' || i, '生日旅程', '',
        (SELECT min(id) FROM campaigns_messagetemplate), 'zh-hans', '{{}}'::jsonb, 0, 'defer', 'suppressed',
        'capped', '{{"channel": "sms", "limit": 2, "period": "day"}}'::jsonb, now(), 0, '', '', '', '', '', '',
        now() - i * INTERVAL '13 minutes', '[]'::jsonb
    FROM generate_series(1, {n}) AS i
    """


def build(n: int) -> int:
    from django.core.management import call_command
    from django.db import connection

    from campaigns.models import Message, MessageTemplate
    from crm.models import Customer

    call_command("migrate", verbosity=0)
    heavy_id = CUSTOMERS + 1
    if Message.objects.filter(customer_id=heavy_id).exists():
        return heavy_id
    if Customer.objects.exists():
        raise SystemExit("database half built: run with --rebuild")
    started = time.perf_counter()
    with connection.cursor() as cursor:
        # bench_admin_list's customers, with the two columns messaging added (language, preferred channel).
        customers = seed_sql(CUSTOMERS + 1)[0]
        customers = customers.replace("erased_at)", "erased_at, language, preferred_channel)", 1)
        customers = customers.replace(
            "END\n        FROM generate_series", "END, '', ''\n        FROM generate_series"
        )
        cursor.execute(customers)
        MessageTemplate.objects.create(code="bench", name="Bench", channel="sms")
        # The outbox's indexes are dropped for the load and built after it (sorted builds instead of 10^7
        # random inserts into each): the same indexes the migrations made, by their own definitions.
        cursor.execute(
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conrelid = 'campaigns_message'::regclass AND contype = 'u'"
        )
        constraints = cursor.fetchall()
        for name, _definition in constraints:
            cursor.execute(f"ALTER TABLE campaigns_message DROP CONSTRAINT {name}")
        cursor.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'campaigns_message' "
            "AND indexname <> 'campaigns_message_pkey' AND indexdef NOT LIKE '%%_like %%'"
        )
        indexes = cursor.fetchall()
        for name, _definition in indexes:
            cursor.execute(f"DROP INDEX {name}")
        cursor.execute(messages_sql(n, CUSTOMERS))
        cursor.execute(heavy_sql(heavy_id, HEAVY_MESSAGES))
        cursor.execute("SET maintenance_work_mem = '1GB'")
        for _name, definition in indexes:
            cursor.execute(definition)
        for name, definition in constraints:
            cursor.execute(f"ALTER TABLE campaigns_message ADD CONSTRAINT {name} {definition}")
        cursor.execute("VACUUM ANALYZE campaigns_message")
    print(
        f"seeded {CUSTOMERS:,} customers and {n + HEAVY_MESSAGES:,} messages in "
        f"{time.perf_counter() - started:.0f} s",
        flush=True,
    )
    return heavy_id


def timed(fn, runs: int) -> tuple[float, float]:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.9) - 1]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=10_000_000)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--rebuild", action="store_true")
    args = parser.parse_args()
    db = "mo_bench_messages" if args.messages == 10_000_000 else f"mo_bench_messages_{args.messages}"
    os.environ["DATABASE_URL"] = ensure_database(db, args.rebuild)
    os.environ.setdefault("DJANGO_ENV", "test")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from django.utils import timezone

    from campaigns.selectors import customer_messages, delivery_overview, messages_home_figures

    heavy = build(args.messages)
    rng = random.Random(20261207)
    tz = "Asia/Shanghai"

    def panel(customer_id, offset=0):
        return customer_messages(customer_id=customer_id, limit=10, offset=offset, time_zone=tz)

    panel(1)  # warm the connection
    with CaptureQueriesContext(connection) as queries:
        page = panel(heavy, 1000)
    sql = queries.captured_queries[-1]["sql"]
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql)
        plan = "\n".join(row[0] for row in cursor.fetchall())
    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(
        f"messages in the table: about {args.messages + HEAVY_MESSAGES:,}; rows on a page: {len(page.rows)}"
    )
    print(f"queries a panel: {len(queries.captured_queries)}\n{plan}\n")
    workloads = {
        "typical customer (~100 messages), page 1": lambda: panel(rng.randint(1, CUSTOMERS)),
        "typical customer, page 5": lambda: panel(rng.randint(1, CUSTOMERS), 40),
        f"heavy customer ({HEAVY_MESSAGES:,} messages), page 1": lambda: panel(heavy),
        "heavy customer, offset 1,000": lambda: panel(heavy, 1000),
    }
    for name, fn in workloads.items():
        median, p90 = timed(fn, args.runs)
        print(f"{name:48s} median {median:7.2f} ms   p90 {p90:7.2f} ms")
    now = timezone.now()
    median, p90 = timed(lambda: delivery_overview(now=now), 5)
    print(f"{'delivery overview (all figures)':48s} median {median:7.2f} ms   p90 {p90:7.2f} ms")
    median, p90 = timed(lambda: messages_home_figures(now=now), 5)
    print(f"{'home: sent today, queued':48s} median {median:7.2f} ms   p90 {p90:7.2f} ms")


if __name__ == "__main__":
    main()
