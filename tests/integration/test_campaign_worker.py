"""A campaign through a real Celery worker: the start task (sent twice) queues each message once, and the
dispatcher's wakes send it; pause mid-send stops what is queued, resume sends the rest, cancel withdraws
it. Each wake sends one batch (MESSAGING_DISPATCH_SECONDS ~ 0), so "mid-send" is a count of wakes, not a
race with the clock. The sink records to a file shared with the worker and does not dedupe, so a message
sent twice would be seen twice."""

from __future__ import annotations

import json
import time

import pytest
from django.db.models import Count
from django.utils import timezone

from campaigns.models import Campaign, CampaignRun, Message
from campaigns.services import campaigns as svc
from tests.campaigns.campaign_helpers import campaign_make, customers_sql, run_make, segment_make

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

BATCH = 20
START = "campaigns.tasks.campaign_run_start"
WAKE = "campaigns.tasks.dispatch_wake"


@pytest.fixture
def sink_file(tmp_path, monkeypatch):
    path = tmp_path / "delivered.jsonl"
    providers = {
        "sms": {
            "BACKEND": "campaigns.providers.sink.SinkProvider",
            "OPTIONS": {"record_path": str(path), "supports_idempotency": False},
        }
    }
    monkeypatch.setenv("OUTBOX_TEST_PROVIDERS", json.dumps(providers))
    monkeypatch.setenv("MESSAGING_BATCH_SIZE", str(BATCH))
    monkeypatch.setenv("MESSAGING_DISPATCH_SECONDS", "0.001")
    return path


def _task(worker, name, *args, timeout=120):
    result = worker.app.send_task(name, args=list(args))
    worker.wait_for_log(rf"Task {name}\[{result.id}\] succeeded", timeout=timeout)


def _delivered(path):
    if not path.exists():
        return []
    return [json.loads(line)["key"] for line in path.read_text().splitlines()]


def _status(run):
    return dict(
        Message.objects.filter(occurrence=str(run.pk))
        .values_list("status")
        .annotate(n=Count("id"))
        .values_list("status", "n")
    )


@pytest.mark.celery_worker_include("tests.campaigns.pipeline_doubles_installed")
def test_pause_resume_and_cancel_mid_send_with_a_real_worker(sink_file, celery_worker_process):
    worker = celery_worker_process
    customers_sql(100)
    customers_sql(60, prefix="X", city="北京")
    segment = segment_make()
    campaign = campaign_make(segment=segment, holdout="0", status="scheduled")
    run = run_make(campaign, now=timezone.now())
    _task(worker, START, run.pk)
    _task(worker, START, run.pk)  # sent twice: the second finds the run started
    assert Message.objects.filter(occurrence=str(run.pk)).count() == 100

    _task(worker, WAKE)
    assert len(_delivered(sink_file)) == BATCH  # mid-send
    svc.campaign_pause(campaign=Campaign.objects.get(pk=campaign.pk), now=timezone.now())
    _task(worker, WAKE)
    assert len(_delivered(sink_file)) == BATCH
    svc.campaign_resume(campaign=Campaign.objects.get(pk=campaign.pk), now=timezone.now())
    deadline = time.monotonic() + 120
    while Message.objects.filter(occurrence=str(run.pk), status="queued").exists():
        assert time.monotonic() < deadline, worker.output()[-3000:]
        _task(worker, WAKE)
    assert _status(run) == {"sent": 100}
    keys = _delivered(sink_file)
    assert len(keys) == len(set(keys)) == 100

    # Cancel mid-send: another campaign, one batch out, the rest withdrawn and never sent.
    other = campaign_make(
        segment=segment_make(
            "北京",
            {"op": "and", "conditions": [{"field": "profile.city", "operator": "eq", "value": "北京"}]},
        ),
        holdout="0",
        status="scheduled",
        name="北京快闪",
    )
    other_run = run_make(other, now=timezone.now())
    _task(worker, START, other_run.pk)
    _task(worker, WAKE)
    svc.campaign_cancel(campaign=Campaign.objects.get(pk=other.pk), now=timezone.now())
    _task(worker, WAKE)
    _task(worker, WAKE)
    assert _status(other_run) == {"sent": BATCH, "cancelled": 60 - BATCH}
    assert len(_delivered(sink_file)) == 100 + BATCH

    # The beat's pass settles the first run as sent.
    _task(worker, "campaigns.tasks.campaign_schedule_dispatch")
    assert CampaignRun.objects.get(pk=run.pk).status == "sent"
    assert Campaign.objects.get(pk=campaign.pk).status == "sent"
