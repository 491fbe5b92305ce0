"""A dispatcher worker process for the outbox's process tests: the stand-in stages, the provider from
OUTBOX_TEST_PROVIDERS, and a loop of `dispatch_run` (and, with --reap, the reaper, as beat would run it)
until nothing is due, queued or in flight for --idle seconds, or --seconds have passed.

    python -m tests.campaigns.outbox_worker --name w1 --reap --idle 2 --seconds 120

Prints one JSON line of totals at the end."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--name", default=f"w{os.getpid()}")
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--idle", type=float, default=2.0)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--reap", action="store_true")
    args = parser.parse_args()

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from django.utils import timezone

    import tests.campaigns.pipeline_doubles_installed  # noqa: F401
    from campaigns.models import Message
    from campaigns.services.dispatch import dispatch_run
    from campaigns.services.outbox import BatchStats, messages_reap

    totals = BatchStats()
    started = time.monotonic()
    idle_since = None
    while time.monotonic() - started < args.seconds:
        if args.reap:
            messages_reap(now=timezone.now())
        stats = dispatch_run(worker=args.name, limit_seconds=2.0, batch_size=args.batch)
        totals.add(stats.totals)
        if stats.batches:
            idle_since = None
            continue
        if not Message.objects.filter(status__in=["queued", "deferred", "sending"]).exists():
            idle_since = idle_since or time.monotonic()
            if time.monotonic() - idle_since >= args.idle:
                break
        time.sleep(0.1)
    print(json.dumps({"worker": args.name, **totals.__dict__}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
