"""The whole pipeline with its real stages: N queued marketing emails dispatched end to end into the sink.

    flock /tmp/bench.lock env DJANGO_ENV=test PGPORT=5502 .venv/bin/python bench/bench_dispatch.py --messages 1000000
    ... bench/bench_dispatch.py --messages 100000 --profile     # cProfile of each worker, summarised

What it does:
1. creates the database `mo_bench_dispatch` (bench_loyalty_common: DATABASE_URL's or PGPORT's server),
   migrates it (the default frequency caps: 2 marketing messages a day, 5 a week), and seeds with SQL
   --messages customers (98 % in Asia/Shanghai, 2 % in America/Los_Angeles, where BENCH_NOW is in quiet
   hours), email consent for 97 %, 0.5 % of addresses on the suppression list, a marketing email sent
   yesterday to one customer in five (the caps have something to count), a loyalty account each, and the
   email template of bench_render.py (subject, HTML, text, 11 variables, two links) saved as a version;
2. enqueues one email a customer through `messages_enqueue` (one call, chunks of 200,000) and prints
   rows/s;
3. starts --workers processes, each running `dispatch_run` with batches of --batch and the REAL stages:
   rules screen (consent, suppression, address, caps with priority, quiet hours in the customer's zone),
   Jinja2 sandbox render with the set-based contexts, tracked content (click links, pixel, unsubscribe
   link and headers), the in-process sink provider, record (status, history) and a `message_sent` event
   in the crm event log for each; prints messages/s from the processes' start to their end, and checks
   that every message was decided once: sent + deferred + suppressed = N, one event per sent message,
   one sink delivery per sent message.
The clock is frozen at BENCH_NOW for the screen and the records (15:00 in Shanghai), so the figures do not
depend on the hour the bench runs. Drops the database unless --keep-db.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_loyalty_common import (  # noqa: E402
    accounts_seed,
    cluster_cpu_seconds,
    database_create,
    database_drop,
    django_setup,
    sql,
)
from bench_render import CONTENT  # noqa: E402

DB_NAME = "mo_bench_dispatch"
BENCH_NOW = datetime(2026, 12, 9, 7, 0, tzinfo=UTC)
PROFILE_DIR = Path("/tmp")


def setup() -> None:
    django_setup(DB_NAME)
    from django.conf import settings

    settings.MESSAGING_PROVIDERS = {
        channel: {"BACKEND": "campaigns.providers.sink.SinkProvider", "OPTIONS": {}}
        for channel in ("email", "sms", "wechat", "push")
    }


def seed(n: int) -> int:
    from campaigns.models import MessageTemplate
    from campaigns.services.templates import template_save
    from loyalty.models import Tier

    started = time.perf_counter()
    sql(
        """INSERT INTO crm_customer (external_id, name, email, phone, gender, city, region, time_zone,
              acquisition_channel, utm_source, utm_medium, utm_campaign, language, preferred_channel,
              created_at, updated_at)
           SELECT 'B' || i, CASE WHEN mod(i, 7) = 0 THEN '' ELSE '顾客' || i END, 'm' || i || '@example.cn',
              '139' || lpad(i::text, 8, '0'), '', '上海', '',
              CASE WHEN mod(i, 50) = 0 THEN 'America/Los_Angeles' ELSE 'Asia/Shanghai' END, '', '', '', '',
              'zh-hans', '', now(), now()
           FROM generate_series(1, %s) i""",
        [n],
    )
    sql(
        """INSERT INTO crm_consent (customer_id, channel, status, changed_at, source)
           SELECT id, 'email', 'opted_in', now(), 'signup' FROM crm_customer WHERE mod(id, 33) <> 0"""
    )
    sql(
        """INSERT INTO campaigns_suppression (channel, address, reason, detail, created_at)
           SELECT 'email', email, 'bounced', '', now() FROM crm_customer WHERE mod(id, 200) = 7"""
    )
    Tier.objects.create(code="gold", name="金卡 Gold", rank=0)
    accounts_seed()
    template = template_save(
        template=MessageTemplate(code="bench", name="bench", channel="email"), content=CONTENT
    ).template
    sql(
        """INSERT INTO campaigns_message (customer_id, channel, purpose, source_kind, source_ref, occurrence,
              source_label, payload_fingerprint, template_id, language, data, priority, on_cap, status, reason,
              reason_params, due_at, attempts, address, provider, provider_message_id, error_code,
              error_detail, subject, created_at, sent_at, history)
           SELECT id, 'email', 'marketing', 'campaign', 'yesterday', '1', '昨日活动', '', %s, 'zh-hans', '{}', 0,
              'defer', 'sent', '', '{}', t, 1, email, 'sink', '', '', '', '', t, t, '[]'
           FROM crm_customer, LATERAL (SELECT %s::timestamptz - interval '20 hours' AS t) ts
           WHERE mod(id, 5) = 0""",
        [template.pk, BENCH_NOW],
    )
    sql("ANALYZE")
    print(f"seeded {n:,} customers in {time.perf_counter() - started:.1f}s", flush=True)
    return template.pk


def enqueue(template_id: int) -> int:
    from django.db import connection

    from campaigns.services.outbox import MessageRequest, messages_enqueue

    with connection.cursor() as cursor:
        cursor.execute("SELECT id FROM crm_customer ORDER BY id")
        ids = [row[0] for row in cursor.fetchall()]
    due = BENCH_NOW - timedelta(minutes=1)
    requests = [
        MessageRequest(
            customer_id=cid,
            channel="email",
            template_id=template_id,
            source_kind="campaign",
            source_ref="double11",
            occurrence="1",
            source_label="双11大促",
            priority=10,
            data={"order_id": f"TM{cid:09d}", "carrier": "顺丰", "tracking_no": f"SF{cid:012d}"},
            due_at=due,
        )
        for cid in ids
    ]
    server_before, cpu_before = cluster_cpu_seconds(), time.process_time()
    started = time.perf_counter()
    result = messages_enqueue(rows=requests, now=BENCH_NOW)
    seconds = time.perf_counter() - started
    python_cpu, backend_cpu = time.process_time() - cpu_before, cluster_cpu_seconds() - server_before
    # CPU seconds as well as wall: on the shared machine the wall time counts other processes' turns.
    print(
        f"enqueue: {result.created:,} rows in {seconds:.2f}s = {result.created / seconds:,.0f} rows/s "
        f"(load {os.getloadavg()[0]:.1f}); CPU: Python {python_cpu:.2f}s, PostgreSQL {backend_cpu:.2f}s = "
        f"{result.created / (python_cpu + backend_cpu):,.0f} rows per CPU second",
        flush=True,
    )
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE campaigns_message")
        # The claim's plan (its statement from messages_claim, without the UPDATE): the claim index alone.
        cursor.execute(
            "EXPLAIN SELECT id FROM campaigns_message WHERE status IN ('queued', 'deferred') AND due_at <= %s "
            "ORDER BY priority DESC, due_at LIMIT 1000 FOR UPDATE SKIP LOCKED",
            [BENCH_NOW],
        )
        print("claim plan:", " / ".join(row[0].strip() for row in cursor.fetchall()), flush=True)
    return result.created


def worker(batch: int, profile: bool) -> None:
    setup()
    from campaigns.providers.sink import SinkProvider
    from campaigns.services.dispatch import dispatch_run

    profiler = cProfile.Profile() if profile else None
    if profiler:
        profiler.enable()
    cpu_before = time.process_time()
    stats = dispatch_run(
        worker=f"bench-{os.getpid()}", now_fn=lambda: BENCH_NOW, limit_seconds=3600, batch_size=batch
    )
    python_cpu = time.process_time() - cpu_before
    if profiler:
        profiler.disable()
        profiler.dump_stats(str(PROFILE_DIR / f"msgperf_dispatch_{os.getpid()}.prof"))
    print(
        f"worker {os.getpid()}: {stats.batches} batches in {stats.seconds:.1f}s, claimed {stats.claimed}, "
        f"sent {stats.sent}, deferred {stats.deferred}, suppressed {stats.suppressed}, failed {stats.failed}, "
        f"released {stats.released}, lost {stats.lost}, sink deliveries {SinkProvider.deliveries}; "
        f"CPU: Python {python_cpu:.1f}s",
        flush=True,
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--keep-db", action="store_true")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.batch, args.profile)
        return 0

    database_create(DB_NAME)
    setup()
    from django.db import connection

    template_id = seed(args.messages)
    created = enqueue(template_id)
    connection.close()

    load_before = os.getloadavg()[0]
    command = [sys.executable, __file__, "--worker", "--batch", str(args.batch)]
    if args.profile:
        command.append("--profile")
    server_before, children_before = cluster_cpu_seconds(), os.times()
    started = time.perf_counter()
    procs = [subprocess.Popen(command) for _ in range(args.workers)]
    for p in procs:
        p.wait()
    seconds = time.perf_counter() - started
    children = os.times()
    workers_cpu = (children.children_user - children_before.children_user) + (
        children.children_system - children_before.children_system
    )
    server_cpu = cluster_cpu_seconds() - server_before
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT status, count(*) FROM campaigns_message WHERE source_ref = 'double11' GROUP BY 1 ORDER BY 1"
        )
        statuses = dict(cursor.fetchall())
        cursor.execute(
            "SELECT count(*), count(DISTINCT customer_id) FROM crm_event WHERE type = 'message_sent'"
        )
        events, event_customers = cursor.fetchone()
    sent = statuses.get("sent", 0)
    decided = sent + statuses.get("deferred", 0) + statuses.get("suppressed", 0)
    print(
        f"dispatch: {decided:,} messages decided ({sent:,} sent) by {args.workers} workers in {seconds:.1f}s "
        f"= {decided / seconds:,.0f} messages/s ({sent / seconds:,.0f} sent/s); load {load_before:.1f} before, "
        f"{os.getloadavg()[0]:.1f} after",
        flush=True,
    )
    print(
        f"statuses {statuses}; message_sent events {events:,} for {event_customers:,} customers", flush=True
    )
    print(
        f"CPU: workers {workers_cpu:.1f}s ({workers_cpu / decided * 1000:.3f} ms a message, start-up included), "
        f"PostgreSQL {server_cpu:.1f}s ({server_cpu / decided * 1000:.3f} ms a message): "
        f"{decided / (workers_cpu + server_cpu):,.0f} messages per CPU second",
        flush=True,
    )
    if args.profile:
        files = sorted(PROFILE_DIR.glob("msgperf_dispatch_*.prof"))
        stats = pstats.Stats(*[str(f) for f in files])
        stats.sort_stats("cumulative").print_stats(45)
        stats.sort_stats("tottime").print_stats(25)
        for f in files:
            f.unlink()
    ok = decided == created and events == sent == event_customers
    if not args.keep_db:
        database_drop(DB_NAME)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
