import uuid

import pytest
from django.contrib.auth.models import Group

pytestmark = pytest.mark.celery_worker_include("tests.integration.worker_probe_tasks")


def test_worker_takes_tasks_from_the_private_broker_and_writes_to_the_test_database(celery_worker_process):
    name = f"probe-{uuid.uuid4().hex}"

    result = celery_worker_process.app.send_task("tests.worker_probe.create_group", args=[name])

    celery_worker_process.wait_for_log(rf"Task tests\.worker_probe\.create_group\[{result.id}\] succeeded")
    assert Group.objects.filter(name=name).exists()
    assert not list((celery_worker_process.broker_dir / "queue").iterdir()), "the message was not consumed"
