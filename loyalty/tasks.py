"""Thin Celery tasks: each calls one service; the services are idempotent, so a redelivery is harmless.

The beat entries are in loyalty/schedule.py (LOYALTY_BEAT_SCHEDULE), which config/settings.py merges into
CELERY_BEAT_SCHEDULE (config/ wires the apps together, DESIGN.md §4). Services are imported inside the tasks so that settings
can import this module before Django's apps are loaded."""

from datetime import timedelta

from celery import shared_task


@shared_task(name="loyalty.tasks.accrue_events", ignore_result=True)
def accrue_events() -> None:
    """Read the behaviour-event log after the cursor: order points, refund reversals, event bonuses."""
    from django.utils import timezone

    from loyalty.services.accrual import events_process_all

    events_process_all(now=timezone.now())


@shared_task(name="loyalty.tasks.accrual_sweep", ignore_result=True)
def accrual_sweep(days: int = 3) -> None:
    """Accrue any recent order that has no earning yet (the safety net of services.accrual.accrual_sweep)."""
    from django.utils import timezone

    from loyalty.services import accrual

    now = timezone.now()
    accrual.accrual_sweep(since=now - timedelta(days=days), now=now)


@shared_task(name="loyalty.tasks.release_pending", ignore_result=True)
def release_pending() -> None:
    from django.utils import timezone

    from loyalty.services.lifecycle import points_release_due

    points_release_due(now=timezone.now())


@shared_task(name="loyalty.tasks.expiring_notices", ignore_result=True)
def expiring_notices() -> None:
    from django.utils import timezone

    from loyalty.services.lifecycle import expiring_notices_emit

    expiring_notices_emit(now=timezone.now())


@shared_task(name="loyalty.tasks.expire_points", ignore_result=True)
def expire_points() -> None:
    from django.utils import timezone

    from loyalty.services.lifecycle import points_expire_due

    points_expire_due(now=timezone.now())


@shared_task(name="loyalty.tasks.expiry_run_resume", ignore_result=True)
def expiry_run_resume(run_id: int) -> None:
    """Carry on with an expiry run whose worker died (the lease reaper queues this)."""
    from loyalty.services.lifecycle import points_expiry_resume

    points_expiry_resume(run_id=run_id)


@shared_task(name="loyalty.tasks.tier_reviews", ignore_result=True)
def tier_reviews() -> None:
    from django.utils import timezone

    from loyalty.services.tiers import tier_reviews_run

    tier_reviews_run(now=timezone.now())


@shared_task(name="loyalty.tasks.birthday_bonuses", ignore_result=True)
def birthday_bonuses() -> None:
    from django.utils import timezone

    from loyalty.services.accrual import birthday_bonuses_award

    birthday_bonuses_award(now=timezone.now())


@shared_task(name="loyalty.tasks.bulk_adjustment_apply", ignore_result=True)
def bulk_adjustment_apply(batch_id: int) -> None:
    from loyalty.services.bulk_adjust import batch_apply

    batch_apply(batch_id=batch_id)


@shared_task(name="loyalty.tasks.bulk_adjustments_resume", ignore_result=True)
def bulk_adjustments_resume() -> None:
    """Queue again the bulk adjustments whose worker died mid-batch. crm's lease reaper does it for every
    leased job; kept for a beat schedule stored before that (django-celery-beat keeps its rows)."""
    from loyalty.services.bulk_adjust import batches_resume

    batches_resume()
