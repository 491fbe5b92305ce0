"""Benchmark: the delivery rules' screen (campaigns.services.rules.messages_screen) over 100,000 due messages.

Builds a private PostgreSQL database `mo_bench_rules` (created, migrated, dropped at the end unless --keep)
with N customers (3/4 in Asia/Shanghai, 1/4 in America/Los_Angeles), SMS and email consent for 95 % of
them, an openid for a third, 1 % of phone numbers on the suppression list, 5 marketing messages a
customer already sent over the last 10 days (so caps have something to count), and N due messages (a
quarter of customers get two, from colliding sources with different priorities; one in ten is
transactional). The caps are the defaults (2 a day, 5 a week across channels) plus 1 SMS a day.

Then it times, `--runs` times each (median, min, max): the whole batch in one call, and the same messages in
batches of `--batch` (the outbox's claim size), reading the Message rows (as the outbox does) outside the
timing. The decisions' actions and reasons are printed, and with --profile a cProfile of one whole-batch
screen (where the time goes).

    DJANGO_ENV=test PGPORT=5504 .venv/bin/python bench/bench_rules_screen.py
    DJANGO_ENV=test PGPORT=5504 .venv/bin/python bench/bench_rules_screen.py --messages 100000 --batch 1000 --profile
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import os
import pstats
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_loyalty_common import database_create, database_drop, django_setup  # noqa: E402

DB_NAME = "mo_bench_rules"
# 15:00 in Shanghai, 23:00 the day before in Los Angeles: LA customers are in quiet hours, Shanghai ones not.
BENCH_NOW = datetime(2026, 12, 9, 7, 0, tzinfo=UTC)


def seed(n: int) -> None:
    from django.db import connection

    from campaigns.models import FrequencyCap, MessageTemplate

    started = time.perf_counter()
    template = MessageTemplate.objects.create(code="bench", name="Bench", channel="sms")
    FrequencyCap.objects.get_or_create(channel="sms", period="day", defaults={"limit": 1})
    statements = [
        f"""INSERT INTO crm_customer (external_id, name, email, phone, gender, city, region, time_zone,
              acquisition_channel, utm_source, utm_medium, utm_campaign, language, preferred_channel,
              created_at, updated_at)
            SELECT 'B' || i, '会员' || i, 'm' || i || '@Example.cn', '139' || lpad(i::text, 8, '0'), '', '上海',
              '', CASE WHEN mod(i, 4) = 0 THEN 'America/Los_Angeles' ELSE 'Asia/Shanghai' END, '', '', '', '', '',
              '', now(), now()
            FROM generate_series(1, {n}) i""",
        """INSERT INTO crm_consent (customer_id, channel, status, changed_at, source)
            SELECT c.id, ch, 'opted_in', now(), 'signup' FROM crm_customer c, unnest(ARRAY['sms', 'email']) ch
            WHERE mod(c.id, 20) <> 0""",
        """INSERT INTO crm_customeridentity (customer_id, kind, value, source, created_at)
            SELECT id, 'wechat_openid', 'o' || lpad(id::text, 27, '0'), '', now() FROM crm_customer
            WHERE mod(id, 3) = 0""",
        """INSERT INTO crm_consent (customer_id, channel, status, changed_at, source)
            SELECT id, 'wechat', 'opted_in', now(), 'signup' FROM crm_customer WHERE mod(id, 3) = 0""",
        """INSERT INTO campaigns_suppression (channel, address, reason, detail, created_at)
            SELECT 'sms', '+86' || phone, 'bounced', '', now() FROM crm_customer WHERE mod(id, 100) = 7""",
        # 5 marketing messages a customer over the last 10 days, the last one 1-30 hours before BENCH_NOW.
        f"""INSERT INTO campaigns_message (customer_id, channel, purpose, source_kind, source_ref, occurrence,
              source_label, payload_fingerprint, template_id, language, data, priority, on_cap, status, reason,
              reason_params, due_at, attempts, address, provider, provider_message_id, error_code,
              error_detail, subject, created_at, sent_at, history)
            SELECT c.id, CASE WHEN mod(k, 2) = 0 THEN 'sms' ELSE 'email' END, 'marketing', 'campaign', 'old-' || k,
              '1', '旧活动', '', {template.pk}, 'zh-hans', '{{}}', 0, 'defer', 'sent', '', '{{}}',
              t, 1, '', '', '', '', '', '', t, t, '[]'
            FROM crm_customer c, generate_series(0, 4) k,
              LATERAL (SELECT %(now)s::timestamptz - make_interval(hours => (1 + mod(c.id, 30) + k * 48)::int) AS t) ts""",
        # The due batch: one message a customer, a second from another source for every fourth.
        f"""INSERT INTO campaigns_message (customer_id, channel, purpose, source_kind, source_ref, occurrence,
              source_label, payload_fingerprint, template_id, language, data, priority, on_cap, status, reason,
              reason_params, due_at, attempts, address, provider, provider_message_id, error_code,
              error_detail, subject, created_at, history)
            SELECT c.id, (ARRAY['sms', 'email', 'wechat'])[1 + mod(c.id, 3)],
              CASE WHEN mod(c.id, 10) = 0 THEN 'transactional' ELSE 'marketing' END,
              'campaign', 'double11', '1', '双11大促', '', {template.pk}, 'zh-hans', '{{}}', 10,
              CASE WHEN mod(c.id, 2) = 0 THEN 'drop' ELSE 'defer' END, 'queued', '', '{{}}',
              %(now)s, 0, '', '', '', '', '', '', %(now)s, '[]'
            FROM crm_customer c""",
        f"""INSERT INTO campaigns_message (customer_id, channel, purpose, source_kind, source_ref, occurrence,
              source_label, payload_fingerprint, template_id, language, data, priority, on_cap, status, reason,
              reason_params, due_at, attempts, address, provider, provider_message_id, error_code,
              error_detail, subject, created_at, history)
            SELECT c.id, 'email', 'marketing', 'journey', 'welcome', '1', '生命周期旅程', '', {template.pk},
              'zh-hans', '{{}}', 5, 'defer', 'queued', '', '{{}}', %(now)s, 0, '', '', '', '', '', '', %(now)s, '[]'
            FROM crm_customer c WHERE mod(c.id, 4) = 1""",
        "ANALYZE",
    ]
    with connection.cursor() as cursor:
        for statement in statements:
            cursor.execute(statement, {"now": BENCH_NOW} if "%(now)s" in statement else None)
    print(f"seeded {n:,} customers in {time.perf_counter() - started:.1f}s", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=100_000, help="customers (and about 1.25x messages)")
    parser.add_argument("--batch", type=int, default=1_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the database (and reuse it with --reuse)")
    parser.add_argument("--reuse", action="store_true")
    args = parser.parse_args()

    if not args.reuse:
        database_create(DB_NAME)
    django_setup(DB_NAME)
    from django.db import connection, reset_queries

    from campaigns.models import Message
    from campaigns.services.rules import messages_screen

    if not args.reuse:
        seed(args.messages)
    due = list(Message.objects.filter(status="queued").order_by("id"))
    print(f"{len(due):,} due messages, machine load {os.getloadavg()[0]:.1f}", flush=True)

    whole, batched = [], []
    decisions = []
    for _run in range(args.runs):
        reset_queries()
        started = time.perf_counter()
        decisions = messages_screen(messages=due, now=BENCH_NOW)
        whole.append(time.perf_counter() - started)
        started = time.perf_counter()
        for offset in range(0, len(due), args.batch):
            messages_screen(messages=due[offset : offset + args.batch], now=BENCH_NOW)
        batched.append(time.perf_counter() - started)
    connection.close()

    def line(name, times):
        median = statistics.median(times)
        rate = len(due) / median
        print(
            f"{name}: median {median:.2f}s ({rate:,.0f} messages/s), min {min(times):.2f}s, max {max(times):.2f}s",
            flush=True,
        )

    line(f"whole batch ({len(due):,} in one call)", whole)
    line(f"in batches of {args.batch:,}", batched)
    outcome = collections.Counter((d.action, d.reason) for d in decisions)
    for (action, reason), count in sorted(outcome.items(), key=lambda item: -item[1]):
        print(f"  {action:8} {reason or '-':22} {count:>8,}")

    if args.profile:
        profiler = cProfile.Profile()
        profiler.enable()
        messages_screen(messages=due, now=BENCH_NOW)
        profiler.disable()
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(18)

    if not args.keep:
        database_drop(DB_NAME)
    return 0


if __name__ == "__main__":
    sys.exit(main())
