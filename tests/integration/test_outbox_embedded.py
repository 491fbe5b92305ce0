"""The embedded default sends: SQLite (IMMEDIATE transactions instead of SKIP LOCKED), the file-system
broker and a real Celery worker woken by the beat entry's task, into a console provider (the stand-in of
tests/campaigns/pipeline_doubles.py until the providers helper's console provider is merged)."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
import uuid

import pytest
from celery import Celery

from tests.campaigns.pipeline_doubles import ConsoleDouble  # noqa: F401 (the worker imports it by name)
from tests.conftest import REPO_ROOT, CeleryWorker, _filesystem_broker_options
from tests.integration.test_embedded_default import _manage, embedded_env  # noqa: F401

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


def test_the_embedded_default_sends_queued_messages_to_the_console(embedded_env, tmp_path):  # noqa: F811
    env = dict(embedded_env)
    env["OUTBOX_TEST_PROVIDERS"] = json.dumps(
        {"sms": {"BACKEND": "tests.campaigns.pipeline_doubles.ConsoleDouble", "CODE": "console"}}
    )
    _manage(env, "migrate", "--noinput", "--verbosity", "0")
    _manage(env, "shell", "-c", SEED)
    broker_dir = tmp_path / "broker"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "config",
            "worker",
            "--pool=solo",
            "-l",
            "info",
            "--without-mingle",
            "--without-gossip",
            "--without-heartbeat",
            "-n",
            f"embedded-{uuid.uuid4().hex[:8]}@%h",
            "-I",
            "tests.campaigns.pipeline_doubles_installed",
        ],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        errors="replace",
        start_new_session=True,
    )
    worker = CeleryWorker(app=None, broker_dir=broker_dir, process=process)
    sender = Celery("embedded-outbox", broker="filesystem://")
    sender.conf.broker_transport_options = _filesystem_broker_options(broker_dir)
    db = sqlite3.connect(tmp_path / "db.sqlite3")
    try:
        worker.wait_for_log(r"\bready\.", timeout=60)
        deadline = time.monotonic() + 90
        while db.execute("SELECT count(*) FROM campaigns_message WHERE status <> 'sent'").fetchone()[0]:
            assert time.monotonic() < deadline, worker.output()[-3000:]
            result = sender.send_task("campaigns.tasks.dispatch_wake")
            worker.wait_for_log(rf"Task campaigns\.tasks\.dispatch_wake\[{result.id}\] succeeded", timeout=60)
        assert worker.output().count("[console sms] to=+8613900000") == 5
        rows = db.execute("SELECT status, provider, attempts FROM campaigns_message").fetchall()
        assert rows == [("sent", "console", 1)] * 5
    finally:
        worker.stop()
        db.close()
