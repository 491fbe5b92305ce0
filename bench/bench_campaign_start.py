"""Benchmark: starting a campaign run over N customers (snapshot of a segment, exclusions, arm assignment,
recipients, outbox rows), and the progress endpoint while its messages send.

Builds a private PostgreSQL database `mo_bench_campaign` (created, migrated, dropped at the end unless
--keep) with N customers (all in 上海, a quarter in America/Los_Angeles), SMS consent for 95 %, a
segment "city = 上海" (all of them), an excluded segment (external ids starting with B7: 11 % at 1M), and a campaign
with two variants 50/50 and a 10 % holdout. Then it times:

1. `campaign_run_start` (the whole start: one lease UPDATE, then one transaction: the snapshot, the
   recipients by INSERT ... SELECT with md5 arms and the anti-join, the outbox rows by INSERT ... SELECT
   ON CONFLICT DO NOTHING, the counts' statement trigger), and a second start of the same run (nothing
   to do: it finds the run started);
2. the progress endpoint (the admin view, through Django's test client, logged in) polled --polls times
   while --workers processes drain the outbox into the in-process sink with the test stand-in stages
   (tests/campaigns/pipeline_doubles.py): median, p95 and max, and the same for the selector alone.

    DJANGO_ENV=test PGPORT=5504 flock /tmp/bench.lock .venv/bin/python bench/bench_campaign_start.py --customers 1000000
    DJANGO_ENV=test PGPORT=5504 .venv/bin/python bench/bench_campaign_start.py --customers 100000 --keep
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_loyalty_common import database_create as _database_create  # noqa: E402
from bench_loyalty_common import database_drop  # noqa: E402
from bench_loyalty_common import django_setup as _django_setup  # noqa: E402

DB_NAME = "mo_bench_campaign"


def database_create() -> None:
    _database_create(DB_NAME)


def django_setup() -> None:
    _django_setup(DB_NAME)
    from django.conf import settings

    settings.MESSAGING_PROVIDERS = {
        channel: {"BACKEND": "campaigns.providers.sink.SinkProvider", "OPTIONS": {}, "RATE": 0}
        for channel in ("email", "sms", "wechat", "push")
    }


def seed(n: int):
    from django.db import connection

    from campaigns.models import Campaign, CampaignVariant, MessageTemplate
    from crm.models import Segment

    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute(
            f"""INSERT INTO crm_customer (external_id, name, email, phone, gender, city, region, time_zone,
                  acquisition_channel, utm_source, utm_medium, utm_campaign, language, preferred_channel,
                  created_at, updated_at)
                SELECT 'B' || i, '会员' || i, 'm' || i || '@example.cn', '+86139' || lpad(i::text, 8, '0'), '',
                  '上海', '', CASE WHEN mod(i, 4) = 0 THEN 'America/Los_Angeles' ELSE 'Asia/Shanghai' END,
                  '', '', '', '', '', '', now(), now()
                FROM generate_series(1, {n}) i"""
        )
        cursor.execute(
            "INSERT INTO crm_consent (customer_id, channel, status, changed_at, source) "
            "SELECT id, 'sms', 'opted_in', now(), 'signup' FROM crm_customer WHERE mod(id, 20) <> 0"
        )
        cursor.execute("ANALYZE")
    segment = Segment.objects.create(
        name="上海",
        rule={"op": "and", "conditions": [{"field": "profile.city", "operator": "eq", "value": "上海"}]},
    )
    excluded = Segment.objects.create(
        name="B7开头",
        rule={
            "op": "and",
            "conditions": [{"field": "profile.external_id", "operator": "starts_with", "value": "B7"}],
        },
    )
    campaign = Campaign.objects.create(
        name="双11预热", channel="sms", segment=segment, holdout_percent=10, status="scheduled"
    )
    campaign.exclude_segments.add(excluded)
    for key in ("A", "B"):
        template = MessageTemplate.objects.create(code=f"bench-{key}", name=f"Bench {key}", channel="sms")
        CampaignVariant.objects.create(campaign=campaign, key=key, template=template, weight=50)
    print(f"seeded {n:,} customers in {time.perf_counter() - started:.1f}s", flush=True)
    return campaign


def worker(batch: int, seconds: float) -> None:
    django_setup()
    from tests.campaigns import pipeline_doubles

    pipeline_doubles.install()
    from campaigns.services.dispatch import dispatch_run

    dispatch_run(worker=f"bench-{os.getpid()}", limit_seconds=seconds, batch_size=batch)


def backend_cpu_seconds() -> float | None:
    """CPU seconds used so far by this connection's PostgreSQL backend (user + system), from /proc: the
    server runs on this machine. On a shared machine the wall time says how busy the others are; this
    says what the start itself costs."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        pid = cursor.fetchone()[0]
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _summary(name: str, times: list[float]) -> str:
    ms = sorted(t * 1000 for t in times)
    p95 = ms[int(len(ms) * 0.95) - 1] if len(ms) >= 20 else ms[-1]
    return f"{name}: median {statistics.median(ms):.1f} ms, p95 {p95:.1f} ms, max {ms[-1]:.1f} ms ({len(ms)} polls)"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--polls", type=int, default=100)
    parser.add_argument("--send-seconds", type=float, default=30.0, help="how long the workers send")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()

    database_create()
    django_setup()
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test import Client
    from django.urls import reverse
    from django.utils import timezone

    from campaigns.campaign_selectors import campaign_run_progress
    from campaigns.models import CampaignRun
    from campaigns.services.campaigns import campaign_run_start

    campaign = seed(args.customers)
    now = timezone.now()
    run = CampaignRun.objects.create(campaign=campaign, occurrence="once", due_at=now)
    print(f"machine load {os.getloadavg()[0]:.1f}", flush=True)
    cpu_before, process_before = backend_cpu_seconds(), time.process_time()
    started = time.perf_counter()
    result = campaign_run_start(run=run, now=now)
    elapsed = time.perf_counter() - started
    cpu_after, process_after = backend_cpu_seconds(), time.process_time()
    if cpu_before is not None and cpu_after is not None:
        print(
            f"start CPU: PostgreSQL backend {cpu_after - cpu_before:.2f}s, "
            f"this process {process_after - process_before:.2f}s; machine load {os.getloadavg()[0]:.1f}",
            flush=True,
        )
    run.refresh_from_db()
    print(
        f"start: {elapsed:.2f}s for an audience of {result.audience:,}: {run.audience_size:,} recipients "
        f"({run.holdout_size:,} holdout, {run.excluded_size:,} excluded), {result.enqueued:,} messages queued",
        flush=True,
    )
    started = time.perf_counter()
    again = campaign_run_start(run=run, now=now)
    print(f"  steps: {result.seconds}", flush=True)
    print(f"second start: {time.perf_counter() - started:.3f}s, started={again.started}", flush=True)
    connection.close()

    user = get_user_model().objects.create_superuser("bench", "bench@example.cn", "bench-pw-2026")
    client = Client()
    client.force_login(user)
    url = reverse("admin:campaigns_campaign_progress", args=[campaign.pk])
    ctx = multiprocessing.get_context("spawn")
    workers = [ctx.Process(target=worker, args=(args.batch, args.send_seconds)) for _ in range(args.workers)]
    for p in workers:
        p.start()
    # Poll only once the workers send (a spawned worker sets Django up first).
    deadline = time.monotonic() + 120
    while client.get(url).json()["done"] == 0 and time.monotonic() < deadline:
        time.sleep(0.5)
    view, selector, done = [], [], []
    for _ in range(args.polls):
        t0 = time.perf_counter()
        body = client.get(url).json()
        view.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        campaign_run_progress(CampaignRun.objects.select_related("campaign").get(pk=run.pk))
        selector.append(time.perf_counter() - t0)
        done.append(body["done"])
        time.sleep(0.1)
    print(f"while sending: {done[0]:,} to {done[-1]:,} of {body['total']:,} messages done during the polls")
    print(_summary("progress endpoint (view, logged in)", view), flush=True)
    print(_summary("progress selector alone", selector), flush=True)
    for p in workers:
        p.join()
    connection.close()
    if not args.keep:
        database_drop(DB_NAME)
    return 0


if __name__ == "__main__":
    sys.exit(main())
