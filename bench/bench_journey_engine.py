"""The journeys engine at scale: customers entering at once to their first wait, and steps/s.

    flock /tmp/bench.lock env DJANGO_ENV=test .venv/bin/python bench/bench_journey_engine.py --customers 100000

What it does:
1. creates the database `mo_bench_journeys` (DATABASE_URL's server), migrates it, writes --customers
   customers, one email template and the tag the second journey adds;
2. "entry to first wait": publishes entry -> send_message -> wait 1 day, enters every customer at once
   (`enrollments_enter`, one statement per 20,000) and starts --workers processes, each running
   `dispatch_run` with batches of --batch until nothing is due; prints the time from the entry call to
   the last enrollment waiting (the steps include one outbox row per customer, through `messages_enqueue`);
3. "steps/s": publishes a journey of instant nodes (entry -> random split -> condition on a profile rule
   -> update attribute / send -> exit) and does the same; prints steps recorded / wall time of the
   workers (processes started to ended).
Drops the database unless --keep-db."""

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
)
from bench_loyalty_common import django_setup as _django_setup  # noqa: E402

DB_NAME = "mo_bench_journeys"


def django_setup() -> None:
    _django_setup(DB_NAME)


def worker(batch: int) -> None:
    """Poll like a beat-woken worker until work came and then nothing was due for a second; print the
    window of productive dispatch (the first claim that found work to the end of the last one)."""
    django_setup()
    from journeys.services.engine import BatchStats, dispatch_run

    totals, batches = BatchStats(), 0
    first = last = None
    cpu_first = cpu_last = 0.0
    waited = time.time()
    profile = None
    if os.environ.get("BENCH_PROFILE"):
        import cProfile

        profile = cProfile.Profile()
        profile.enable()
    while True:
        began, cpu_began = time.time(), time.process_time()
        stats = dispatch_run(
            worker=f"bench-{os.getpid()}", limit_seconds=3600, batch_size=batch, events=False
        )
        if stats.batches:
            if first is None:
                first, cpu_first = began, cpu_began
            last, cpu_last = time.time(), time.process_time()
            totals.add(stats.totals)
            batches += stats.batches
        elif last is not None and time.time() - last > 1.0:
            break
        elif last is None and time.time() - waited > 300:
            break
        time.sleep(0.05)
    print(
        f"  worker {os.getpid()}: {batches} batches, {totals.steps:,} steps, lost {totals.lost}", flush=True
    )
    if profile is not None:
        profile.disable()
        profile.dump_stats(f"{os.environ['BENCH_PROFILE']}/journey-worker-{os.getpid()}.prof")
    # The CPU of the productive loops only (Django's start-up and the idle polls before work came left out).
    print(f"WINDOW {first or 0} {last or 0} {cpu_last - cpu_first}", flush=True)


def workers(n: int, batch: int, env: dict) -> tuple[float, float, float, float]:
    """(wall seconds from the processes' start to their end, the dispatch loops' window (the first loop's
    start to the last one's end, process start-up left out), the start of that window, the workers' CPU
    seconds in their productive loops)."""
    started = time.perf_counter()
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "--worker", "--batch", str(batch)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(n)
    ]
    windows = []
    for p in procs:
        out, _err = p.communicate()
        for line in out.splitlines():
            if line.startswith("WINDOW "):
                windows.append(tuple(float(x) for x in line.split()[1:]))
            else:
                print(line, flush=True)
    first, last = min(w[0] for w in windows), max(w[1] for w in windows)
    return time.perf_counter() - started, last - first, first, sum(w[2] for w in windows)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--keep-db", action="store_true")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.batch)
        return 0

    database_create(DB_NAME)
    env = {**os.environ, "DATABASE_URL": bench_url(DB_NAME), "DJANGO_ENV": "test", "LOG_LEVEL": "WARNING"}
    django_setup()
    from django.db import connection
    from django.utils import timezone

    from campaigns.models import MessageTemplate
    from crm.models import Customer
    from journeys.models import Enrollment, EnrollmentStep
    from journeys.services.enrollments import enrollments_enter
    from journeys.services.journeys import journey_create, journey_publish

    Customer.objects.bulk_create(
        [
            Customer(
                external_id=f"B{n}",
                name=f"member {n}",
                email=f"m{n}@example.cn",
                city="上海" if n % 3 else "北京",
            )
            for n in range(args.customers)
        ],
        batch_size=5000,
    )
    MessageTemplate.objects.create(code="bench", name="Bench", channel="email")
    ids = [
        row[0] for row in connection.cursor().execute("SELECT id FROM crm_customer ORDER BY id").fetchall()
    ]
    connection.cursor().execute("VACUUM ANALYZE")

    def node(node_id, node_type, **config):
        return {"id": node_id, "type": node_type, "config": config, "position": {"x": 0, "y": 0}}

    def edge(a, b, handle="next"):
        return {"id": f"{a}-{handle}-{b}", "source": a, "source_handle": handle, "target": b}

    entry = node("entry", "entry", trigger={"kind": "manual"})
    first_wait = {
        "schema": 1,
        "nodes": [
            entry,
            node("s", "send_message", channel="email", template="bench"),
            node("w", "wait", mode="duration", duration={"value": 1, "unit": "days"}),
            node("x", "exit"),
        ],
        "edges": [edge("entry", "s"), edge("s", "w"), edge("w", "x")],
    }
    rule = {"op": "and", "conditions": [{"field": "profile.city", "operator": "eq", "value": "上海"}]}
    instant = {
        "schema": 1,
        "nodes": [
            entry,
            node("r", "random_split", branches=[{"id": "a", "percent": 50}, {"id": "b", "percent": 50}]),
            node("c", "condition", rule=rule),
            node("u", "update_attribute", attribute="region", value="华东"),
            node("x", "exit"),
        ],
        "edges": [
            edge("entry", "r"),
            edge("r", "c", "a"),
            edge("r", "u", "b"),
            edge("c", "u", "yes"),
            edge("c", "x", "no"),
            edge("u", "x"),
        ],
    }

    # 1. Entry to the first wait.
    version = journey_publish(journey=journey_create(name="bench first wait", graph=first_wait))
    # The workers start first (as the beat-woken ones are, already running); the clock starts at the entry.
    procs_env = env
    import threading

    result: dict = {}
    runner = threading.Thread(target=lambda: result.update(w=workers(args.workers, args.batch, procs_env)))
    runner.start()
    time.sleep(
        float(os.environ.get("BENCH_WORKER_WARMUP", "15"))
    )  # let them set Django up and go idle-polling
    server_before = cluster_cpu_seconds()
    started_wall = time.time()
    started, enter_cpu = time.perf_counter(), time.process_time()
    entered = enrollments_enter(version=version, customer_ids=ids, occurrence="1", now=timezone.now())
    enter_seconds, enter_cpu = time.perf_counter() - started, time.process_time() - enter_cpu
    runner.join()
    server_cpu = cluster_cpu_seconds() - server_before
    _wall, window, first, workers_cpu = result["w"]
    total = first + window - started_wall  # from the entry call to the end of the last batch
    waiting = Enrollment.objects.filter(version=version, state="waiting", node_id="w").count()
    steps = EnrollmentStep.objects.filter(version=version).count()
    print(
        f"entry to first wait: {entered.entered:,} customers entered in {enter_seconds:.1f}s, all "
        f"{waiting:,} at the wait after {total:.1f}s ({steps:,} steps, {args.workers} workers, "
        f"batch {args.batch})",
        flush=True,
    )
    print(
        f"  CPU: entry call {enter_cpu:.1f}s, workers {workers_cpu:.1f}s, PostgreSQL {server_cpu:.1f}s "
        f"(load {os.getloadavg()[0]:.1f})",
        flush=True,
    )

    # 2. Steps per second through instant nodes.
    version2 = journey_publish(journey=journey_create(name="bench instant", graph=instant))
    enrollments_enter(version=version2, customer_ids=ids, occurrence="1", now=timezone.now())
    connection.cursor().execute("ANALYZE journeys_enrollment")
    # Entered before the workers start: this measures the engine alone, from its first claim.
    server_before = cluster_cpu_seconds()
    wall, seconds, _first, workers_cpu = workers(args.workers, args.batch, env)
    server_cpu = cluster_cpu_seconds() - server_before
    steps2 = EnrollmentStep.objects.filter(version=version2).count()
    done = Enrollment.objects.filter(version=version2, state="completed").count()
    print(
        f"steps: {steps2:,} steps ({done:,} enrollments completed) by {args.workers} workers in "
        f"{seconds:.1f}s of dispatch ({wall:.1f}s with process start-up) = {steps2 / seconds:,.0f} steps/s",
        flush=True,
    )
    print(
        f"  CPU: workers {workers_cpu:.1f}s, PostgreSQL {server_cpu:.1f}s (start-up included) = "
        f"{steps2 / (workers_cpu + server_cpu):,.0f} steps per CPU second (load {os.getloadavg()[0]:.1f})",
        flush=True,
    )
    ok = waiting == len(ids) and done == len(ids)
    if not args.keep_db:
        database_drop(DB_NAME)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
