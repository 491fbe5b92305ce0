"""HTTP bulk event ingestion: sustained events/s and request latency through gunicorn against PostgreSQL.

    .venv/bin/python bench/bench_event_ingestion.py            # defaults below; about 5 minutes
    .venv/bin/python bench/bench_event_ingestion.py --help

What it does:
1. creates the database `mo_bench_ingest` on the server of DATABASE_URL (default: postgres on
   127.0.0.1:5432, user postgres), migrates it, and seeds --customers customers (each with an
   external_id identity) and --base-events events;
2. creates an API key with events:write and starts the app under gunicorn (DJANGO_ENV=production);
3. --clients client processes, each with one keep-alive http.client connection, POST bodies of --batch
   events for --duration seconds after a short warm-up. Bodies are built before the clock starts, so the
   clients spend their CPU on HTTP only. Of the events, --new-share carry an app device id nobody has
   (each creates a prospect); the rest name a seeded customer by external_id;
4. prints accepted events/s and p50/p99 request latency, and the CPU time the server spent in the
   measured window (gunicorn workers plus the PostgreSQL backends serving them, read from /proc) per
   1,000 events, with the rate two otherwise idle cores would sustain at that cost, and how many cores
   the server, the clients and every other process of the machine kept busy meanwhile: on a shared
   machine the measured rate depends on what else runs, the CPU cost much less so; then grows the event
   table to --scale-factor times its size at the start of round 1 and runs round 2;
5. stops gunicorn and drops the database (unless --keep-db).
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing as mp
import os
import random
import signal
import statistics
import subprocess
import sys
import time
import urllib.parse
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DB_NAME = "mo_bench_ingest"
EVENT_TYPES = ["page_view", "product_view", "add_to_cart", "search", "app_open", "coupon_view"]
CHANNELS = ["web", "app", "wechat", "tmall"]


def parse_args():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=30.0, help="measured seconds per round")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--clients", type=int, default=4, help="client processes")
    parser.add_argument("--workers", type=int, default=4, help="gunicorn sync workers")
    parser.add_argument("--batch", type=int, default=1000, help="events per request")
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument(
        "--base-events", type=int, default=1_000_000, help="events in the table before round 1"
    )
    parser.add_argument(
        "--scale-factor", type=int, default=10, help="round 2 table size / round 1 table size"
    )
    parser.add_argument("--new-share", type=float, default=0.05, help="share of events from unknown devices")
    parser.add_argument("--port", type=int, default=18765)
    parser.add_argument("--keep-db", action="store_true")
    parser.add_argument("--rounds", type=int, choices=[1, 2], default=2)
    return parser.parse_args()


# --- Database -------------------------------------------------------------------------------------------


def server_url() -> str:
    return os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")


def bench_url() -> str:
    parts = urllib.parse.urlsplit(server_url())
    return urllib.parse.urlunsplit(parts._replace(path=f"/{DB_NAME}"))


def admin_sql(statement: str) -> None:
    import psycopg

    with psycopg.connect(server_url().replace("postgres://", "postgresql://", 1), autocommit=True) as conn:
        conn.execute(statement)


def sql(statement: str, params=None):
    import psycopg

    with psycopg.connect(bench_url().replace("postgres://", "postgresql://", 1), autocommit=True) as conn:
        cursor = conn.execute(statement, params)
        return cursor.fetchall() if cursor.description else None


def event_count() -> int:
    return sql("SELECT count(*) FROM crm_event")[0][0]


def seed(customers: int, events: int) -> None:
    sql(
        """
        INSERT INTO crm_customer (external_id, name, email, phone, gender, city, region, time_zone,
            acquisition_channel, utm_source, utm_medium, utm_campaign, created_at, updated_at)
        SELECT 'C' || lpad(g::text, 7, '0'), 'Customer ' || g, 'c' || g || '@example.cn', '', '', '', '',
            'Asia/Shanghai', 'web', '', '', '', now(), now()
        FROM generate_series(1, %s) g
        """,
        [customers],
    )
    sql(
        """
        INSERT INTO crm_customeridentity (customer_id, kind, value, source, created_at)
        SELECT id, 'external_id', external_id, 'bench', now() FROM crm_customer
        """
    )
    add_events(events)


def add_events(count: int) -> None:
    """Append `count` events over the seeded customers, in chunks so no single statement runs for minutes."""
    low, high = sql("SELECT min(id), max(id) FROM crm_customer")[0]
    start = sql("SELECT coalesce(max(id), 0) FROM crm_event")[0][0]
    chunk = 1_000_000
    for offset in range(0, count, chunk):
        n = min(chunk, count - offset)
        sql(
            """
            INSERT INTO crm_event (customer_id, type, properties, occurred_at, channel, external_id, received_at)
            SELECT %s + (random() * (%s - %s))::bigint,
                (ARRAY['page_view','product_view','add_to_cart','search','app_open'])[1 + (g %% 5)],
                jsonb_build_object('page', '/p/' || (g %% 5000), 'sku', 'SKU-' || (g %% 900)),
                now() - (random() * interval '365 days'), 'web', 'seed-' || (%s + g), now()
            FROM generate_series(1, %s) g
            """,
            [low, high, low, start + offset, n],
        )
    sql("ANALYZE crm_event")


# --- Server ---------------------------------------------------------------------------------------------


def server_env() -> dict:
    return {
        **os.environ,
        "DATABASE_URL": bench_url(),
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DJANGO_ENV": "production",
        "DJANGO_SECRET_KEY": "bench-only-secret-key-" + "x" * 40,
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
        "DJANGO_SECURE_SSL_REDIRECT": "false",
        "LOG_LEVEL": "WARNING",
    }


def manage(*args: str) -> str:
    out = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=server_env(),
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout


def create_key() -> str:
    code = (
        "from crm.api.authentication import api_key_create; "
        "print(api_key_create(name='bench', scopes=['events:write'])[1])"
    )
    return manage("shell", "-c", code).strip().splitlines()[-1]


def start_gunicorn(args) -> subprocess.Popen:
    process = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "gunicorn"),
            "config.wsgi:application",
            "--bind",
            f"127.0.0.1:{args.port}",
            "--workers",
            str(args.workers),
            "--worker-class",
            "sync",
            "--timeout",
            "120",
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env=server_env(),
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", args.port, timeout=5)
            conn.request("GET", "/api/v1/events/")
            conn.getresponse().read()
            return process
        except OSError:
            time.sleep(0.3)
    process.terminate()
    raise SystemExit("gunicorn did not answer within 60 s")


def stop_gunicorn(process: subprocess.Popen) -> None:
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)


# --- Clients --------------------------------------------------------------------------------------------


def build_bodies(*, client: int, round_no: int, count: int, batch: int, customers: int, new_share: float):
    rng = random.Random(client * 1000 + round_no)
    now = datetime.now(UTC)
    bodies = []
    for request_no in range(count):
        events = []
        for n in range(batch):
            serial = f"r{round_no}-c{client}-{request_no}-{n}"
            if rng.random() < new_share:
                customer = {"identities": [{"kind": "app_device_id", "value": f"dev-{serial}"}]}
            else:
                customer = {"external_id": f"C{rng.randint(1, customers):07d}"}
            events.append(
                {
                    "external_id": f"ev-{serial}",
                    "type": rng.choice(EVENT_TYPES),
                    "occurred_at": (now - timedelta(seconds=rng.randint(0, 86_400))).isoformat(),
                    "channel": rng.choice(CHANNELS),
                    "properties": {
                        "page": f"/p/{rng.randint(1, 5000)}",
                        "sku": f"SKU-{rng.randint(1, 900):05d}",
                    },
                    "customer": customer,
                }
            )
        bodies.append(json.dumps({"events": events}).encode())
    return bodies


def client_main(client: int, args, token: str, round_no: int, ready, start, results) -> None:
    # Enough bodies for the whole round at well over the target rate, so none is sent twice.
    count = max(8, int((args.duration + args.warmup) * 40_000 / args.batch / args.clients) + 1)
    bodies = build_bodies(
        client=client,
        round_no=round_no,
        count=count,
        batch=args.batch,
        customers=args.customers,
        new_share=args.new_share,
    )
    headers = {"Content-Type": "application/json", "Authorization": f"Api-Key {token}"}
    conn = http.client.HTTPConnection("127.0.0.1", args.port, timeout=120)
    ready.release()
    start.wait()
    t0 = time.monotonic()
    measure_from, measure_to = t0 + args.warmup, t0 + args.warmup + args.duration
    latencies, accepted, errors, sent = [], 0, 0, 0
    cpu_at_start = cpu_at_end = None
    for body in bodies:
        began = time.monotonic()
        if cpu_at_start is None and began >= measure_from:
            cpu_at_start = time.process_time()
        if began >= measure_to:
            cpu_at_end = time.process_time()
            break
        conn.request("POST", "/api/v1/events/", body=body, headers=headers)
        response = conn.getresponse()
        payload = response.read()
        ended = time.monotonic()
        sent += 1
        if response.status != 200:
            errors += 1
            if errors <= 3:
                print(f"client {client}: HTTP {response.status}: {payload[:300]!r}", file=sys.stderr)
            continue
        # Count a request in the window it finished in; its events all landed then.
        if measure_from <= ended <= measure_to:
            latencies.append(ended - began)
            accepted += json.loads(payload)["accepted"]
    else:
        print(f"client {client}: ran out of prepared bodies; raise the rate estimate", file=sys.stderr)
    client_cpu = (cpu_at_end or time.process_time()) - (cpu_at_start or 0.0)
    results.put(
        {"latencies": latencies, "accepted": accepted, "errors": errors, "sent": sent, "cpu": client_cpu}
    )


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids) -> float:
    """User + system CPU of these processes so far (a process that has gone counts 0)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / CLOCK_TICKS


def machine_busy_seconds() -> float:
    """CPU time all processes of the machine have spent busy so far (from /proc/stat)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS


def server_pids(gunicorn: subprocess.Popen) -> tuple[list[int], list[int]]:
    """(gunicorn master and workers, PostgreSQL backends connected to the bench database)."""
    workers = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == gunicorn.pid:  # ppid
            workers.append(int(stat.parent.name))
    backends = sql(
        "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()", [DB_NAME]
    )
    return [gunicorn.pid, *workers], [pid for (pid,) in backends]


def run_round(args, token: str, round_no: int, gunicorn: subprocess.Popen) -> dict:
    ctx = mp.get_context("fork")
    ready, start, results = ctx.Semaphore(0), ctx.Event(), ctx.Queue()
    procs = [
        ctx.Process(target=client_main, args=(c, args, token, round_no, ready, start, results))
        for c in range(args.clients)
    ]
    for p in procs:
        p.start()
    for _ in procs:
        ready.acquire()
    start.set()
    # Sample the server's CPU over the clients' measured window (workers have connected by then).
    time.sleep(args.warmup)
    app_pids, db_pids = server_pids(gunicorn)
    app_before, db_before, machine_before = (
        cpu_seconds(app_pids),
        cpu_seconds(db_pids),
        machine_busy_seconds(),
    )
    load_before = os.getloadavg()[0]
    time.sleep(args.duration)
    app_cpu, db_cpu = cpu_seconds(app_pids) - app_before, cpu_seconds(db_pids) - db_before
    machine_cpu = machine_busy_seconds() - machine_before
    cpu_used, load_after = app_cpu + db_cpu, os.getloadavg()[0]
    outcomes = [results.get() for _ in procs]
    for p in procs:
        p.join()
    latencies = sorted(x for o in outcomes for x in o["latencies"])
    accepted = sum(o["accepted"] for o in outcomes)
    cpu_ms_per_1000 = cpu_used / accepted * 1_000_000 if accepted else float("nan")
    client_cpu = sum(o["cpu"] for o in outcomes)
    return {
        "server_cores": cpu_used / args.duration,
        "client_cores": client_cpu / args.duration,
        "other_cores": max(0.0, machine_cpu - cpu_used - client_cpu) / args.duration,
        "cpu_ms_per_1000": cpu_ms_per_1000,
        "app_share": app_cpu / cpu_used if cpu_used else float("nan"),
        "capacity_2_cores": 2 * 1_000_000 / cpu_ms_per_1000 if accepted else float("nan"),
        "load": (load_before + load_after) / 2,
        "events_per_s": accepted / args.duration,
        "requests": len(latencies),
        "p50_ms": statistics.median(latencies) * 1000 if latencies else float("nan"),
        "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000
        if latencies
        else float("nan"),
        "errors": sum(o["errors"] for o in outcomes),
    }


def main() -> None:
    args = parse_args()
    print(
        f"database {DB_NAME}: creating, migrating, seeding {args.customers:,} customers and "
        f"{args.base_events:,} events",
        flush=True,
    )
    admin_sql(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")
    admin_sql(f"CREATE DATABASE {DB_NAME}")
    gunicorn = None
    try:
        manage("migrate", "--no-input")
        seed(args.customers, args.base_events)
        token = create_key()
        gunicorn = start_gunicorn(args)
        base = event_count()
        print(
            f"gunicorn: {args.workers} sync workers; clients: {args.clients} processes; {args.batch} events/request; "
            f"{args.new_share:.0%} from unknown devices; {args.duration:g} s measured after {args.warmup:g} s warm-up",
            flush=True,
        )
        for round_no in range(1, args.rounds + 1):
            if round_no == 2:
                target = base * args.scale_factor
                print(f"growing crm_event from {event_count():,} to {target:,} rows", flush=True)
                add_events(max(0, target - event_count()))
            at_start = event_count()
            figures = run_round(args, token, round_no, gunicorn)
            print(
                f"round {round_no}: crm_event had {at_start:,} rows at start: "
                f"{figures['events_per_s']:,.0f} events/s, {figures['requests']} requests, "
                f"p50 {figures['p50_ms']:.0f} ms, p99 {figures['p99_ms']:.0f} ms, "
                f"non-200 responses: {figures['errors']}; server CPU {figures['cpu_ms_per_1000']:.0f} ms "
                f"per 1,000 events ({figures['app_share']:.0%} gunicorn, the rest PostgreSQL) = "
                f"{figures['capacity_2_cores']:,.0f} events/s on 2 idle cores; cores busy: server "
                f"{figures['server_cores']:.2f}, clients {figures['client_cores']:.2f}, other processes "
                f"{figures['other_cores']:.2f}; load average {figures['load']:.1f}",
                flush=True,
            )
    finally:
        if gunicorn is not None:
            stop_gunicorn(gunicorn)
        if not args.keep_db:
            admin_sql(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")


if __name__ == "__main__":
    main()
