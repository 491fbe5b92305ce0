"""Benchmark: order CSV import (`manage.py import_orders`, crm/services/imports/orders.py) on PostgreSQL.

Generates an order CSV of N rows (orders of 1 to 3 lines, so about 1.6 rows per order; one customer per
2.5 orders), then times, from empty order tables each repetition:

- first import, customers unknown: every order new, and every customer created (with its identity and
  history row) along the way;
- re-import of the same file: every order unchanged (the idempotency check on its own);
- import with customers known: orders, lines and events emptied, customers kept (customers imported
  first, the usual order of things).

Prints rows/s for each (median of --repeat runs) and the load average, since the machine is shared.

    DJANGO_ENV=test .venv/bin/python bench/bench_import_orders.py --rows 200000 2000000
    DJANGO_ENV=test .venv/bin/python bench/bench_import_orders.py --rows 200000 --repeat 1 --profile

The database (default mo_bench_import) is created if missing (user postgres on 127.0.0.1:5432, or
PGHOST/PGPORT/PGUSER) and dropped at the end unless --keep. The CSV goes to a temporary directory.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SKUS = [f"BENCH-{cat}-{n:02d}" for cat in ("BABY", "MAT", "BEAUTY", "SNACK") for n in range(15)]
CHANNELS = ["tmall", "jd", "wechat", "app", "web", "store"]


def pg_dsn(name: str) -> str:
    host = os.environ.get("PGHOST", "127.0.0.1")
    port = os.environ.get("PGPORT", "5432")
    user = os.environ.get("PGUSER", "postgres")
    return f"host={host} port={port} user={user} dbname={name}"


def recreate_database(name: str) -> str:
    import psycopg

    with psycopg.connect(pg_dsn("postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    host = os.environ.get("PGHOST", "127.0.0.1")
    port = os.environ.get("PGPORT", "5432")
    user = os.environ.get("PGUSER", "postgres")
    return f"postgres://{user}@{host}:{port}/{name}"


def drop_database(name: str) -> None:
    import psycopg

    with psycopg.connect(pg_dsn("postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def write_csv(path: Path, rows: int, seed: int = 20261123) -> int:
    """Write `rows` rows; returns the number of orders."""
    import numpy as np

    rng = np.random.default_rng(seed)
    lines_per_order = rng.choice([1, 2, 3], size=rows, p=[0.55, 0.3, 0.15])
    ends = np.cumsum(lines_per_order)
    orders = int(np.searchsorted(ends, rows) + 1)
    lines_per_order = lines_per_order[:orders]
    lines_per_order[-1] -= int(ends[orders - 1] - rows)
    customers = max(1, orders * 2 // 5)
    customer = rng.integers(0, customers, orders)
    now = int(time.time())
    placed = now - rng.integers(3600, 730 * 86400, orders)
    channel = rng.integers(0, len(CHANNELS), orders)
    amount = np.round(rng.lognormal(np.log(150), 0.8, orders), 2)
    sku = rng.integers(0, len(SKUS), rows)
    quantity = rng.choice([1, 1, 1, 2, 3], size=rows)
    stamps = np.datetime_as_string(
        (placed + 8 * 3600).astype("datetime64[s]"), unit="s"
    )  # Shanghai local time
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write("customer_external_id,order_external_id,ordered_at,amount,currency,channel,sku,quantity\n")
        row = 0
        out = []
        for o, n in enumerate(lines_per_order.tolist()):
            head = f"BC{customer[o]:08d},BO{o:09d},{stamps[o].replace('T', ' ')},{amount[o]:.2f},CNY,{CHANNELS[channel[o]]},"
            used = set()
            for _ in range(n):
                # An order's lines are of different SKUs: a row that repeats another of its order exactly
                # is refused as a duplicated row (docs/csv-import.md).
                pick = int(sku[row])
                while pick in used:
                    pick = (pick + 1) % len(SKUS)
                used.add(pick)
                out.append(f"{head}{SKUS[pick]},{quantity[row]}\n")
                row += 1
            if len(out) > 100_000:
                f.writelines(out)
                out = []
        f.writelines(out)
    return orders


def backend_cpu() -> float | None:
    """CPU seconds used so far by our PostgreSQL backend (same machine only): where the time goes."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        pid = cursor.fetchone()[0]
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().split()
    except OSError:
        return None
    return (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")


def timed_import(path: Path, profile: bool = False):
    from crm.services.imports import orders_import

    profiler = cProfile.Profile() if profile else None
    db_before, cpu_before = backend_cpu(), time.process_time()
    started = time.perf_counter()
    if profiler:
        profiler.enable()
    report = orders_import(source=path, source_label="bench")
    if profiler:
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
    wall = time.perf_counter() - started
    db_after = backend_cpu()
    db = None if db_before is None or db_after is None else db_after - db_before
    return wall, time.process_time() - cpu_before, db, report


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, nargs="+", default=[200_000, 2_000_000])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--db", default="mo_bench_import")
    parser.add_argument("--keep", action="store_true", help="keep the database after the last run")
    parser.add_argument("--profile", action="store_true", help="cProfile the first import of each size")
    args = parser.parse_args()

    os.environ["DATABASE_URL"] = recreate_database(args.db)
    os.environ.setdefault("DJANGO_ENV", "test")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    import logging

    from django.core.management import call_command
    from django.db import connection

    logging.disable(logging.INFO)
    call_command("migrate", verbosity=0)
    with tempfile.TemporaryDirectory(prefix="bench-import-") as tmp:
        for rows in args.rows:
            path = Path(tmp) / f"orders-{rows}.csv"
            started = time.perf_counter()
            orders = write_csv(path, rows)
            print(
                f"\n{rows:,} rows ({orders:,} orders, {path.stat().st_size / 1e6:.0f} MB) written in "
                f"{time.perf_counter() - started:.1f} s; {args.repeat} runs; load average "
                f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores",
                flush=True,
            )
            first, again, known = [], [], []
            for run in range(args.repeat):
                with connection.cursor() as cursor:
                    cursor.execute(
                        "TRUNCATE crm_event, crm_orderline, crm_refund, crm_order, crm_customeridentity, "
                        "crm_historicalcustomer, crm_product, crm_customer RESTART IDENTITY CASCADE"
                    )
                seconds, py, db, report = timed_import(path, profile=args.profile and run == 0)
                assert report.created == orders and report.error_count == 0, report.summary()
                first.append(seconds)
                print(
                    f"  run {run + 1}: first import    {seconds:6.1f} s ({rows / seconds:,.0f} rows/s; "
                    f"CPU: Python {py:.1f} s, PostgreSQL {db or 0:.1f} s); load {os.getloadavg()[0]:.1f}",
                    flush=True,
                )
                seconds, py, db, report = timed_import(path)
                assert report.unchanged == orders and report.created == 0, report.summary()
                again.append(seconds)
                print(
                    f"         re-import       {seconds:6.1f} s ({rows / seconds:,.0f} rows/s; "
                    f"CPU: Python {py:.1f} s, PostgreSQL {db or 0:.1f} s); load {os.getloadavg()[0]:.1f}",
                    flush=True,
                )
                with connection.cursor() as cursor:
                    cursor.execute("TRUNCATE crm_event, crm_orderline, crm_refund, crm_order CASCADE")
                seconds, py, db, report = timed_import(path)
                assert report.created == orders and report.customers_created == 0, report.summary()
                known.append(seconds)
                print(
                    f"         known customers {seconds:6.1f} s ({rows / seconds:,.0f} rows/s; "
                    f"CPU: Python {py:.1f} s, PostgreSQL {db or 0:.1f} s); load {os.getloadavg()[0]:.1f}",
                    flush=True,
                )
            print(
                f"  median: first import (customers unknown) {rows / statistics.median(first):,.0f} rows/s, "
                f"customers known {rows / statistics.median(known):,.0f} rows/s, "
                f"re-import (all unchanged) {rows / statistics.median(again):,.0f} rows/s",
                flush=True,
            )
    connection.close()
    if not args.keep:
        drop_database(args.db)


if __name__ == "__main__":
    main()
