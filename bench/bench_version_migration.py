"""Moving customers in flight to a newly published version, at scale (journeys/services/versions.py).

    flock /tmp/bench.lock env DJANGO_ENV=test .venv/bin/python bench/bench_version_migration.py --customers 100000

What it does:
1. creates the database `mo_bench_versions` (DATABASE_URL's server), migrates it, writes --customers
   customers and publishes v1: entry -> w1 (wait 1 day) -> w2 (wait 2 days) -> w3 (wait 3 days) -> exit;
2. enters every customer and puts them, in SQL, waiting at w1 (half), w2 (30 %) and w3 (20 %) with their
   open waiting step, as the engine leaves them;
3. publishes v2 (w3 removed, w2 now a wait for an event) with "move node by node", the mapping prefilled
   (w1 -> w1 keeps waiting, w2 -> w2 enters it afresh, w3 -> exit), and times `journey_publish` and
   `version_migration_run` (batches of --batch); prints enrollments moved or exited per second.
Runs --runs times on a fresh journey each; drops the database unless --keep-db."""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DB_NAME = "mo_bench_versions"
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


def node(node_id, node_type, **config):
    return {"id": node_id, "type": node_type, "config": config, "position": {"x": 0, "y": 0}}


def edge(a, b, handle="next"):
    return {"id": f"{a}-{handle}-{b}", "source": a, "source_handle": handle, "target": b}


def wait(node_id, days):
    return node(node_id, "wait", mode="duration", duration={"value": days, "unit": "days"})


V1 = {
    "schema": 1,
    "nodes": [node("entry", "entry", trigger={"kind": "manual"}), wait("w1", 1), wait("w2", 2), wait("w3", 3)]
    + [node("x", "exit")],
    "edges": [edge("entry", "w1"), edge("w1", "w2"), edge("w2", "w3"), edge("w3", "x")],
}
V2 = {
    "schema": 1,
    "nodes": [
        node("entry", "entry", trigger={"kind": "manual"}),
        wait("w1", 1),
        node("w2", "wait_for_event", event_type="order_placed", timeout={"value": 2, "unit": "days"}),
        node("x", "exit"),
    ],
    "edges": [edge("entry", "w1"), edge("w1", "w2"), edge("w2", "x", "event"), edge("w2", "x", "timeout")],
}


def one_run(customer_ids: list[int], batch: int, run: int) -> dict:
    from django.db import connection
    from django.utils import timezone

    from journeys.models import InFlight, VersionMigration
    from journeys.services.enrollments import enrollments_enter
    from journeys.services.journeys import (
        journey_create,
        journey_draft_create,
        journey_graph_save,
        journey_publish,
    )
    from journeys.services.versions import version_mapping_prefill, version_migration_run

    now = timezone.now()
    journey = journey_create(name=f"bench {run}", graph=V1, now=now)
    v1 = journey_publish(journey=journey, now=now)
    enrollments_enter(version=v1, customer_ids=customer_ids, occurrence="1", now=now)
    with connection.cursor() as cursor:
        # Waiting where the engine would leave them: half at w1, 30 % at w2, 20 % at w3, each with its
        # open waiting step (visit 2; the entry's passed step is left out, the move does not read it).
        cursor.execute(
            "UPDATE journeys_enrollment SET state = 'waiting', steps_taken = 2, node_entered_at = %s, "
            "due_at = %s + interval '1 day', node_id = CASE WHEN id %% 10 < 5 THEN 'w1' "
            "WHEN id %% 10 < 8 THEN 'w2' ELSE 'w3' END WHERE version_id = %s",
            [now, now, v1.pk],
        )
        cursor.execute(
            "INSERT INTO journeys_enrollmentstep (enrollment_id, version_id, node_id, visit, entered_at, "
            "outcome, handle, detail) SELECT id, version_id, node_id, 2, %s, 'waiting', '', '{}' "
            "FROM journeys_enrollment WHERE version_id = %s",
            [now, v1.pk],
        )
        cursor.execute("ANALYZE journeys_enrollment")
        cursor.execute("ANALYZE journeys_enrollmentstep")
    journey_draft_create(journey=journey, now=now)
    draft, _problems = journey_graph_save(journey=journey, graph=V2, now=now)
    mapping = version_mapping_prefill(old=v1, new=draft)
    started = time.perf_counter()
    v2 = journey_publish(journey=journey, in_flight=InFlight.MOVE, mapping=mapping, now=now)
    published = time.perf_counter()
    migration = VersionMigration.objects.get(to_version=v2)
    progress = version_migration_run(migration=migration, now=now, batch_size=batch)
    ended = time.perf_counter()
    total = progress.moved + progress.exited
    return {
        "publish": published - started,
        "move": ended - published,
        "moved": progress.moved,
        "exited": progress.exited,
        "per_second": total / (ended - published),
        "left": progress.left,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=2_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--keep-db", action="store_true")
    args = parser.parse_args()

    admin(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')
    admin(f'CREATE DATABASE "{DB_NAME}"')
    env = {**os.environ, "DATABASE_URL": bench_url(), "DJANGO_ENV": "test", "LOG_LEVEL": "WARNING"}
    subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "migrate", "-v", "0"], cwd=ROOT, env=env, check=True
    )
    os.environ.update(env)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from django.db import connection

    from crm.models import Customer

    Customer.objects.bulk_create(
        [Customer(external_id=f"V{n}", name=f"member {n}") for n in range(args.customers)], batch_size=5000
    )
    with connection.cursor() as cursor:
        cursor.execute("SELECT id FROM crm_customer ORDER BY id")
        ids = [row[0] for row in cursor.fetchall()]
    results = []
    try:
        for run in range(args.runs):
            result = one_run(ids, args.batch, run)
            results.append(result)
            print(
                f"run {run + 1}: publish {result['publish'] * 1000:.0f} ms, move {result['move']:.2f} s "
                f"({result['moved']:,} moved, {result['exited']:,} exited, {result['left']} left): "
                f"{result['per_second']:,.0f} enrollments/s",
                flush=True,
            )
        print(
            f"median over {args.runs} runs, {args.customers:,} in flight, batches of {args.batch:,}: "
            f"move {statistics.median(r['move'] for r in results):.2f} s, "
            f"{statistics.median(r['per_second'] for r in results):,.0f} enrollments/s, "
            f"publish {statistics.median(r['publish'] for r in results) * 1000:.0f} ms"
        )
    finally:
        connection.close()
        if not args.keep_db:
            admin(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
