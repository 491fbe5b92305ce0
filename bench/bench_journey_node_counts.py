"""The canvas's per-node analytics (`journey_node_counts`) of a 30-node journey with 10^6 enrollments.

    flock /tmp/bench.lock env DJANGO_ENV=test DATABASE_URL=postgres://postgres@127.0.0.1:5507/postgres \
        .venv/bin/python bench/bench_journey_node_counts.py --enrollments 1000000

What it does:
1. creates the database `mo_bench_journey_counts`, migrates it, writes --enrollments customers and
   publishes a 30-node journey (entry, 14 x (send message, wait 1 day), exit) and a second, smaller
   journey whose rows share the tables (the counts must read one version's rows, not scan everyone's);
2. writes, with SQL, one enrollment a customer spread along the journey as a real one thins out (the
   k-th message/wait pair reached by 85 % of those who reached the one before; those at a wait are waiting
   there, those at a message left the journey there, those at the exit completed it), with
   every step it took: passed steps up to its node, a waiting step there;
3. VACUUM ANALYZE (as autovacuum would have by then), then calls `journey_node_counts` --runs times
   and prints the median and max, the CPU of this process and PostgreSQL's, and EXPLAIN ANALYZE of
   the two statements.
Drops the database unless --keep-db.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_loyalty_common import (  # noqa: E402
    cluster_cpu_seconds,
    database_create,
    database_drop,
    django_setup,
    sql,
)

DB_NAME = "mo_bench_journey_counts"
PAIRS = 14  # (send message, wait) pairs: with entry and exit, 30 nodes


def graph() -> dict:
    def node(node_id, node_type, **config):
        return {"id": node_id, "type": node_type, "config": config, "position": {"x": 0, "y": 0}}

    nodes = [node("entry", "entry", trigger={"kind": "manual"})]
    for k in range(PAIRS):
        nodes.append(node(f"m{k}", "send_message", channel="email", template="bench"))
        nodes.append(node(f"w{k}", "wait", mode="duration", duration={"value": 1, "unit": "days"}))
    nodes.append(node("x", "exit"))
    ids = [n["id"] for n in nodes]
    edges = [
        {"id": f"{a}-{b}", "source": a, "source_handle": "next", "target": b}
        for a, b in zip(ids, ids[1:], strict=False)
    ]
    return {"schema": 1, "nodes": nodes, "edges": edges}


def seed(version_id: int, journey_id: int, customers: int, offset: int) -> None:
    """`customers` enrollments of one version (customers from `offset` on) with their steps, set-based.

    Depth d (0..2*PAIRS+1: the index of the node the enrollment stands at, or left at) is drawn so that
    each message/wait pair keeps 85 % of the one before; an enrollment at a wait is waiting there, one at
    the exit has completed, one at a message left the journey there."""
    sql(
        """
        CREATE TEMP TABLE bench_depth AS
        SELECT c.id AS customer_id, g AS n,
               least(2 * %(pairs)s + 1,
                     1 + 2 * floor(ln(1 - random()) / ln(0.85))::int + (random() < 0.5)::int) AS depth
        FROM (SELECT id, row_number() OVER (ORDER BY id) AS g FROM crm_customer) c (id, g)
        WHERE c.g > %(offset)s AND c.g <= %(offset)s + %(n)s
        """,
        {"pairs": PAIRS, "offset": offset, "n": customers},
    )
    # Node ids by position: 0 entry, 2k+1 message k, 2k+2 wait k, 2*PAIRS+1 exit.
    node_sql = (
        "CASE WHEN {p} = 0 THEN 'entry' WHEN {p} = 2 * %(pairs)s + 1 THEN 'x' "
        "WHEN {p} %% 2 = 1 THEN 'm' || (({p} - 1) / 2) ELSE 'w' || (({p} - 2) / 2) END"
    )
    sql(
        f"""
        INSERT INTO journeys_enrollment
            (customer_id, journey_id, version_id, node_id, state, arm, occurrence, entered_at, due_at,
             finished_at, node_entered_at, steps_taken, attempts, waiting_for, wake_handle, reason,
             reason_params)
        SELECT customer_id, %(journey)s, %(version)s, {node_sql.format(p="depth")},
               CASE WHEN depth = 2 * %(pairs)s + 1 THEN 'completed'
                    WHEN depth %% 2 = 0 THEN 'waiting' ELSE 'exited' END,
               'treated', '1', now(), now() + interval '1 day', NULL, now(), depth + 1, 0, '', '', '', '{{}}'
        FROM bench_depth
        """,
        {"journey": journey_id, "version": version_id, "pairs": PAIRS},
    )
    sql(
        f"""
        INSERT INTO journeys_enrollmentstep
            (enrollment_id, version_id, node_id, visit, entered_at, left_at, outcome, handle, detail)
        SELECT e.id, %(version)s, {node_sql.format(p="p")}, p + 1, now(),
               CASE WHEN p < d.depth OR e.state <> 'waiting' THEN now() END,
               CASE WHEN p < d.depth THEN 'passed' WHEN e.state = 'waiting' THEN 'waiting' ELSE 'exited' END,
               CASE WHEN p < d.depth THEN 'next' ELSE '' END, '{{}}'
        FROM bench_depth d
        JOIN journeys_enrollment e ON e.customer_id = d.customer_id AND e.version_id = %(version)s
        CROSS JOIN LATERAL generate_series(0, d.depth) AS p
        """,
        {"version": version_id, "pairs": PAIRS},
    )
    sql("DROP TABLE bench_depth")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--enrollments", type=int, default=1_000_000)
    parser.add_argument("--others", type=int, default=200_000, help="enrollments of the other journey")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--keep-db", action="store_true")
    args = parser.parse_args()

    database_create(DB_NAME)
    django_setup(DB_NAME)
    from django.db import connection

    from campaigns.models import MessageTemplate
    from journeys.selectors import journey_node_counts
    from journeys.services.journeys import journey_create, journey_publish

    started = time.perf_counter()
    sql(
        """
        INSERT INTO crm_customer (external_id, name, email, phone, gender, city, region, time_zone,
            acquisition_channel, utm_source, utm_medium, utm_campaign, language, preferred_channel,
            created_at, updated_at)
        SELECT 'N' || g, 'member ' || g, 'n' || g || '@example.cn', '', '', '上海', '', 'Asia/Shanghai',
            'web', '', '', '', '', '', now(), now()
        FROM generate_series(1, %s) g
        """,
        [args.enrollments + args.others],
    )
    MessageTemplate.objects.create(code="bench", name="Bench", channel="email")
    version = journey_publish(journey=journey_create(name="bench thirty nodes", graph=graph()))
    other = journey_publish(journey=journey_create(name="bench other", graph=graph()))
    seed(version.pk, version.journey_id, args.enrollments, 0)
    seed(other.pk, other.journey_id, args.others, args.enrollments)
    connection.cursor().execute("VACUUM ANALYZE")
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM journeys_enrollmentstep WHERE version_id = %s", [version.pk])
        steps = cursor.fetchone()[0]
    print(
        f"seeded {args.enrollments:,} enrollments and {steps:,} steps of a 30-node journey "
        f"(+{args.others:,} of another) in {time.perf_counter() - started:.0f}s",
        flush=True,
    )

    journey_node_counts(version)  # warm: the first read pulls the index into the cache
    timings = []
    server_before, cpu_before = cluster_cpu_seconds(), time.process_time()
    for _ in range(args.runs):
        t = time.perf_counter()
        counts = journey_node_counts(version)
        timings.append(time.perf_counter() - t)
    python_cpu, server_cpu = time.process_time() - cpu_before, cluster_cpu_seconds() - server_before
    entered = sum(c["entered"] for c in counts.values())
    print(
        f"journey_node_counts, {len(counts)} nodes, {entered:,} steps counted: median "
        f"{statistics.median(timings) * 1000:.0f} ms, max {max(timings) * 1000:.0f} ms over {args.runs} runs; "
        f"CPU a run: Python {python_cpu / args.runs * 1000:.0f} ms, PostgreSQL "
        f"{server_cpu / args.runs * 1000:.0f} ms (load {os.getloadavg()[0]:.1f})",
        flush=True,
    )
    with connection.cursor() as cursor:
        for statement in (
            "SELECT node_id, outcome, count(*) FROM journeys_enrollmentstep WHERE version_id = %s "
            "GROUP BY 1, 2",
            "SELECT node_id, count(*) FROM journeys_enrollment WHERE version_id = %s "
            "AND state IN ('active', 'waiting') GROUP BY 1",
        ):
            cursor.execute(f"EXPLAIN (ANALYZE, BUFFERS) {statement}", [version.pk])
            print("\n".join("  " + row[0] for row in cursor.fetchall()), flush=True)
    if not args.keep_db:
        database_drop(DB_NAME)
    return 0


if __name__ == "__main__":
    sys.exit(main())
