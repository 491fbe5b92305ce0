"""The automatic winner: a run with a test fraction starts in phase "test" (only the test recipients get
their variant); once `winner_wait` has passed since it started, one beat-woken pass picks the winner on
the campaign's metric (campaigns.experiment_statistics.winner_decide: A is kept unless a challenger clearly beats
it, or when an arm is smaller than the minimum sample), records the decision with its numbers on the run,
and queues the winner for the rest (campaign_recipients_enqueue, phase "rest").

The decision and the enqueue commit together under the run's row lock, so a second pass (a redelivered
task, two beats racing) finds `winner_key` set and does nothing: the rest is sent once."""

from __future__ import annotations

import logging
from datetime import datetime

from django.db import transaction
from django.db.models import DateTimeField, ExpressionWrapper, F, Value

from campaigns import experiment_statistics as statistics
from campaigns.models import CampaignRun, RunPhase, RunStatus
from campaigns.reports import campaign_run_report
from campaigns.services.campaigns import campaign_recipients_enqueue

logger = logging.getLogger(__name__)

# A run whose test is still running may be paused; the decision can be taken then too (the enqueue
# withdraws the rest's messages until the run is resumed).
_OPEN = (RunStatus.SENDING, RunStatus.PAUSED)


def _test_started(run: CampaignRun) -> datetime:
    return run.started_at or run.due_at


def winner_due_at(run: CampaignRun) -> datetime | None:
    """When the run's winner is due: its test's start plus the campaign's wait; None without a wait."""
    wait = run.campaign.winner_wait
    if wait is None:
        return None
    return _test_started(run) + wait


def _arms(run: CampaignRun, metric: str) -> list[statistics.ArmOutcome]:
    report = campaign_run_report(run)
    metric_field = {"opened": "opened", "clicked": "clicked", "converted": "converted"}.get(metric)
    return [
        statistics.ArmOutcome(
            key=arm.key,
            n=arm.recipients,
            successes=getattr(arm, metric_field) if metric_field else 0,
            total=arm.revenue,
            total_of_squares=arm.revenue_sq,
        )
        for arm in report.arms
        if arm.phase == RunPhase.TEST and not arm.is_holdout and arm.key
    ]


def campaign_winner_pick(*, run: CampaignRun, now: datetime) -> dict | None:
    """Decide the run's winner and queue it for the rest; returns the decision, or None when the run is
    not waiting for one (no test, already decided, cancelled, not due yet). Idempotent."""
    run = CampaignRun.objects.select_related("campaign").get(pk=run.pk)
    due = winner_due_at(run)
    if run.phase != RunPhase.TEST or run.winner_key or run.status not in _OPEN or due is None or due > now:
        return None
    campaign = run.campaign
    variants = sorted(campaign.variants.values_list("key", flat=True))
    # The figures are read before the lock: the report is one long read, and a click arriving meanwhile
    # changes nothing a decision taken a second earlier would not have missed too.
    arms = _arms(run, campaign.winner_metric)
    present = {arm.key for arm in arms}
    for key in variants:  # a variant nobody was assigned to still takes part, with n = 0
        if key not in present:
            arms.append(statistics.ArmOutcome(key=key, n=0))
    decision = statistics.winner_decide(
        arms=arms,
        metric=campaign.winner_metric,
        min_sample=campaign.winner_min_sample,
        default_key=variants[0],
    )
    decision["decided_at"] = now.isoformat()
    decision["test_started_at"] = _test_started(run).isoformat()
    with transaction.atomic():
        locked = CampaignRun.objects.select_for_update().get(pk=run.pk)
        if locked.winner_key or locked.phase != RunPhase.TEST or locked.status not in _OPEN:
            return None  # another pass decided first, or the run was cancelled meanwhile
        CampaignRun.objects.filter(pk=run.pk).update(
            winner_key=decision["winner_key"],
            winner_decided_at=now,
            winner_due_at=due,
            winner_decision=decision,
        )
        locked.refresh_from_db()
        decision["rest_enqueued"] = campaign_recipients_enqueue(
            run=locked, phase=RunPhase.REST, variant_key=decision["winner_key"], now=now
        )
        CampaignRun.objects.filter(pk=run.pk).update(winner_decision=decision)
    logger.info(
        "campaign run %s: winner %s (%s), %s messages for the rest",
        run.pk,
        decision["winner_key"],
        decision["reason"],
        decision["rest_enqueued"],
    )
    return decision


def campaign_winners_pick_due(*, now: datetime, limit: int = 20) -> list[int]:
    """The beat's pass: every run in its test phase whose wait is over gets its winner. Returns their ids."""
    due = (
        CampaignRun.objects.filter(
            phase=RunPhase.TEST, winner_key="", status__in=_OPEN, started_at__isnull=False
        )
        .exclude(campaign__winner_wait__isnull=True)
        .filter(
            started_at__lte=ExpressionWrapper(
                Value(now, output_field=DateTimeField()) - F("campaign__winner_wait"),
                output_field=DateTimeField(),
            )
        )
        .order_by("started_at", "pk")
        .values_list("pk", flat=True)[:limit]
    )
    picked = []
    for pk in due:
        if campaign_winner_pick(run=CampaignRun(pk=pk), now=now) is not None:
            picked.append(pk)
    return picked
