"""The time-trigger dispatcher's pass at scale (journeys/services/time_triggers.py).

    flock /tmp/bench.lock env DJANGO_ENV=test .venv/bin/python bench/bench_time_triggers.py --customers 200000

What it does:
1. creates the database `mo_bench_time_triggers` (DATABASE_URL's server), migrates it, writes --customers
   customers (birthdays spread over the year, zones Asia/Shanghai 80 %, America/New_York 10 %,
   Europe/London 10 %) and --carts add_to_cart events two hours and a bit ago, half of them followed by
   an order_placed within the two hours;
2. publishes four journeys: a birthday at 09:00, a calendar date (双十一 -3 days at 20:00), a cart
   abandonment (add_to_cart not followed by order_placed within 2 h) and, as the idle case, a second
   birthday journey whose local time has not come;
3. times `time_triggers_dispatch` at chosen instants: the birthday pass (09:00 in Shanghai: about
   customers × 0.8 / 365 enter), the calendar pass (every Shanghai customer enters at once), the cart
   pass, and an idle pass (nothing due); each figure is the median of --repeat passes, each on a fresh
   journey state so every pass does the whole work (entries are deleted between repeats).
Drops the database unless --keep-db."""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import urllib.parse
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DB_NAME = "mo_bench_time_triggers"
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


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--customers", type=int, default=200_000)
    parser.add_argument("--carts", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--keep-db", action="store_true")
    args = parser.parse_args()

    admin(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')
    admin(f'CREATE DATABASE "{DB_NAME}"')
    env = {**os.environ, "DATABASE_URL": bench_url(), "DJANGO_ENV": "test", "LOG_LEVEL": "WARNING"}
    subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "migrate", "-v", "0"], cwd=ROOT, env=env, check=True
    )
    django_setup()
    from django.db import connection

    from campaigns.models import CalendarDate
    from crm.models import Customer
    from crm.services.event_log import NewEvent, events_append
    from journeys.models import Enrollment, TimeTriggerState
    from journeys.services.journeys import journey_create, journey_publish
    from journeys.services.time_triggers import time_triggers_dispatch

    published_at = datetime(2027, 1, 1, tzinfo=UTC)
    zones = [
        "America/New_York" if n % 10 == 1 else "Europe/London" if n % 10 == 2 else "Asia/Shanghai"
        for n in range(10)
    ]
    Customer.objects.bulk_create(
        [
            Customer(
                external_id=f"T{n}",
                name=f"member {n}",
                birthday=date(1990, 1, 1) + timedelta(days=n % 365),
                time_zone=zones[n % 10],
                created_at=published_at - timedelta(days=400),
            )
            for n in range(args.customers)
        ],
        batch_size=5000,
    )
    ids = [
        row[0] for row in connection.cursor().execute("SELECT id FROM crm_customer ORDER BY id").fetchall()
    ]
    cart_at = datetime(2027, 3, 10, 4, 0, tzinfo=UTC)
    events = []
    for i, customer_id in enumerate(ids[: args.carts]):
        events.append(
            NewEvent(
                type="add_to_cart",
                customer_id=customer_id,
                occurred_at=cart_at,
                properties={"channel": "wechat_miniprogram"},
            )
        )
        if i % 2:
            events.append(
                NewEvent(
                    type="order_placed", customer_id=customer_id, occurred_at=cart_at + timedelta(minutes=50)
                )
            )
    events_append(events=events, now=cart_at + timedelta(hours=1))
    CalendarDate.objects.create(
        code="double11",
        year=2027,
        date=date(2027, 11, 11),
        name_zh="双十一",
        name_en="Double 11",
        kind="shopping",
    )
    connection.cursor().execute("VACUUM ANALYZE")

    def journey(name, trigger):
        graph = {
            "schema": 1,
            "nodes": [
                {
                    "id": "entry",
                    "type": "entry",
                    "config": {"trigger": trigger},
                    "position": {"x": 0, "y": 0},
                },
                {"id": "x", "type": "exit", "config": {}, "position": {"x": 1, "y": 0}},
            ],
            "edges": [{"id": "e", "source": "entry", "source_handle": "next", "target": "x"}],
        }
        j = journey_create(
            name=name, graph=graph, settings={"re_entry": {"mode": "always"}}, now=published_at
        )
        return journey_publish(journey=j, now=published_at)

    journey("birthday", {"kind": "date_attribute", "attribute": "birthday", "local_time": "09:00"})
    journey("idle birthday", {"kind": "date_attribute", "attribute": "birthday", "local_time": "23:00"})
    journey("double11", {"kind": "calendar", "code": "double11", "offset_days": -3, "local_time": "20:00"})
    journey(
        "cart",
        {
            "kind": "event_not_followed",
            "event_type": "add_to_cart",
            "filters": [{"property": "channel", "op": "eq", "value": "wechat_miniprogram"}],
            "not_followed_by": "order_placed",
            "within": {"value": 2, "unit": "hours"},
        },
    )

    def timed(label: str, moment: datetime) -> None:
        seconds, entered = [], 0
        for _ in range(args.repeat):
            Enrollment.objects.all().delete()
            # Just before the moment, so each pass covers the same window and does the whole work.
            TimeTriggerState.objects.update(checked_until=moment - timedelta(minutes=1))
            began = time.perf_counter()
            stats = time_triggers_dispatch(now=moment)
            seconds.append(time.perf_counter() - began)
            entered = stats.entered
        print(
            f"{label}: median {statistics.median(seconds):.3f} s over {args.repeat} passes, {entered} entered"
        )

    print(f"customers {args.customers}, carts {args.carts}")
    timed("birthday pass (09:00 Shanghai)", datetime(2027, 6, 15, 1, 0, 30, tzinfo=UTC))
    timed("idle pass (nothing due)", datetime(2027, 6, 15, 5, 0, 30, tzinfo=UTC))
    timed("calendar pass (every Shanghai customer)", datetime(2027, 11, 8, 12, 0, 30, tzinfo=UTC))
    timed("cart pass (add_to_cart not followed in 2 h)", cart_at + timedelta(hours=2, minutes=1))
    connection.close()
    if not args.keep_db:
        admin(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')
    return 0


if __name__ == "__main__":
    sys.exit(main())
