"""Benchmark: `manage.py seed_demo` on PostgreSQL (crm/management/commands/seed_demo.py).

For each scale, creates a fresh database, migrates it (not timed), then times seed_demo with
--events-per-customer 10 (so N customers and 10 x N events, plus identities, consents, orders, lines,
refunds and tags), and a second run (which must find the data and do nothing). Prints the wall time, the
CPU of this process (generation) and of its PostgreSQL backend (COPY and index builds; the parallel
index-build workers are not counted), rows written per second, and the load average, since the machine
is shared.

    DJANGO_ENV=test .venv/bin/python bench/bench_seed_demo.py --customers 100000 1000000
    DJANGO_ENV=test .venv/bin/python bench/bench_seed_demo.py --customers 100000 --repeat 3

Databases: mo_bench_seed for 1,000,000 customers (kept afterwards: the admin-list benchmark reuses it),
mo_bench_seed_<N> for other scales (dropped after the run unless --keep). User postgres on
127.0.0.1:5432, or PGHOST/PGPORT/PGUSER.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TABLES = [
    "crm_customer",
    "crm_customeridentity",
    "crm_consent",
    "crm_consentchange",
    "crm_customertag",
    "crm_order",
    "crm_orderline",
    "crm_refund",
    "crm_event",
]


def dsn(name: str) -> str:
    host = os.environ.get("PGHOST", "127.0.0.1")
    port = os.environ.get("PGPORT", "5432")
    user = os.environ.get("PGUSER", "postgres")
    return f"host={host} port={port} user={user} dbname={name}"


def url(name: str) -> str:
    host = os.environ.get("PGHOST", "127.0.0.1")
    port = os.environ.get("PGPORT", "5432")
    user = os.environ.get("PGUSER", "postgres")
    return f"postgres://{user}@{host}:{port}/{name}"


def recreate(name: str) -> None:
    import psycopg

    with psycopg.connect(dsn("postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def drop(name: str) -> None:
    import psycopg

    with psycopg.connect(dsn("postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def backend_cpu(connection) -> float:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        pid = cursor.fetchone()[0]
    fields = Path(f"/proc/{pid}/stat").read_text().split()
    return (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")


def run_once(name: str, customers: int, events: int) -> dict:
    """Seed a fresh database `name` in a child process (each scale needs its own DATABASE_URL)."""
    import subprocess

    recreate(name)
    env = {**os.environ, "DATABASE_URL": url(name), "DJANGO_ENV": os.environ.get("DJANGO_ENV", "test")}
    child = subprocess.run(
        [sys.executable, __file__, "--child", str(customers), str(events)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    if child.returncode:
        raise SystemExit(f"seed failed:\n{child.stdout}\n{child.stderr}")
    result = {}
    for line in child.stdout.splitlines():
        if line.startswith("RESULT "):
            key, value = line[7:].split("=", 1)
            result[key] = value
        else:
            print("    " + line, flush=True)
    return result


def child(customers: int, events: int) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    import logging

    from django.core.management import call_command
    from django.db import connection

    logging.disable(logging.INFO)
    call_command("migrate", verbosity=0)
    load_before = os.getloadavg()[0]
    db_before, cpu_before = backend_cpu(connection), time.process_time()
    started = time.perf_counter()
    out = io.StringIO()
    call_command(
        "seed_demo", customers=customers, events_per_customer=events, seed=2026, stdout=out, verbosity=1
    )
    wall = time.perf_counter() - started
    db_cpu = backend_cpu(connection) - db_before
    py_cpu = time.process_time() - cpu_before
    for line in out.getvalue().splitlines():
        print(line)
    with connection.cursor() as cursor:
        rows = 0
        for table in TABLES:
            cursor.execute(f"SELECT count(*) FROM {table}")
            rows += cursor.fetchone()[0]
    started = time.perf_counter()
    again = io.StringIO()
    call_command("seed_demo", customers=customers, stdout=again)
    second = time.perf_counter() - started
    assert "Already seeded" in again.getvalue(), again.getvalue()
    for key, value in {
        "wall": wall,
        "python_cpu": py_cpu,
        "db_cpu": db_cpu,
        "rows": rows,
        "second": second,
        "load_before": load_before,
        "load_after": os.getloadavg()[0],
    }.items():
        print(f"RESULT {key}={value}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--customers", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--events-per-customer", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--keep", action="store_true", help="keep the databases of every scale")
    parser.add_argument("--child", nargs=2, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return

    for customers in args.customers:
        name = "mo_bench_seed" if customers == 1_000_000 else f"mo_bench_seed_{customers}"
        print(
            f"\nseed_demo --customers {customers:,} --events-per-customer {args.events_per_customer} "
            f"into {name}; {args.repeat} run(s) on {os.cpu_count()} cores",
            flush=True,
        )
        walls = []
        for run in range(args.repeat):
            result = run_once(name, customers, args.events_per_customer)
            wall = float(result["wall"])
            walls.append(wall)
            rows = int(result["rows"])
            print(
                f"  run {run + 1}: {wall:6.1f} s for {rows:,} rows ({rows / wall:,.0f} rows/s); CPU: "
                f"Python {float(result['python_cpu']):.0f} s, PostgreSQL backend {float(result['db_cpu']):.0f} s; "
                f"second run {float(result['second']):.2f} s (nothing to do); load average "
                f"{float(result['load_before']):.1f} before, {float(result['load_after']):.1f} after",
                flush=True,
            )
        print(f"  median: {statistics.median(walls):.1f} s", flush=True)
        if customers != 1_000_000 and not args.keep:
            drop(name)


if __name__ == "__main__":
    main()
