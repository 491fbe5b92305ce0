"""A task only the worker-fixture test loads into the worker (``celery_worker_include``).

It writes a row, so the test can see that the worker reached the test database and not another one.
"""

from celery import shared_task
from django.contrib.auth.models import Group


@shared_task(name="tests.worker_probe.create_group")
def create_group(name: str) -> None:
    Group.objects.create(name=name)
