"""The dispatcher: a worker claims a batch of due messages, puts it through the pipeline
(campaigns/services/outbox.py), and claims the next, until nothing is due or its time budget is spent.

One beat task wakes it every few seconds (campaigns/schedule.py); every worker process that takes the
wake runs this loop, so more processes on more hosts drain the queue faster, and nothing here assumes one
host: the only shared state is the outbox rows and their claims, in the database. There is never one
Celery task per message, nor a countdown: a message due later is a row whose `due_at` is later."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from django.conf import settings
from django.db import close_old_connections, connection
from django.utils import timezone

from campaigns.services.outbox import BatchStats, batch_process, batch_size_default, messages_claim

logger = logging.getLogger(__name__)

DEFAULT_DISPATCH_SECONDS = 20.0


@dataclass
class DispatchStats:
    worker: str
    batches: int = 0
    seconds: float = 0.0
    totals: BatchStats = field(default_factory=BatchStats)

    def __getattr__(self, name: str):
        # claimed, sent, retried, deferred, ...: the batches' totals.
        if name in BatchStats.__dataclass_fields__:
            return getattr(self.totals, name)
        raise AttributeError(name)


def dispatch_budget() -> float:
    return float(getattr(settings, "MESSAGING_DISPATCH_SECONDS", DEFAULT_DISPATCH_SECONDS))


def dispatch_run(
    *,
    worker: str,
    now_fn: Callable[[], datetime] = timezone.now,
    limit_seconds: float | None = None,
    batch_size: int | None = None,
    max_batches: int | None = None,
) -> DispatchStats:
    """Claim and process batches until none is due, `limit_seconds` (default MESSAGING_DISPATCH_SECONDS)
    have passed, or `max_batches` were done. `now_fn` is asked once per batch (tests freeze it)."""
    budget = dispatch_budget() if limit_seconds is None else limit_seconds
    size = batch_size or batch_size_default()
    stats = DispatchStats(worker=worker)
    started = time.monotonic()
    while time.monotonic() - started < budget and (max_batches is None or stats.batches < max_batches):
        now = now_fn()
        claim = messages_claim(now=now, batch_size=size)
        if not claim.messages:
            break
        batch = batch_process(claim=claim, now=now)
        stats.batches += 1
        stats.totals.add(batch)
        # A long loop inside one task: give back a connection the database closed meanwhile (never inside
        # a caller's transaction, where Django would take autocommit being off for a broken connection).
        if not connection.in_atomic_block:
            close_old_connections()
    stats.seconds = time.monotonic() - started
    if stats.batches:
        t = stats.totals
        logger.info(
            "dispatch %s: %s batches in %.1fs: claimed %s, sent %s, retried %s, deferred %s, suppressed %s, "
            "failed %s, unknown %s, lost %s",
            worker,
            stats.batches,
            stats.seconds,
            t.claimed,
            t.sent,
            t.retried,
            t.deferred,
            t.suppressed,
            t.failed,
            t.unknown,
            t.lost,
        )
    return stats
