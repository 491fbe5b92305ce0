"""A journeys dispatcher process for the killed-worker test: `dispatch_run` in a loop until nothing is
due for --idle seconds. With --stall-file, the first batch stops after writing its steps and side effects
but before its transaction commits, touches the file and sleeps, for the test to SIGKILL it there.

    python -m tests.journeys.engine_worker --name w1 --batch 100 --stall-file /tmp/x
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--name", default=f"w{os.getpid()}")
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--idle", type=float, default=1.0)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--stall-file", default="")
    args = parser.parse_args()

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from journeys.services import engine

    if args.stall_file:
        original = engine._write

        def stalled(advance, claim):
            original(advance, claim)
            Path(args.stall_file).write_text(json.dumps({"claimed": claim.ids}))
            time.sleep(3600)  # the test kills the process here, mid-transaction

        engine._write = stalled

    steps = 0
    started = time.monotonic()
    idle_since = None
    while time.monotonic() - started < args.seconds:
        stats = engine.dispatch_run(worker=args.name, limit_seconds=2.0, batch_size=args.batch, events=False)
        steps += stats.totals.steps
        if stats.batches:
            idle_since = None
            continue
        idle_since = idle_since or time.monotonic()
        if time.monotonic() - idle_since > args.idle:
            break
        time.sleep(0.2)
    print(json.dumps({"steps": steps}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
