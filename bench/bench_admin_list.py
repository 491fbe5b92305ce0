"""Benchmark: the customer admin list and its search at scale.

Builds (once) a PostgreSQL database holding N customers, each with an email and a phone identifier and
every second one a WeChat openid, then times the admin changelist through a logged-in Django test
client: the unfiltered list, a filtered list, and searches by name, email, phone and identifier. Prints
the median (and p90) of `--requests` requests per workload, with the median CPU time of the Django
process and the median time spent in SQL, so a figure taken on a busy machine can be read apart from
the contention.

    DJANGO_ENV=test .venv/bin/python bench/bench_admin_list.py --customers 1000000
    DJANGO_ENV=test .venv/bin/python bench/bench_admin_list.py --customers 100000   # db mo_bench_admin_100000

The database is created if missing (user postgres on 127.0.0.1:5432, or PGHOST/PGPORT/PGUSER) and
seeded with set-based SQL (generate_series; build time in BENCHMARKS.md, "How to run"); later runs reuse
it. `--rebuild` drops it first; `--existing --db NAME` times another database as it is.
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

SURNAMES = "王李张刘陈杨赵黄周吴徐孙胡朱高林何郭马罗梁宋郑谢韩唐冯于董萧"
GIVEN = [
    "芳", "娜", "伟", "洋", "静", "敏", "磊", "军", "勇", "艳", "杰", "娟", "涛", "明", "超", "秀英", "丽",
    "强", "平", "刚", "桂英", "华", "建华", "玉兰", "文", "晓明", "婷", "雪", "欣怡", "子涵", "梓萱", "浩然",
]  # fmt: skip
ENGLISH = ["Emily", "Grace", "Lucas", "Oliver", "Sophia", "Chloe", "Ethan", "Mia", "Leo", "Ivy"]
PINYIN = ["Wang", "Li", "Zhang", "Liu", "Chen", "Yang", "Zhao", "Huang", "Zhou", "Wu"]


def _sql_array(items) -> str:
    return "ARRAY[" + ",".join("'" + s.replace("'", "''") + "'" for s in items) + "]"


def seed_sql(n: int) -> list[str]:
    """Set-based seed: one INSERT ... SELECT per table. Names are Chinese (surname and one or two given
    names: 960 two-character names, ~30,000 in all) with one in ten written in English, so a two-character
    name matches several hundred customers at 1M; emails, phones and openids are unique and derived from
    the row number; one in 5,000 customers is erased."""
    surnames = _sql_array(list(SURNAMES))
    given = _sql_array(GIVEN)
    english = _sql_array(ENGLISH)
    pinyin = _sql_array(PINYIN)
    return [
        f"""
        INSERT INTO crm_customer (external_id, name, email, phone, birthday, gender, city, region, time_zone,
            acquisition_channel, utm_source, utm_medium, utm_campaign, created_at, updated_at, erased_at)
        SELECT 'C' || lpad(i::text, 8, '0'),
            CASE WHEN i % 10 = 0
                THEN ({english})[1 + (i / 10) % 10] || ' ' || ({pinyin})[1 + (i / 100) % 10]
                ELSE ({surnames})[1 + (i / 10) % 30] || ({given})[1 + (i / 300) % 32]
                     || CASE WHEN (i / 9600) % 3 = 0 THEN ({given})[1 + (i / 28800) % 32] ELSE '' END
            END,
            'user' || i || '@example.cn',
            '+86138' || lpad(i::text, 8, '0'),
            DATE '1970-01-01' + (i % 15000),
            (ARRAY['', 'female', 'male'])[1 + i % 3],
            (ARRAY['上海', '北京', '杭州', '深圳', '成都', '广州'])[1 + i % 6],
            '',
            'Asia/Shanghai',
            (ARRAY['wechat', 'tmall', 'jd', 'app', 'web', 'store'])[1 + i % 6],
            '', '', '',
            TIMESTAMPTZ '2024-01-01' + (i * INTERVAL '50 seconds'),
            now(),
            CASE WHEN i % 5000 = 0 THEN now() END
        FROM generate_series(1, {n}) AS i
        """,
        """
        INSERT INTO crm_customeridentity (customer_id, kind, value, source, created_at)
        SELECT id, 'email', email, 'bench', created_at FROM crm_customer
        UNION ALL
        SELECT id, 'phone', phone, 'bench', created_at FROM crm_customer
        UNION ALL
        SELECT id, 'wechat_openid', 'oWx' || md5(external_id), 'bench', created_at FROM crm_customer WHERE id % 2 = 0
        """,
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


def build(n: int) -> None:
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
        for statement in seed_sql(n):
            cursor.execute(statement)
    print(f"seeded {n:,} customers in {time.perf_counter() - started:.0f} s", flush=True)


def workloads(n: int, rng: random.Random) -> dict[str, callable]:
    def some_id() -> int:
        return rng.randint(1, n)

    def chinese_name() -> str:
        i = some_id()
        while i % 10 == 0:
            i = some_id()
        return SURNAMES[(i // 10) % 30] + GIVEN[(i // 300) % 32]

    return {
        "list (unfiltered, page 1)": lambda: "",
        "list page 50": lambda: "?p=50",
        "filter channel=wechat": lambda: "?acquisition_channel__exact=wechat",
        "search name (2 chars, prefix)": lambda: "?q=" + chinese_name(),
        "search name (3+ chars, substring)": lambda: "?q=" + rng.choice(ENGLISH) + " " + rng.choice(PINYIN),
        "search name (no match)": lambda: "?q=" + rng.choice(["不存在的人", "Nobody Here", "查无此人"]),
        "search email (exact)": lambda: f"?q=user{some_id()}@example.cn",
        "search email (prefix)": lambda: f"?q=user{some_id()}@",
        "search phone": lambda: f"?q=138{some_id():08d}",
        "search identifier (openid)": lambda: "?q=" + openid(2 * rng.randint(1, n // 2)),
    }


def openid(customer_number: int) -> str:
    import hashlib

    return "oWx" + hashlib.md5(f"C{customer_number:08d}".encode()).hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--db", default=None, help="database name (default mo_bench_admin[_<scale>])")
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--rebuild", action="store_true")
    parser.add_argument(
        "--existing",
        action="store_true",
        help="time an existing database (e.g. --db mo_bench_seed from seed_demo) as it is: no migrate, no seed; "
        "the search terms follow this script's own data, so there they mostly find nothing",
    )
    args = parser.parse_args()
    db = args.db or ("mo_bench_admin" if args.customers == 1_000_000 else f"mo_bench_admin_{args.customers}")

    os.environ["DATABASE_URL"] = ensure_database(db, args.rebuild and not args.existing)
    os.environ.setdefault("DJANGO_ENV", "test")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.db import connection, reset_queries
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    if args.existing:
        from crm.models import Customer

        args.customers = Customer.objects.count()
    else:
        build(args.customers)
    user, _ = get_user_model().objects.get_or_create(
        username="bench-admin", defaults={"is_staff": True, "is_superuser": True}
    )
    client = Client()
    client.force_login(user)
    rng = random.Random(20261123)
    url = "/admin/crm/customer/"
    client.get(url)  # warm up: first request imports templates and opens the connection

    print(
        f"customer admin changelist, {args.customers:,} customers, {args.requests} requests each; "
        f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )
    print(f"{'workload':36} {'median ms':>9} {'p90 ms':>7} {'app cpu':>8} {'sql ms':>7} {'queries':>7}")
    for name, make_query in workloads(args.customers, rng).items():
        walls, cpus, sqls = [], [], []
        queries = 0
        for _ in range(args.requests):
            query = make_query()
            reset_queries()
            with CaptureQueriesContext(connection) as captured:
                started, cpu_started = time.perf_counter(), time.process_time()
                response = client.get(url + query)
                walls.append((time.perf_counter() - started) * 1000)
                cpus.append((time.process_time() - cpu_started) * 1000)
            if response.status_code != 200:
                raise SystemExit(f"{name}: {url + query} answered {response.status_code}")
            queries = len(captured)
            sqls.append(sum(float(q["time"]) for q in captured.captured_queries) * 1000)
        walls.sort()
        p90 = walls[max(0, int(len(walls) * 0.9) - 1)]
        print(
            f"{name:36} {statistics.median(walls):9.1f} {p90:7.1f} {statistics.median(cpus):8.1f} "
            f"{statistics.median(sqls):7.1f} {queries:7d}",
            flush=True,
        )
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    print("median/p90: wall time of the whole request through the test client (Python and PostgreSQL);")
    print("app cpu: CPU time of this process (Django); sql ms: wall time inside the queries.")


if __name__ == "__main__":
    main()
