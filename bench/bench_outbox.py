"""The outbox at scale: enqueue (rows/s) and dispatch end to end into the in-process sink (messages/s).

    flock /tmp/bench.lock env DJANGO_ENV=test .venv/bin/python bench/bench_outbox.py --messages 1000000

What it does:
1. creates the database `mo_bench_outbox` (DATABASE_URL's server), migrates it, writes --customers
   customers and one template with SQL;
2. enqueues --messages messages (customers x occurrences) through `messages_enqueue` in chunks of 200,000
   and prints rows/s; then enqueues the first chunk again (every key a replay) and prints that rate;
3. starts --workers processes, each running `dispatch_run` (claim, screen, render, hand, send, record,
   events) with batches of --batch into the in-process sink, until nothing is due; prints messages/s
   from the first claim to the last record.
The screen, render and event stages are the test stand-ins (tests/campaigns/pipeline_doubles.py: one
query for the batch's addresses, a format string, events into the crm log), not the real rules and
Jinja2 rendering: this measures the outbox's own cost. Drops the database unless --keep-db."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DB_NAME = "mo_bench_outbox"
sys.path.insert(0, str(ROOT))


def server_url() -> str:
    return os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")


def bench_url() -> str:
    parts = urllib.parse.urlsplit(server_url())
    return urllib.parse.urlunsplit(parts._replace(path=f"/{DB_NAME}"))


def admin(sql: str) -> None:
    import psycopg

    parts = urllib.parse.urlsplit(server_url())
    with psycopg.connect(urllib.parse.urlunsplit(parts._replace(path="/postgres")), autocommit=True) as conn:
        conn.execute(sql)


def django_setup() -> None:
    os.environ["DATABASE_URL"] = bench_url()
    os.environ.setdefault("DJANGO_ENV", "test")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    import django

    django.setup()
    from django.conf import settings

    settings.MESSAGING_PROVIDERS = {
        channel: {"BACKEND": "campaigns.providers.sink.SinkProvider", "OPTIONS": {}}
        for channel in ("email", "sms", "wechat", "push")
    }
    from tests.campaigns import pipeline_doubles

    pipeline_doubles.install()


def worker(batch: int) -> None:
    django_setup()
    from campaigns.providers.sink import SinkProvider
    from campaigns.services.dispatch import dispatch_run

    stats = dispatch_run(worker=f"bench-{os.getpid()}", limit_seconds=3600, batch_size=batch)
    print(
        f"worker {os.getpid()}: {stats.batches} batches, sent {stats.sent}, lost {stats.lost}, "
        f"sink deliveries {SinkProvider.deliveries}",
        flush=True,
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--keep-db", action="store_true")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.batch)
        return 0

    admin(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')
    admin(f'CREATE DATABASE "{DB_NAME}"')
    env = {**os.environ, "DATABASE_URL": bench_url(), "DJANGO_ENV": "test"}
    subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "migrate", "-v", "0"], cwd=ROOT, env=env, check=True
    )
    django_setup()
    from django.db import connection
    from django.utils import timezone

    from campaigns.models import Message, MessageTemplate
    from campaigns.services.outbox import MessageRequest, messages_enqueue
    from crm.models import Customer

    Customer.objects.bulk_create(
        [
            Customer(
                external_id=f"B{n}", name=f"member {n}", email=f"m{n}@example.cn", phone=f"+86138{n:08d}"
            )
            for n in range(args.customers)
        ],
        batch_size=5000,
    )
    template = MessageTemplate.objects.create(code="bench", name="Bench", channel="sms")
    customer_ids = list(connection.cursor().execute("SELECT id FROM crm_customer ORDER BY id").fetchall())
    customer_ids = [row[0] for row in customer_ids]
    per_customer = -(-args.messages // len(customer_ids))

    def requests():
        made = 0
        for occurrence in range(per_customer):
            for cid in customer_ids:
                if made >= args.messages:
                    return
                made += 1
                yield MessageRequest(
                    customer_id=cid,
                    channel="sms",
                    template_id=template.pk,
                    source_kind="campaign",
                    source_ref="bench",
                    occurrence=str(occurrence),
                    data={"name": "王芳", "n": made},
                )

    now = timezone.now()
    started = time.perf_counter()
    result = messages_enqueue(rows=requests(), now=now)
    seconds = time.perf_counter() - started
    print(
        f"enqueue: {result.created:,} rows in {seconds:.1f}s = {result.created / seconds:,.0f} rows/s",
        flush=True,
    )
    replay = [r for _, r in zip(range(200_000), requests(), strict=False)]
    started = time.perf_counter()
    again = messages_enqueue(rows=replay, now=now)
    seconds = time.perf_counter() - started
    print(
        f"enqueue replay: {len(again.existing_ids):,} existing in {seconds:.1f}s = "
        f"{len(replay) / seconds:,.0f} rows/s",
        flush=True,
    )
    connection.cursor().execute("VACUUM ANALYZE campaigns_message")

    started = time.perf_counter()
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "--worker", "--batch", str(args.batch)], cwd=ROOT, env=env
        )
        for _ in range(args.workers)
    ]
    for p in procs:
        p.wait()
    seconds = time.perf_counter() - started
    sent = Message.objects.filter(status="sent").count()
    first, last = (
        connection.cursor()
        .execute("SELECT min(handed_at), max(sent_at) FROM campaigns_message WHERE status = 'sent'")
        .fetchone()
    )
    print(
        f"dispatch: {sent:,} sent by {args.workers} workers in {seconds:.1f}s (processes started to ended) "
        f"= {sent / seconds:,.0f} messages/s",
        flush=True,
    )
    statuses = dict(
        connection.cursor().execute("SELECT status, count(*) FROM campaigns_message GROUP BY 1").fetchall()
    )
    events = (
        connection.cursor()
        .execute("SELECT count(*) FROM crm_event WHERE type = 'message_sent'")
        .fetchone()[0]
    )
    print(f"statuses {statuses}; message_sent events {events:,}", flush=True)
    if not args.keep_db:
        connection.close()
        admin(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')
    return 0 if sent == args.messages else 1


if __name__ == "__main__":
    sys.exit(main())
