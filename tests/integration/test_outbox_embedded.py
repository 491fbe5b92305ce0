"""The embedded default sends: SQLite (IMMEDIATE transactions instead of SKIP LOCKED), the file-system
broker and a real Celery worker woken by the beat entry's task, into the console provider
(campaigns.providers.console.ConsoleProvider, which logs each message: the worker's output)."""

from __future__ import annotations

import json
import re
import sqlite3
import time

import pytest

from tests.integration.conftest import embedded_manage, embedded_sender, embedded_worker

pytestmark = [pytest.mark.embedded, pytest.mark.integration]

SEED = """
from django.utils import timezone
from campaigns.models import MessageTemplate
from campaigns.services.outbox import MessageRequest, messages_enqueue
from crm.models import Customer
t = MessageTemplate.objects.create(code="hello", name="Hello", channel="sms")
cs = [Customer.objects.create(external_id=f"E{n}", name=f"n{n}", phone=f"+8613900000{n:03d}") for n in range(5)]
r = messages_enqueue(rows=[MessageRequest(customer_id=c.pk, channel="sms", template_id=t.pk, source_kind="campaign",
    source_ref="embedded", occurrence="1") for c in cs], now=timezone.now())
again = messages_enqueue(rows=[MessageRequest(customer_id=c.pk, channel="sms", template_id=t.pk, source_kind="campaign",
    source_ref="embedded", occurrence="1") for c in cs], now=timezone.now())
assert r.created == 5 and len(again.existing_ids) == 5, (r, again)
"""


def test_the_embedded_default_sends_queued_messages_to_the_console(embedded_env, tmp_path):
    env = dict(embedded_env)
    env["OUTBOX_TEST_PROVIDERS"] = json.dumps(
        {"sms": {"BACKEND": "campaigns.providers.console.ConsoleProvider", "CODE": "console"}}
    )
    embedded_manage(env, "migrate", "--noinput", "--verbosity", "0")
    embedded_manage(env, "shell", "-c", SEED)
    broker_dir = tmp_path / "broker"
    worker = embedded_worker(env, broker_dir, include=["tests.campaigns.pipeline_doubles_installed"])
    sender = embedded_sender("embedded-outbox", broker_dir)
    db = sqlite3.connect(tmp_path / "db.sqlite3")
    try:
        worker.wait_for_log(r"\bready\.", timeout=60)
        deadline = time.monotonic() + 90
        while db.execute("SELECT count(*) FROM campaigns_message WHERE status <> 'sent'").fetchone()[0]:
            assert time.monotonic() < deadline, worker.output()[-3000:]
            result = sender.send_task("campaigns.tasks.dispatch_wake")
            worker.wait_for_log(rf"Task campaigns\.tasks\.dispatch_wake\[{result.id}\] succeeded", timeout=60)
        assert len(re.findall(r"\[sms\] #\d+ to \+8613900000\d{3} ", worker.output())) == 5
        rows = db.execute("SELECT status, provider, attempts FROM campaigns_message").fetchall()
        assert rows == [("sent", "console", 1)] * 5
    finally:
        worker.stop()
        db.close()
