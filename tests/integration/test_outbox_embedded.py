"""The embedded default sends: SQLite (IMMEDIATE transactions instead of SKIP LOCKED), the file-system
broker and a real Celery worker woken by the beat entry's task, through the real stages (the rules
screen, the sandboxed render of a demo template, tracking) into the console provider that
config/settings.py configures for SMS (campaigns.providers.console.ConsoleProvider, which logs each
message: the worker's output)."""

from __future__ import annotations

import re
import sqlite3
import time

import pytest

from tests.integration.conftest import embedded_manage, embedded_sender, embedded_worker

pytestmark = [pytest.mark.embedded, pytest.mark.integration]

# Daytime where the customers are (a zone chosen from the clock), so that quiet hours hold nothing back.
SEED = """
from django.utils import timezone
from campaigns.demo_templates import demo_templates_seed
from campaigns.models import MessageTemplate
from campaigns.services.outbox import MessageRequest, messages_enqueue
from crm.models import Consent, Customer
from tests.integration.conftest import zone_at_local_hour
now = timezone.now()
demo_templates_seed()
t = MessageTemplate.objects.get(code="birthday_wish.sms")
zone = str(zone_at_local_hour(now, 13))
cs = [Customer.objects.create(external_id=f"E{n}", name=f"n{n}", phone=f"+8613900000{n:03d}", time_zone=zone)
    for n in range(5)]
Consent.objects.bulk_create([Consent(customer=c, channel="sms", status="opted_in", changed_at=now) for c in cs])
rows = [MessageRequest(customer_id=c.pk, channel="sms", template_id=t.pk, source_kind="campaign",
    source_ref="embedded", occurrence="1") for c in cs]
r = messages_enqueue(rows=rows, now=now)
again = messages_enqueue(rows=rows, now=timezone.now())
assert r.created == 5 and len(again.existing_ids) == 5, (r, again)
"""


def test_the_embedded_default_sends_queued_messages_to_the_console(embedded_env, tmp_path):
    env = embedded_env
    embedded_manage(env, "migrate", "--noinput", "--verbosity", "0")
    embedded_manage(env, "shell", "-c", SEED)
    broker_dir = tmp_path / "broker"
    worker = embedded_worker(env, broker_dir)
    sender = embedded_sender("embedded-outbox", broker_dir)
    db = sqlite3.connect(tmp_path / "db.sqlite3")
    try:
        worker.wait_for_log(r"\bready\.", timeout=60)
        deadline = time.monotonic() + 90
        while db.execute("SELECT count(*) FROM campaigns_message WHERE status <> 'sent'").fetchone()[0]:
            assert time.monotonic() < deadline, (
                db.execute("SELECT status, reason FROM campaigns_message").fetchall(),
                worker.output()[-3000:],
            )
            result = sender.send_task("campaigns.tasks.dispatch_wake")
            worker.wait_for_log(rf"Task campaigns\.tasks\.dispatch_wake\[{result.id}\] succeeded", timeout=60)
        output = worker.output()
        assert len(re.findall(r"\[sms\] #\d+ to \+8613900000\d{3} ", output)) == 5
        assert output.count("生日快乐") == 5 and output.count("回T退订") == 5  # rendered, with the opt-out
        rows = db.execute("SELECT status, provider, attempts FROM campaigns_message").fetchall()
        assert rows == [("sent", "sms", 1)] * 5
    finally:
        worker.stop()
        db.close()
