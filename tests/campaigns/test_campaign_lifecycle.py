"""A campaign's life: submitted, approved by someone with the permission (and the audit history), sent
through the outbox with pause, resume and cancel mid-send, settled as sent or partly delivered, with the
progress counts; "9:00 local" due times across zones, one with summer time."""

from __future__ import annotations

from datetime import date, datetime, time
from zoneinfo import ZoneInfo

import pytest
from django.core.exceptions import PermissionDenied
from django.utils import timezone

from campaigns.campaign_selectors import campaign_run_progress
from campaigns.models import CampaignRun, Message
from campaigns.services import campaigns as svc
from campaigns.services.dispatch import dispatch_run
from tests.campaigns.campaign_helpers import campaign_make, customers_sql, run_make, segment_make
from tests.campaigns.staff_helpers import staff_user

pytestmark = pytest.mark.django_db


@pytest.fixture
def started(db, pipeline, settings):
    # A provider that delivers whatever it is given (no dedupe by idempotency key): a message sent twice
    # is counted twice.
    settings.MESSAGING_PROVIDERS["sms"]["OPTIONS"] = {"supports_idempotency": False}
    customers_sql(300)
    campaign = campaign_make(segment=segment_make(), holdout="0", status="scheduled")  # as approved
    now = timezone.now()
    run = run_make(campaign, now=now)
    svc.campaign_run_start(run=run, now=now)
    campaign.refresh_from_db()
    run.refresh_from_db()
    return campaign, run


def _drain(max_batches=None, batch_size=50):
    return dispatch_run(worker="test", limit_seconds=60, batch_size=batch_size, max_batches=max_batches)


def _user(role, django_user_model):
    return staff_user(role, username=f"u-{role}")


def test_a_marketer_submits_and_only_a_manager_approves_which_schedules_the_run(db, django_user_model):
    customers_sql(5)
    marketer = _user("marketer", django_user_model)
    manager = _user("marketing_manager", django_user_model)
    campaign = campaign_make(segment=segment_make(), created_by=marketer, schedule_kind="now")
    now = timezone.now()
    svc.campaign_submit(campaign=campaign, by=marketer)
    with pytest.raises(PermissionDenied):
        svc.campaign_approve(campaign=campaign, by=marketer, now=now)
    campaign = svc.campaign_approve(campaign=campaign, by=manager, now=now)
    assert campaign.status == "scheduled" and campaign.approved_by == manager
    run = CampaignRun.objects.get(campaign=campaign)
    assert (run.occurrence, run.due_at, run.status) == ("once", now, "scheduled")
    with pytest.raises(svc.CampaignError) as refused:
        svc.campaign_approve(campaign=campaign, by=manager, now=now)
    assert "Scheduled" in refused.value.message
    reasons = list(campaign.history.order_by("history_id").values_list("status", "history_change_reason"))
    assert reasons == [("draft", None), ("awaiting_approval", "submitted"), ("scheduled", "approved")]


def test_submit_says_what_is_missing(db):
    campaign = campaign_make(segment=None, weights=(50, 40))
    problems = {p.code for p in svc.campaign_problems(campaign)}
    assert problems == {"no_segment", "weights"}
    with pytest.raises(svc.CampaignError) as refused:
        svc.campaign_submit(campaign=campaign, by=None)
    assert refused.value.message == "Choose the segment to send to."


def test_pause_holds_what_is_queued_resume_sends_the_rest_once_and_the_run_settles_as_sent(started, pipeline):
    campaign, run = started
    _drain(max_batches=2)  # 100 of 300 sent
    now = timezone.now()
    held = svc.campaign_pause(campaign=campaign, now=now)
    assert held == 200
    progress = campaign_run_progress(CampaignRun.objects.get(pk=run.pk))
    assert progress["status"] == "paused" and progress["by_status"] == {"sent": 100, "deferred": 200}
    assert progress["reasons"][0]["text"] == "held: the campaign is paused"
    assert _drain().batches == 0  # nothing is due while paused
    campaign.refresh_from_db()
    svc.campaign_resume(campaign=campaign, now=timezone.now())
    _drain()
    sent = list(Message.objects.filter(occurrence=str(run.pk)).values_list("status", flat=True))
    assert sent.count("sent") == 300
    assert pipeline.deliveries == len(pipeline.delivered) == 300
    run.refresh_from_db()
    assert svc.campaign_run_settle(run=run, now=timezone.now()) == "sent"
    campaign.refresh_from_db()
    assert campaign.status == "sent"
    progress = campaign_run_progress(CampaignRun.objects.get(pk=run.pk))
    assert progress["over"] and progress["percent"] == 100.0 and not progress["partial"]


def test_cancel_mid_send_withdraws_what_is_queued(started, pipeline):
    campaign, run = started
    _drain(max_batches=1)
    withdrawn = svc.campaign_cancel(campaign=campaign, now=timezone.now())
    assert withdrawn == 250
    assert _drain().batches == 0
    progress = campaign_run_progress(CampaignRun.objects.get(pk=run.pk))
    assert progress["by_status"] == {"sent": 50, "cancelled": 250} and progress["status"] == "cancelled"
    assert progress["reasons"][0]["text"] == f"{campaign.name} was cancelled"


def test_a_run_with_failures_is_partly_delivered_never_sent(started, pipeline):
    campaign, run = started
    ids = list(Message.objects.filter(occurrence=str(run.pk)).order_by("id").values_list("id", flat=True)[:7])
    _drain()
    Message.objects.filter(id__in=ids).update(status="failed", reason="provider_rejected")
    run.refresh_from_db()
    assert svc.campaign_run_settle(run=run, now=timezone.now()) == "partial"
    campaign.refresh_from_db()
    assert campaign.status == "partial"
    progress = campaign_run_progress(CampaignRun.objects.get(pk=run.pk))
    assert progress["partial"] and progress["status_label"] == "Partly delivered"
    assert {g["key"]: g["count"] for g in progress["groups"]}["failed"] == 7


def test_a_run_still_sending_is_not_settled(started):
    campaign, run = started
    assert svc.campaign_run_settle(run=run, now=timezone.now()) == "sending"


def test_nine_local_is_due_at_each_zones_own_instant_summer_time_included(db):
    zones = ("Asia/Shanghai", "Europe/London", "America/New_York", "")
    customers_sql(8, zones=zones)
    campaign = campaign_make(segment=segment_make(), holdout="0", local_time=True, send_time=time(9, 0))
    for local_date, london_offset in ((date(2027, 7, 1), 1), (date(2027, 12, 1), 0)):
        due = datetime.combine(local_date, time(1, 0), tzinfo=ZoneInfo("UTC"))
        run = run_make(campaign, now=due, occurrence=str(local_date), local_date=local_date)
        svc.campaign_run_start(run=run, now=timezone.now())
        got = dict(
            Message.objects.filter(occurrence=str(run.pk)).values_list("customer__time_zone", "due_at")
        )
        for zone in zones:
            expected = datetime.combine(local_date, time(9, 0), tzinfo=ZoneInfo(zone or "Asia/Shanghai"))
            assert got[zone] == expected, zone
        assert got["Europe/London"].astimezone(ZoneInfo("UTC")).hour == 9 - london_offset
