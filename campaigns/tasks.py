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
