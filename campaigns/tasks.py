"""Thin Celery tasks of the delivery pipeline; beat entries in campaigns/schedule.py. Services are imported
inside the tasks so that settings can import this module before Django's apps are loaded."""

from celery import shared_task


@shared_task(name="campaigns.tasks.dispatch_wake", ignore_result=True)
def dispatch_wake() -> None:
    """Drain due messages for up to MESSAGING_DISPATCH_SECONDS (campaigns.services.dispatch). Harmless when
    repeated or run on several workers at once: each batch is claimed by one worker only."""
    from campaigns.services.dispatch import dispatch_run
    from crm.services.leases import lease_holder_name

    dispatch_run(worker=lease_holder_name())


@shared_task(name="campaigns.tasks.outbox_reap", ignore_result=True)
def outbox_reap() -> None:
    """Take back the messages whose worker died mid-batch (campaigns.services.outbox.messages_reap)."""
    from django.utils import timezone

    from campaigns.services.outbox import messages_reap

    messages_reap(now=timezone.now())


@shared_task(name="campaigns.tasks.campaign_run_start", ignore_result=True, acks_late=True)
def campaign_run_start(run_id: int) -> None:
    """Start one campaign run (campaigns.services.campaigns): leased and idempotent, so a redelivered or
    retried task sends nothing twice."""
    from django.utils import timezone

    from campaigns.models import CampaignRun
    from campaigns.services.campaigns import campaign_run_start as start

    run = CampaignRun.objects.filter(pk=run_id).first()
    if run is not None:
        start(run=run, now=timezone.now())


@shared_task(name="campaigns.tasks.campaign_schedule_dispatch", ignore_result=True)
def campaign_schedule_dispatch() -> None:
    """The one beat task of campaigns: write the runs of due occurrences, then start due runs and settle
    finished ones (campaigns.services.occurrences). Harmless when repeated: an occurrence is unique per
    campaign and a start is leased."""
    from django.utils import timezone

    from campaigns.services.occurrences import campaign_occurrences_dispatch

    campaign_occurrences_dispatch(now=timezone.now())


@shared_task(name="campaigns.tasks.campaign_winners_pick", ignore_result=True)
def campaign_winners_pick() -> None:
    """Pick the winner of every run whose test has waited long enough, and send it to the rest
    (campaigns.services.experiments)."""
    from django.utils import timezone

    from campaigns.services.experiments import campaign_winners_pick_due

    campaign_winners_pick_due(now=timezone.now())


@shared_task(name="campaigns.tasks.campaign_reports_refresh", ignore_result=True)
def campaign_reports_refresh() -> None:
    """Recompute the stored reports of runs whose attribution window is open (campaigns.services.reports)."""
    from django.utils import timezone

    from campaigns.services.reports import campaign_reports_refresh_due

    campaign_reports_refresh_due(now=timezone.now())
