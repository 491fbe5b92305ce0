"""Template rendering: renders per second per core, measured alone, and `render_batch` end to end.

    flock /tmp/bench.lock .venv/bin/python bench/bench_render.py              # about 3 minutes
    flock /tmp/bench.lock .venv/bin/python bench/bench_render.py --help

Target (issue 14): the pipeline renders 1,000,000 messages in <= 120 s on two worker processes, so about
10,000 renders/s per core for an email-sized template with ~10 variables (subject + HTML + text).

What it does:
1. alone (no database): compiles an email template (the demo's order_shipped.email shape: subject, HTML,
   text, 11 variables, a `default()`, an `if`) in the sandbox and renders it --renders times for
   contexts shaped as campaigns.services.personalisation builds them, one process, one core;
   prints renders/s (median of --runs) and the share of a cProfile run by function;
2. end to end (unless --no-db): creates a test database next to DATABASE_URL's (test_<name>, migrated,
   dropped afterwards), seeds --customers customers with loyalty accounts and metrics, queues one
   message per customer and times `render_batch` over batches of --batch messages: the sandbox plus
   the set-based contexts (customers, loyalty, metrics: five queries a batch), renders/s (median).
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
os.environ.setdefault("DJANGO_ENV", "test")

CONTENT = {
    "zh-hans": {
        "subject": "{{ customer.name | default('亲爱的会员') }}，您的订单 {{ data.order_id }} 已发货",
        "html": """<div style="font-family:sans-serif;max-width:560px">
<h1>{{ customer.name | default('亲爱的会员') }}，您好</h1>
<p>您在{{ customer.city }}的订单 {{ data.order_id }} 已由 {{ data.carrier }} 发出，运单号 {{ data.tracking_no }}。</p>
<p>当前积分 {{ loyalty.balance }}，会员等级 {{ loyalty.tier }}。</p>
{% if loyalty.expiring_points %}<p>{{ loyalty.expiring_points }} 积分将于 {{ loyalty.expiring_last_day }} 后过期。</p>{% endif %}
<p><a href="{{ links.site }}/member/orders/{{ data.order_id }}">查看订单</a></p>
<p style="color:#888;font-size:12px"><a href="{{ links.unsubscribe }}">退订</a></p>
</div>""",
        "text": """{{ customer.name | default('亲爱的会员') }}，您好
您的订单 {{ data.order_id }} 已由 {{ data.carrier }} 发出，运单号 {{ data.tracking_no }}。
当前积分 {{ loyalty.balance }}，等级 {{ loyalty.tier }}。
查看订单：{{ links.site }}/member/orders/{{ data.order_id }}
退订：{{ links.unsubscribe }}""",
    }
}


def parse_args():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--renders", type=int, default=50_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=1_000)
    parser.add_argument("--no-db", action="store_true")
    parser.add_argument("--profile", action="store_true", help="profile five batches of render_batch")
    return parser.parse_args()


def contexts(n: int) -> list[dict]:
    return [
        {
            "customer": {"id": i, "name": f"顾客{i}" if i % 7 else "", "city": "上海"},
            "loyalty": {"member": True, "balance": 1000 + i, "tier": "金卡 Gold", "expiring_points": i % 300,
                        "expiring_last_day": "2026-12-31"},
            "metrics": {},
            "recommendations": [],
            "data": {"order_id": f"TM{i:09d}", "carrier": "顺丰", "tracking_no": f"SF{i:012d}"},
            "links": {"site": "http://127.0.0.1:8000", "unsubscribe": "__UNSUBSCRIBE_URL__"},
            "today": "2026-12-07",
        }
        for i in range(n)
    ]  # fmt: skip


def alone(args) -> None:
    import django

    django.setup()
    from campaigns.rendering import content_render, version_compile

    compiled = version_compile(version_id=1, channel="email", content=CONTENT)
    ctxs = contexts(1000)
    rates, cpu_rates = [], []
    for _run in range(args.runs):
        started, cpu = time.perf_counter(), time.process_time()
        for i in range(args.renders):
            content_render(compiled, "zh-hans", ctxs[i % 1000])
        rates.append(args.renders / (time.perf_counter() - started))
        cpu_rates.append(args.renders / (time.process_time() - cpu))
    # Per core: renders per CPU second of this process, which a busy machine (other processes on the
    # two cores) does not inflate as it does the wall time.
    print(f"alone: {statistics.median(cpu_rates):,.0f} renders per CPU second (median of {args.runs}; runs: "
          f"{', '.join(f'{r:,.0f}' for r in cpu_rates)}); wall: {statistics.median(rates):,.0f}/s; "
          f"{args.renders:,} renders of subject+HTML+text each")  # fmt: skip
    profile = cProfile.Profile()
    profile.enable()
    for i in range(10_000):
        content_render(compiled, "zh-hans", ctxs[i % 1000])
    profile.disable()
    print("profile (10,000 renders, by own time):")
    pstats.Stats(profile).sort_stats("tottime").print_stats(8)


def end_to_end(args) -> None:
    from datetime import timedelta

    from django.db import connection
    from django.utils import timezone

    old_name = connection.settings_dict["NAME"]
    connection.settings_dict.setdefault("TEST", {})["NAME"] = "mo_bench_render"
    connection.creation.create_test_db(verbosity=0, autoclobber=True, keepdb=False)
    try:
        from campaigns.models import Message, MessageTemplate
        from campaigns.rendering import compiled_cache_clear, render_batch
        from campaigns.services.templates import template_save
        from crm.models import Customer, CustomerMetrics
        from loyalty.models import LoyaltyAccount, Tier

        now = timezone.now()
        tier = Tier.objects.create(code="gold", name="金卡 Gold", rank=1)
        customers = Customer.objects.bulk_create(
            [Customer(name=f"顾客{i}", city="上海", external_id=f"B{i:08d}") for i in range(args.customers)],
            batch_size=5000,
        )
        LoyaltyAccount.objects.bulk_create(
            [LoyaltyAccount(customer=c, tier=tier, available=1000) for c in customers], batch_size=5000
        )
        CustomerMetrics.objects.bulk_create(
            [
                CustomerMetrics(customer=c, as_of=now.date(), computed_at=now, stage_since=now.date())
                for c in customers
            ],
            batch_size=5000,
        )
        template = template_save(
            template=MessageTemplate(code="bench", name="bench", channel="email"), content=CONTENT
        ).template
        messages = Message.objects.bulk_create(
            [
                Message(customer=c, channel="email", source_kind="campaign", source_ref="bench", occurrence="1",
                        template=template, status="queued", due_at=now - timedelta(minutes=1),
                        data={"order_id": f"TM{c.pk}", "carrier": "顺丰", "tracking_no": f"SF{c.pk}"})
                for c in customers
            ],
            batch_size=5000,
        )  # fmt: skip
        compiled_cache_clear()
        batches = [messages[i : i + args.batch] for i in range(0, len(messages), args.batch)]
        rates, cpu_rates = [], []
        for _run in range(args.runs):
            started, cpu = time.perf_counter(), time.process_time()
            for batch in batches:
                results = render_batch(messages=batch, now=now)
                assert len(results) == len(batch) and not hasattr(results[0], "code"), results[0]
            rates.append(len(messages) / (time.perf_counter() - started))
            cpu_rates.append(len(messages) / (time.process_time() - cpu))
        # The CPU figure leaves out PostgreSQL's side (another process): the wall figure includes it.
        if args.profile:
            profile = cProfile.Profile()
            profile.enable()
            for batch in batches[:5]:
                render_batch(messages=batch, now=now)
            profile.disable()
            pstats.Stats(profile).sort_stats("cumtime").print_stats(25)
        print(f"render_batch: {statistics.median(rates):,.0f} messages/s wall, "
              f"{statistics.median(cpu_rates):,.0f} per CPU second of this process (median of {args.runs}; "
              f"wall runs: {', '.join(f'{r:,.0f}' for r in rates)}), {len(messages):,} messages in batches of "
              f"{args.batch}")  # fmt: skip
    finally:
        connection.creation.destroy_test_db(old_name, verbosity=0)


def main() -> int:
    args = parse_args()
    alone(args)
    if not args.no_db:
        end_to_end(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
