"""A real Celery worker drains the outbox when the beat entry's task wakes it (campaigns/schedule.py),
through the real stages (the rules screen, the sandboxed render of a demo template, tracking) into the
sink provider recording to a file (tests/integration/providers_from_env.py configures it)."""

from __future__ import annotations

import json
import time

import pytest
from django.conf import settings as django_settings
from django.utils import timezone

from campaigns.demo_templates import demo_templates_seed
from campaigns.models import Message, MessageTemplate
from campaigns.services import outbox
from tests.campaigns.outbox_helpers import requests_for
from tests.campaigns.rules.helpers import customer
from tests.integration.conftest import zone_at_local_hour

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def sink_file(tmp_path, monkeypatch):
    path = tmp_path / "delivered.jsonl"
    providers = {
        "sms": {"BACKEND": "campaigns.providers.sink.SinkProvider", "OPTIONS": {"record_path": str(path)}}
    }
    monkeypatch.setenv("MESSAGING_TEST_PROVIDERS", json.dumps(providers))
    return path


@pytest.mark.celery_worker_include("tests.integration.providers_from_env")
def test_a_celery_worker_woken_by_the_beat_task_drains_the_queue_once(sink_file, celery_worker_process):
    demo_templates_seed()
    template = MessageTemplate.objects.get(code="birthday_wish.sms")
    # Daytime where the customers are, so that nothing waits for quiet hours to end.
    zone = str(zone_at_local_hour(timezone.now(), 13))
    customers = [customer(tz=zone, consents=("sms",)) for _ in range(120)]
    ids = outbox.messages_enqueue(rows=requests_for(customers, template), now=timezone.now()).created_ids
    task = django_settings.CELERY_BEAT_SCHEDULE["campaigns-dispatch"]["task"]
    deadline = time.monotonic() + 120
    while Message.objects.exclude(status="sent").exists():
        assert time.monotonic() < deadline, (
            list(Message.objects.exclude(status="sent").values_list("status", "reason")[:5]),
            celery_worker_process.output()[-3000:],
        )
        result = celery_worker_process.app.send_task(task)
        celery_worker_process.wait_for_log(rf"Task {task}\[{result.id}\] succeeded", timeout=60)
    keys = [int(json.loads(line)["key"]) for line in sink_file.read_text().splitlines()]
    assert sorted(keys) == sorted(ids)
