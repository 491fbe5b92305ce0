"""Run the benchmarks one after another (`make bench`), each with the arguments BENCHMARKS.md records.

    .venv/bin/python bench/run.py                 # all of them: about two hours on the 2-core machine
    .venv/bin/python bench/run.py seed_demo segments   # only those whose name contains a word given

Each benchmark is its own script in this folder and prints its own figures; this runner only runs them
in sequence (they share the machine's two cores, so running two at once would measure neither) and
stops at the first that fails. Every script takes --help.
"""

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# (script, arguments): the scales the issues set targets at.
BENCHMARKS = [
    ("bench_event_ingestion.py", []),
    ("bench_import_orders.py", ["--rows", "200000", "2000000"]),
    ("bench_seed_demo.py", ["--customers", "100000", "1000000"]),
    ("bench_admin_list.py", ["--customers", "1000000"]),
    ("bench_segments.py", ["--customers", "1000000"]),
    ("bench_dashboards.py", ["--customers", "1000000"]),
    ("bench_compute_metrics.py", ["--customers", "1000000"]),
    ("bench_loyalty_accrual.py", []),
    ("bench_loyalty_redeem.py", []),
    ("bench_loyalty_expiry.py", []),
    ("bench_member_api.py", []),
    ("bench_smtp_delivery.py", []),
    ("bench_outbox.py", ["--messages", "1000000"]),
    ("bench_dispatch.py", ["--messages", "1000000"]),
    ("bench_rules_screen.py", []),
    ("bench_campaign_start.py", ["--customers", "1000000"]),
    ("bench_time_triggers.py", ["--customers", "200000"]),
    ("bench_winback.py", ["--customers", "1000000"]),
    ("bench_journey_engine.py", ["--customers", "100000", "--batch", "10000"]),
    ("bench_journey_latency.py", ["--rate", "2000", "--seconds", "60"]),
    ("bench_journey_node_counts.py", ["--enrollments", "1000000"]),
]


def main(words: list[str]) -> int:
    chosen = [(s, a) for s, a in BENCHMARKS if not words or any(w in s for w in words)]
    if not chosen:
        names = ", ".join(s for s, _ in BENCHMARKS)
        print(f"no benchmark matches {' '.join(words)!r}; they are: {names}", file=sys.stderr)
        return 2
    env = {**os.environ, "DJANGO_ENV": os.environ.get("DJANGO_ENV", "test")}
    for script, args in chosen:
        command = [sys.executable, str(ROOT / "bench" / script), *args]
        print(f"\n=== {' '.join(command[1:])}", flush=True)
        started = time.monotonic()
        result = subprocess.run(command, cwd=ROOT, env=env)
        print(f"=== {script}: exit {result.returncode} after {time.monotonic() - started:.0f} s", flush=True)
        if result.returncode != 0:
            return result.returncode
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
