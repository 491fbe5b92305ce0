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


@shared_task(name="journeys.tasks.winback_nightly", ignore_result=True)
def winback_nightly() -> None:
    """Tonight's run of every active win-back programme (the PeriodicTask "winback-nightly")."""
    from journeys.services.winback import winback_nightly as run_all

    run_all()


@shared_task(name="journeys.tasks.winback_programme_run", ignore_result=True)
def winback_programme_run(programme_id: int) -> None:
    """One programme's run for tonight, started from the admin."""
    from journeys.models import WinbackProgramme
    from journeys.services.winback import winback_outcomes_refresh, winback_run

    programme = WinbackProgramme.objects.get(pk=programme_id)
    winback_outcomes_refresh(programme=programme)
    winback_run(programme=programme)


@shared_task(name="journeys.tasks.winback_run_resume", ignore_result=True)
def winback_run_resume(run_id: int) -> None:
    """Carry on a run whose worker died (queued by the lease reaper)."""
    from journeys.services.winback import winback_run_resume as resume

    resume(run_id)


@shared_task(name="journeys.tasks.winback_demo", ignore_result=True)
def winback_demo() -> None:
    """The win-back demo story, started from the admin's button."""
    import logging

    from journeys.winback_demo import winback_demo as run_demo

    run_demo(out=logging.getLogger(__name__).warning)
