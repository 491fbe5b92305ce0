"""Event-to-trigger latency of the journeys engine while events are ingested at a steady rate.

    flock /tmp/bench.lock env DJANGO_ENV=test DATABASE_URL=postgres://postgres@127.0.0.1:5507/postgres \
        .venv/bin/python bench/bench_journey_latency.py --rate 2000 --seconds 60

What it does:
1. creates the database `mo_bench_journey_latency` (bench_loyalty_common: DATABASE_URL's or PGPORT's
   server), migrates it, writes rate x seconds customers (one event each, so every event can enter the
   journey: the journey's re-entry rule is "never") and publishes one event-triggered journey:
   entry on `add_to_cart` with the property filter currency = CNY -> wait 1 day -> exit;
2. starts --workers processes that run the engine as beat wakes it: `dispatch_run` (events read through
   crm's cursor, then due enrollments advanced), and when it finds nothing, sleep to the next tick of
   --tick seconds (beat's `journeys-dispatch` interval, journeys/schedule.py);
3. one ingest process calls crm's ingestion service (`events_ingest`, what the events API calls) with
   batches of --batch events, paced on an absolute schedule to --rate events/s for --seconds;
4. waits until every event has its enrollment (or --drain seconds), then prints p50/p95/p99/max of
   enrollment.entered_at - event.received_at (the engine's clock when the batch that entered it began,
   against the ingestion's clock when it stored the event), the same to the step at the wait (the
   first wait: entry node passed), how many events were ingested against the schedule, and the CPU
   seconds of the ingest process, the workers and PostgreSQL.
Drops the database unless --keep-db.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_loyalty_common import (  # noqa: E402
    ROOT,
    bench_url,
    cluster_cpu_seconds,
    database_create,
    database_drop,
    django_setup,
    sql,
)

DB_NAME = "mo_bench_journey_latency"


def worker_main(tick: float, stop_file: str) -> None:
    django_setup(DB_NAME)
    from journeys.services.engine import dispatch_run

    started_cpu = time.process_time()
    batches = events = 0
    while not os.path.exists(stop_file):
        stats = dispatch_run(worker=f"latency-{os.getpid()}", limit_seconds=20.0)
        batches += stats.batches
        events += stats.events
        # Idle: the next beat tick (the task is queued every `tick` seconds; a busy worker runs on).
        time.sleep(tick - (time.time() % tick))
    print(f"CPU {time.process_time() - started_cpu}", flush=True)
    print(f"  worker {os.getpid()}: {batches} batches, {events:,} events read", flush=True)


def ingest_main(rate: int, seconds: float, batch: int, first_customer: int) -> None:
    django_setup(DB_NAME)
    from django.utils import timezone

    from crm.services.events import CustomerRef, EventInput, events_ingest

    total = int(rate * seconds)
    interval = batch / rate
    started = time.time()
    started_cpu = time.process_time()
    sent = late_batches = 0
    while sent < total:
        due = started + (sent // batch) * interval
        pause = due - time.time()
        if pause > 0:
            time.sleep(pause)
        elif pause < -interval:
            late_batches += 1  # the ingestion cannot keep the rate: reported, not hidden
        n = min(batch, total - sent)
        now = timezone.now()
        items = [
            EventInput(
                type="add_to_cart",
                occurred_at=now,
                customer=CustomerRef(id=first_customer + sent + i),
                properties={"sku": f"SKU-{(sent + i) % 900}", "quantity": 1, "currency": "CNY"},
                channel="wechat",
                external_id=f"lat-{sent + i}",
            )
            for i in range(n)
        ]
        result = events_ingest(items=items, source="bench")
        if result.errors:
            raise SystemExit(f"ingestion refused events: {result.errors[:3]}")
        sent += n
    elapsed = time.time() - started
    print(f"CPU {time.process_time() - started_cpu}", flush=True)
    print(
        f"  ingest: {sent:,} events in {elapsed:.1f}s = {sent / elapsed:,.0f}/s "
        f"(target {rate:,}/s; {late_batches} batches more than one interval late)",
        flush=True,
    )


def percentiles(values: list[float]) -> str:
    if not values:
        return "none"
    values = sorted(values)

    def at(p: float) -> float:
        return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]

    return (
        f"p50 {at(50):.2f}s, p95 {at(95):.2f}s, p99 {at(99):.2f}s, max {values[-1]:.2f}s "
        f"({len(values):,} events)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=int, default=2000, help="events per second")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--batch", type=int, default=200, help="events per events_ingest call")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--tick", type=float, default=2.0, help="beat's dispatch interval")
    parser.add_argument("--drain", type=float, default=120.0)
    parser.add_argument("--keep-db", action="store_true")
    parser.add_argument("--role", choices=["worker", "ingest"], help=argparse.SUPPRESS)
    parser.add_argument("--first-customer", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--stop-file", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "worker":
        worker_main(args.tick, args.stop_file)
        return 0
    if args.role == "ingest":
        ingest_main(args.rate, args.seconds, args.batch, args.first_customer)
        return 0

    total = int(args.rate * args.seconds)
    database_create(DB_NAME)
    django_setup(DB_NAME)
    from django.db import connection

    from journeys.services.journeys import journey_create, journey_publish

    sql(
        """
        INSERT INTO crm_customer (external_id, name, email, phone, gender, city, region, time_zone,
            acquisition_channel, utm_source, utm_medium, utm_campaign, language, preferred_channel,
            created_at, updated_at)
        SELECT 'L' || g, 'member ' || g, 'l' || g || '@example.cn', '', '', '上海', '', 'Asia/Shanghai',
            'web', '', '', '', '', '', now(), now()
        FROM generate_series(1, %s) g
        """,
        [total],
    )
    with connection.cursor() as cursor:
        cursor.execute("SELECT min(id) FROM crm_customer")
        first_customer = cursor.fetchone()[0]
        cursor.execute("VACUUM ANALYZE")

    def node(node_id, node_type, **config):
        return {"id": node_id, "type": node_type, "config": config, "position": {"x": 0, "y": 0}}

    def edge(a, b):
        return {"id": f"{a}-{b}", "source": a, "source_handle": "next", "target": b}

    trigger = {
        "kind": "event",
        "event_type": "add_to_cart",
        "filters": [{"property": "currency", "op": "eq", "value": "CNY"}],
    }
    graph = {
        "schema": 1,
        "nodes": [
            node("entry", "entry", trigger=trigger),
            node("w", "wait", mode="duration", duration={"value": 1, "unit": "days"}),
            node("x", "exit"),
        ],
        "edges": [edge("entry", "w"), edge("w", "x")],
    }
    version = journey_publish(journey=journey_create(name="bench latency", graph=graph))
    connection.close()

    env = {**os.environ, "DATABASE_URL": bench_url(DB_NAME), "DJANGO_ENV": "test", "LOG_LEVEL": "WARNING"}
    stop_file = f"/tmp/bench_journey_latency.{os.getpid()}.stop"
    if os.path.exists(stop_file):
        os.unlink(stop_file)
    me = [sys.executable, __file__]
    workers = [
        subprocess.Popen(
            [*me, "--role", "worker", "--tick", str(args.tick), "--stop-file", stop_file],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(args.workers)
    ]
    time.sleep(10)  # the workers set Django up and go idle, as beat-woken ones are
    server_before = cluster_cpu_seconds()
    started = time.time()
    ingest = subprocess.run(
        [
            *me,
            "--role",
            "ingest",
            "--rate",
            str(args.rate),
            "--seconds",
            str(args.seconds),
            "--batch",
            str(args.batch),
            "--first-customer",
            str(first_customer),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
        check=True,
    )
    ingested_at = time.time()
    load_during = os.getloadavg()[0]
    from journeys.models import Enrollment

    while time.time() - ingested_at < args.drain:
        if Enrollment.objects.filter(version_id=version.pk).count() >= total:
            break
        time.sleep(0.5)
    drained_at = time.time()
    Path(stop_file).touch()
    cpu = {"ingest": 0.0, "workers": 0.0}
    lines = []
    for line in ingest.stdout.splitlines():
        if line.startswith("CPU "):
            cpu["ingest"] += float(line.split()[1])
        else:
            lines.append(line)
    for p in workers:
        out, _err = p.communicate()
        for line in out.splitlines():
            if line.startswith("CPU "):
                cpu["workers"] += float(line.split()[1])
            else:
                lines.append(line)
    server_cpu = cluster_cpu_seconds() - server_before
    os.unlink(stop_file)
    for line in lines:
        print(line, flush=True)

    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT extract(epoch FROM en.entered_at - ev.received_at),
                   extract(epoch FROM st.entered_at - ev.received_at)
            FROM crm_event ev
            JOIN journeys_enrollment en ON en.journey_id = %s AND en.customer_id = ev.customer_id
                 AND en.occurrence = ev.id::text
            LEFT JOIN journeys_enrollmentstep st ON st.enrollment_id = en.id AND st.node_id = 'w'
            WHERE ev.type = 'add_to_cart'
            """,
            [version.journey_id],
        )
        rows = cursor.fetchall()
        cursor.execute("SELECT count(*) FROM crm_event WHERE type = 'add_to_cart'")
        events = cursor.fetchone()[0]
    entered = [float(r[0]) for r in rows]
    at_wait = [float(r[1]) for r in rows if r[1] is not None]
    print(
        f"latency at {args.rate:,} events/s for {args.seconds:.0f}s, {args.workers} workers, tick {args.tick}s: "
        f"{events:,} events, {len(rows):,} enrollments ({drained_at - ingested_at:.1f}s after the last "
        f"event to the last enrollment)",
        flush=True,
    )
    print(f"  event received -> enrollment entered: {percentiles(entered)}", flush=True)
    print(f"  event received -> at the first wait:  {percentiles(at_wait)}", flush=True)
    print(
        f"  CPU: ingest {cpu['ingest']:.1f}s, workers {cpu['workers']:.1f}s, PostgreSQL {server_cpu:.1f}s "
        f"over {drained_at - started:.0f}s of wall (load {load_during:.1f} at the end of the ingestion)",
        flush=True,
    )
    ok = len(rows) == events == total
    if not args.keep_db:
        database_drop(DB_NAME)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
