"""The Celery tasks are thin wrappers: each runs its service end to end (called in-process here), and the
beat schedule settings can import names only tasks that exist."""

from datetime import timedelta

import pytest
from django.utils import timezone

from loyalty import tasks
from loyalty.models import LoyaltyAccount
from tests.loyalty.ledger_helpers import customer_make, order_make, programme_setup

pytestmark = pytest.mark.django_db


def test_beat_schedule_names_only_registered_tasks():
    registered = {getattr(tasks, name).name for name in dir(tasks) if hasattr(getattr(tasks, name), "delay")}
    assert {entry["task"] for entry in tasks.LOYALTY_BEAT_SCHEDULE.values()} <= registered


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
