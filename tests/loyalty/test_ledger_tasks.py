"""The Celery tasks are thin wrappers: each runs its service end to end (called in-process here), and the
beat schedule the project's Celery app runs names only loyalty tasks that exist."""

from datetime import timedelta

import pytest
from django.utils import timezone

from loyalty import tasks
from loyalty.models import LoyaltyAccount
from tests.loyalty.ledger_helpers import customer_make, order_make, programme_setup

pytestmark = pytest.mark.django_db


LOYALTY_PERIODIC_TASKS = {
    "loyalty.tasks.accrue_events",
    "loyalty.tasks.accrual_sweep",
    "loyalty.tasks.release_pending",
    "loyalty.tasks.expiring_notices",
    "loyalty.tasks.expire_points",
    "loyalty.tasks.tier_reviews",
    "loyalty.tasks.birthday_bonuses",
}


def _effective_loyalty_entries() -> dict:
    """The loyalty entries of the schedule the project's Celery app (config/celery.py) hands to beat."""
    from config.celery import app

    return {
        name: entry for name, entry in app.conf.beat_schedule.items() if entry["task"].startswith("loyalty.")
    }


def test_beat_schedule_names_only_registered_tasks():
    from config.celery import app

    app.loader.import_default_modules()  # the worker's autodiscovery, which registers the tasks
    scheduled = {entry["task"] for entry in _effective_loyalty_entries().values()}
    assert scheduled == LOYALTY_PERIODIC_TASKS
    assert scheduled <= set(app.tasks)


# Transactional: the scheduler closes stale connections as beat does, which a test transaction cannot survive.
@pytest.mark.django_db(transaction=True)
def test_database_scheduler_installs_every_loyalty_entry():
    from django_celery_beat.models import PeriodicTask
    from django_celery_beat.schedulers import DatabaseScheduler

    from config.celery import app

    entries = _effective_loyalty_entries()
    DatabaseScheduler(app=app, lazy=True).setup_schedule()

    installed = dict(PeriodicTask.objects.filter(name__in=entries).values_list("name", "task"))
    assert installed == {name: entry["task"] for name, entry in entries.items()}


def test_tasks_run_their_services():
    programme_setup(return_window_days=0)
    customer = customer_make()
    order_make(customer, total="88", placed_at=timezone.now() - timedelta(minutes=5))
    from crm.models import Event

    Event.objects.update(received_at=timezone.now() - timedelta(minutes=1))

    tasks.accrue_events()
    for task in (
        tasks.accrual_sweep,
        tasks.release_pending,
        tasks.expiring_notices,
        tasks.expire_points,
        tasks.tier_reviews,
        tasks.birthday_bonuses,
    ):
        task()

    assert LoyaltyAccount.objects.get(customer=customer).available == 88
