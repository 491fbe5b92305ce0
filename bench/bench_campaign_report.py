"""Benchmark: the report of a 1,000,000-recipient campaign run with 3 arms (campaigns.reports.
campaign_run_report), target <= 1 s.

Builds (once) a PostgreSQL database with N customers (1,000,000 by default), a campaign with variants A and
B and a 10 % holdout, one run whose N recipients are split A 45 % / B 45 % / holdout 10 %, one outbox
message per treated recipient (a mix of statuses: sent, delivered, opened, clicked, failed, suppressed),
3 orders a customer spread over the year before and the weeks after the send (so about one customer in
ten converts within the 7-day window) and an `unsubscribed` event for one treated recipient in 500. Then
times the report (a warm-up, then --runs runs, each a fresh call) and prints the median, the spread and
the plan of the statement.

    DJANGO_ENV=test PGPORT=5505 .venv/bin/python bench/bench_campaign_report.py
    DJANGO_ENV=test PGPORT=5505 .venv/bin/python bench/bench_campaign_report.py --customers 100000

The database (mo_bench_campaign_report[_<scale>]) is created if missing on PGHOST/PGPORT/PGUSER and kept
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

SEND = "2026-11-11 02:00:00+00"


def customers_sql(n: int) -> str:
    return f"""
    INSERT INTO crm_customer (external_id, name, email, phone, birthday, gender, city, region, time_zone,
        acquisition_channel, utm_source, utm_medium, utm_campaign, language, preferred_channel, created_at,
        updated_at)
    SELECT 'C' || lpad(i::text, 8, '0'), '顾客' || i, 'user' || i || '@example.cn',
        '+86138' || lpad(i::text, 8, '0'), NULL, '', '上海', '', 'Asia/Shanghai', 'wechat', '', '', '', '', '',
        TIMESTAMPTZ '2024-01-01' + (i * INTERVAL '50 seconds'), now()
    FROM generate_series(1, {n}) AS i
    """


def recipients_sql(run_id: int) -> str:
    # The start assigns arms by a hash; a modulus gives the same shares, deterministically.
    return f"""
    INSERT INTO campaigns_campaignrecipient (run_id, customer_id, arm, phase, enqueued)
    SELECT {run_id}, id,
        CASE WHEN id % 20 < 2 THEN 'holdout' WHEN id % 20 < 11 THEN 'A' ELSE 'B' END, 'all',
        id % 20 >= 2
    FROM crm_customer
    """


def messages_sql(campaign_id: int, run_id: int, template_id: int) -> str:
    return f"""
    INSERT INTO campaigns_message (customer_id, channel, purpose, source_kind, source_ref, occurrence,
        source_label, payload_fingerprint, template_id, language, data, priority, on_cap, status, reason,
        reason_params, due_at, attempts, address, provider, provider_message_id, error_code, error_detail,
        subject, created_at, sent_at, delivered_at, opened_at, clicked_at, finished_at, history)
    SELECT r.customer_id, 'email', 'marketing', 'campaign', '{campaign_id}', '{run_id}', 'bench', '',
        {template_id}, 'zh-hans', '{{}}'::jsonb, 50, 'defer', st, '', '{{}}'::jsonb,
        TIMESTAMPTZ '{SEND}', 1, '', '', '', '', '', '', TIMESTAMPTZ '{SEND}',
        CASE WHEN st IN ('sent', 'delivered', 'opened', 'clicked', 'failed') THEN TIMESTAMPTZ '{SEND}' END,
        CASE WHEN st IN ('delivered', 'opened', 'clicked') THEN TIMESTAMPTZ '{SEND}' + INTERVAL '1 minute' END,
        CASE WHEN st IN ('opened', 'clicked') THEN TIMESTAMPTZ '{SEND}' + INTERVAL '1 hour' END,
        CASE WHEN st = 'clicked' THEN TIMESTAMPTZ '{SEND}' + INTERVAL '2 hours' END,
        TIMESTAMPTZ '{SEND}', '[]'::jsonb
    FROM (
        SELECT customer_id,
            (ARRAY['delivered', 'delivered', 'opened', 'opened', 'clicked', 'sent', 'failed', 'suppressed',
                   'delivered', 'opened'])[1 + (customer_id / 20) % 10] AS st
        FROM campaigns_campaignrecipient WHERE run_id = {run_id} AND arm <> 'holdout'
    ) AS r
    """


def orders_sql(n: int) -> str:
    # 3 orders a customer: two over the year before the send, one in the 60 days around it; B's customers
    # (id % 20 >= 11) order a little more often in the window, so the intervals have something to show.
    return f"""
    INSERT INTO crm_order (external_id, customer_id, channel, store, placed_at, currency, total,
        refunded_amount, status, fingerprint, created_at)
    SELECT 'O' || c || '-' || k, c, 'tmall', '',
        CASE WHEN k < 2 THEN TIMESTAMPTZ '{SEND}' - ((1 + (c * 7 + k * 13) % 365) * INTERVAL '1 day')
             WHEN (c * 31) % 100 < CASE WHEN c % 20 >= 11 THEN 14 ELSE 11 END
                 THEN TIMESTAMPTZ '{SEND}' + (((c * 17) % 600) * INTERVAL '15 minutes')
             ELSE TIMESTAMPTZ '{SEND}' + ((8 + (c * 3) % 50) * INTERVAL '1 day') END,
        'CNY', (50 + (c * 11 + k) % 450)::numeric(14, 2), 0, 'paid', md5(c || '-' || k), now()
    FROM generate_series(1, {n}) AS c, generate_series(0, 2) AS k
    """


def unsubscribes_sql(campaign_id: int) -> str:
    return f"""
    INSERT INTO crm_event (customer_id, type, properties, occurred_at, channel, external_id, received_at)
    SELECT m.customer_id, 'unsubscribed',
        jsonb_build_object('message_id', m.id, 'channel', 'email', 'source_kind', 'campaign',
                           'campaign_id', '{campaign_id}'),
        TIMESTAMPTZ '{SEND}' + INTERVAL '3 hours', 'email', 'campaigns:unsubscribed:' || m.id, now()
    FROM campaigns_message m
    WHERE m.source_kind = 'campaign' AND m.source_ref = '{campaign_id}' AND m.customer_id % 500 = 3
    """


def build(n: int):
    import datetime as dt

    from django.core.management import call_command
    from django.db import connection

    from campaigns.models import Campaign, CampaignRun, CampaignVariant, MessageTemplate
    from crm.models import Customer

    call_command("migrate", verbosity=0)
    run = CampaignRun.objects.filter(campaign__name="bench report").first()
    if run is not None:
        return run
    if Customer.objects.exists():
        raise SystemExit("database holds customers but no bench campaign: run with --rebuild")
    started = time.perf_counter()
    template = MessageTemplate.objects.filter(code="bench_report").first()
    if template is None:
        from tests.campaigns.helpers import template_make

        template = template_make(code="bench_report", channel="email")
    campaign = Campaign.objects.create(name="bench report", channel="email", holdout_percent=10)
    for key in ("A", "B"):
        CampaignVariant.objects.create(campaign=campaign, key=key, template=template, weight=50)
    run = CampaignRun.objects.create(
        campaign=campaign,
        occurrence="once",
        due_at=dt.datetime.fromisoformat(SEND.replace(" ", "T").replace("+00", "+00:00")),
        status="sent",
        started_at=dt.datetime.fromisoformat(SEND.replace(" ", "T").replace("+00", "+00:00")),
        audience_size=n,
    )
    with connection.cursor() as cursor:
        for label, statement in (
            ("customers", customers_sql(n)),
            ("recipients", recipients_sql(run.pk)),
            ("messages", messages_sql(campaign.pk, run.pk, template.pk)),
            ("orders", orders_sql(n)),
            ("unsubscribes", unsubscribes_sql(campaign.pk)),
        ):
            t = time.perf_counter()
            cursor.execute(statement)
            print(f"  {label}: {cursor.rowcount:,} rows in {time.perf_counter() - t:.1f} s", flush=True)
    print(f"built in {time.perf_counter() - started:.0f} s", flush=True)
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--rebuild", action="store_true")
    args = parser.parse_args()
    name = "mo_bench_campaign_report" + ("" if args.customers == 1_000_000 else f"_{args.customers}")
    os.environ["DATABASE_URL"] = ensure_database(name, args.rebuild)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from django.db import connection

    from campaigns.reports import _SQL, _tables, campaign_run_report

    run = build(args.customers)
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")
    campaign_run_report(run)  # warm-up: the cache holds what a report read a minute ago would hold
    times = []
    for _ in range(args.runs):
        t = time.perf_counter()
        report = campaign_run_report(run)
        times.append(time.perf_counter() - t)
    from django.utils import timezone

    from campaigns.services.reports import campaign_run_report_refresh, campaign_run_report_stored

    campaign_run_report_refresh(run=run, now=timezone.now())
    reads = []
    for _ in range(20):
        t = time.perf_counter()
        stored, _row = campaign_run_report_stored(run)
        reads.append(time.perf_counter() - t)
    assert stored.arms == report.arms
    for arm in report.arms:
        print(
            f"  {arm.key:8} {arm.phase:4} recipients {arm.recipients:>9,} sent {arm.sent:>9,} "
            f"opened {arm.opened:>9,} converted {arm.converted:>8,} revenue {arm.revenue:>14,}"
        )
    for c in report.comparisons:
        print(f"  {c.metric:12} {c.arm} - {c.against}: {c.estimate:+.5f} [{c.low:+.5f}, {c.high:+.5f}]")
    print(
        f"report of {args.customers:,} recipients x {len(report.arms)} arms: median "
        f"{statistics.median(times) * 1000:.0f} ms (min {min(times) * 1000:.0f}, max {max(times) * 1000:.0f},"
        f" {args.runs} runs)",
        flush=True,
    )
    print(
        f"stored report read (what the page shows): median {statistics.median(reads) * 1000:.1f} ms "
        f"(max {max(reads) * 1000:.1f}, 20 reads)",
        flush=True,
    )
    if os.environ.get("BENCH_EXPLAIN"):
        from campaigns.reports import report_params

        params = report_params(run)
        with connection.cursor() as cursor:
            cursor.execute("SET work_mem = '128MB'")
            cursor.execute("SET jit = off")
            cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + _SQL.format(**_tables()), params)
            print("\n".join(row[0] for row in cursor.fetchall()))


if __name__ == "__main__":
    main()
