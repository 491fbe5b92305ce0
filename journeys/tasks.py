from celery import shared_task


@shared_task(name="journeys.tasks.dispatch_wake", ignore_result=True)
def dispatch_wake() -> None:
    """Read the event log and advance due enrollments (journeys.services.engine.dispatch_run). Harmless
    when repeated or run on several workers at once: each batch is claimed by one worker only."""
    from crm.services.leases import lease_holder_name
    from journeys.services.engine import dispatch_run

    dispatch_run(worker=lease_holder_name())


@shared_task(name="journeys.tasks.version_migrations_continue", ignore_result=True)
def version_migrations_continue() -> None:
    """Move the customers in flight that a publish left behind because a dispatcher held them then
    (journeys.services.versions). Harmless when repeated: a moved enrollment is never found again."""
    from journeys.services.versions import version_migrations_continue as migrations_continue

    migrations_continue()


@shared_task(name="journeys.tasks.time_triggers_wake", ignore_result=True)
def time_triggers_wake() -> None:
    """Enter the customers whose time-based entry is due (journeys.services.time_triggers). Harmless when
    repeated or run twice at once: each journey's pass holds its state row's lock, and every entry has an
    occurrence key."""
    from django.utils import timezone

    from journeys.services.time_triggers import time_triggers_dispatch

    time_triggers_dispatch(now=timezone.now())
