"""The beat dispatcher of scheduled campaigns (campaigns/services/occurrences.py) with time frozen: every
call passes its own `now`, so nothing depends on the clock or the machine's speed."""

import datetime as dt
import threading
from zoneinfo import ZoneInfo

import pytest
from django.db import connection
from django.test import TestCase
from django.utils import timezone, translation

from campaigns.models import Campaign, CampaignRun, CampaignStatus, RunStatus
from campaigns.services.calendar import calendar_dates_seed
from campaigns.services.occurrences import (
    MISSED,
    campaign_occurrences_dispatch,
    customer_time_zones_forget,
    run_error_message,
)
from tests.factories import CustomerFactory

SHANGHAI = ZoneInfo("Asia/Shanghai")
pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh_zones():
    # The zones are kept per process for a few minutes (customer_time_zones_cached); each test has its
    # own customers.
    customer_time_zones_forget()
    yield
    customer_time_zones_forget()


def utc(*args):
    return dt.datetime(*args, tzinfo=dt.UTC)


def recurring(**fields):
    defaults = {
        "name": "Weekly",
        "channel": "sms",
        "status": CampaignStatus.SCHEDULED,
        "audience_kind": "everyone",
        "schedule_kind": "recurring",
        "approved_at": utc(2027, 1, 1),
    }
    return Campaign.objects.create(**(defaults | fields))


def dispatch(now):
    # Starts are queued to the worker on commit: captured here, not sent (the tests below that need a
    # start call campaign_run_start themselves, as the worker would).
    with TestCase.captureOnCommitCallbacks(execute=False):
        return campaign_occurrences_dispatch(now=now)


def test_each_weekly_occurrence_is_its_own_run_and_a_rerun_of_an_occurrence_adds_nothing():
    campaign = recurring(recurrence_kind="cron", cron="0 10 * * 1")  # Mondays 10:00 Shanghai
    mondays = [dt.datetime(2027, 1, d, 10, tzinfo=SHANGHAI) for d in (4, 11, 18)]
    assert dispatch(mondays[0] - dt.timedelta(seconds=1)).created == ()
    for monday in mondays:
        result = dispatch(monday + dt.timedelta(seconds=20))
        assert len(result.created) == 1
        run = CampaignRun.objects.get(pk=result.created[0])
        assert (run.due_at, run.status) == (monday, RunStatus.SCHEDULED)
        assert run.occurrence == monday.isoformat(timespec="minutes")
        assert result.started == (run.pk,)
        # The same occurrence dispatched again (beat twice, a retried task): no second run.
        again = dispatch(monday + dt.timedelta(seconds=50))
        assert again.created == ()
        run.status = RunStatus.SENT  # core's start ran and finished it
        run.save(update_fields=["status"])
        assert dispatch(monday + dt.timedelta(minutes=5)).started == ()
    assert list(campaign.runs.order_by("due_at").values_list("occurrence", flat=True)) == [
        "2027-01-04T10:00+08:00",
        "2027-01-11T10:00+08:00",
        "2027-01-18T10:00+08:00",
    ]


def test_two_dispatchers_at_once_write_an_occurrence_once(transactional_db):
    recurring(recurrence_kind="cron", cron="0 10 * * 1")
    now = dt.datetime(2027, 1, 4, 10, 0, 5, tzinfo=SHANGHAI)
    barrier = threading.Barrier(2)
    results, errors = [], []

    def run():
        try:
            barrier.wait(timeout=30)
            results.append(dispatch(now))
        except Exception as exc:  # surfaced below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    assert CampaignRun.objects.count() == 1
    assert sum(len(r.created) for r in results) == 1


def test_nine_local_is_due_at_the_earliest_customer_zone_and_follows_dst():
    for zone in ("America/Los_Angeles", "Europe/London", "Asia/Kolkata"):
        CustomerFactory(time_zone=zone)
    campaign = recurring(
        recurrence_kind="cron", cron="0 9 * * *", local_time=True, approved_at=utc(2027, 3, 12, 12)
    )
    # Kolkata (+05:30) reaches 9:00 on the 13th first, at 03:30 UTC.
    assert dispatch(utc(2027, 3, 13, 3, 29)).created == ()
    result = dispatch(utc(2027, 3, 13, 3, 30, 10))
    run = CampaignRun.objects.get(pk=result.created[0])
    assert (run.occurrence, run.due_at) == ("local-2027-03-13T09:00", utc(2027, 3, 13, 3, 30))
    assert (run.local_date, run.local_time) == (dt.date(2027, 3, 13), dt.time(9))
    # Only Los Angeles left: 9:00 PST is 17:00 UTC, and after the change on the 14th 9:00 PDT is 16:00.
    from crm.models import Customer

    Customer.objects.exclude(time_zone="America/Los_Angeles").delete()
    customer_time_zones_forget()  # as the next process, or five minutes later, would find them
    # The 13th's 9:00 in Los Angeles (17:00 UTC) is the occurrence already sent, not a new one.
    assert dispatch(utc(2027, 3, 13, 17, 0, 10)).created == ()
    assert dispatch(utc(2027, 3, 14, 3, 31)).created == ()
    result = dispatch(utc(2027, 3, 14, 16, 0, 10))
    run = CampaignRun.objects.get(pk=result.created[0])
    assert (run.occurrence, run.due_at) == ("local-2027-03-14T09:00", utc(2027, 3, 14, 16))
    assert campaign.runs.count() == 2


def test_three_days_before_mid_autumn_follows_the_calendar_and_a_staff_correction():
    calendar_dates_seed(years=[2027, 2028])
    campaign = recurring(
        recurrence_kind="calendar", calendar_code="mid_autumn", calendar_offset_days=-3,
        send_time=dt.time(10), approved_at=utc(2027, 6, 1),
    )  # fmt: skip
    # 中秋 2027 is 15 September: 3 days before at 10:00 Shanghai is 12 September 02:00 UTC.
    assert dispatch(utc(2027, 9, 12, 1, 59)).created == ()
    run = CampaignRun.objects.get(pk=dispatch(utc(2027, 9, 12, 2, 0, 30)).created[0])
    assert (run.occurrence, run.due_at) == ("mid_autumn-2027", utc(2027, 9, 12, 2))
    # Staff move 2028's date in the admin; the next occurrence follows it. (2028: 3 October.)
    from campaigns.models import CalendarDate

    CalendarDate.objects.filter(code="mid_autumn", year=2028).update(
        date=dt.date(2028, 10, 4), source="staff"
    )
    assert dispatch(utc(2028, 9, 30, 2, 0, 30)).created == ()
    run = CampaignRun.objects.get(pk=dispatch(utc(2028, 10, 1, 2, 0, 30)).created[0])
    assert (run.occurrence, run.due_at) == ("mid_autumn-2028", utc(2028, 10, 1, 2))
    assert campaign.runs.count() == 2


def test_a_dispatcher_down_for_hours_sends_the_latest_occurrence_once_and_records_the_missed(settings):
    settings.CAMPAIGN_CATCH_UP_SECONDS = 1800
    campaign = recurring(recurrence_kind="cron", cron="0 * * * *", approved_at=utc(2027, 1, 4, 0, 30))
    assert len(dispatch(utc(2027, 1, 4, 1, 0, 10)).created) == 1
    # Down from 01:00 to 04:20 (beat and workers): 02:00 and 03:00 are missed, the 01:00 run was never
    # started, 04:00 is within the window and goes out.
    result = dispatch(utc(2027, 1, 4, 4, 20))
    assert result.missed == 3 and len(result.created) == 1
    runs = {r.occurrence: r for r in campaign.runs.all()}
    assert runs["2027-01-04T12:00+08:00"].status == RunStatus.SCHEDULED  # 04:00 UTC
    for key in ("2027-01-04T09:00+08:00", "2027-01-04T10:00+08:00", "2027-01-04T11:00+08:00"):
        assert (runs[key].status, runs[key].error_code) == (RunStatus.CANCELLED, MISSED)
        assert runs[key].error_params["window_seconds"] == 1800
    assert runs["2027-01-04T10:00+08:00"].error_params["late_seconds"] == 2 * 3600 + 20 * 60
    with translation.override("en"):
        assert run_error_message(runs["2027-01-04T10:00+08:00"]) == (
            "Not sent: the dispatcher reached this occurrence 2 h 20 min after its time, past the "
            "catch-up window (0 h 30 min)."
        )
    with translation.override("zh-hans"):
        assert "未发送" in run_error_message(runs["2027-01-04T09:00+08:00"])  # never started
    # Nothing twice, and a missed occurrence is never started.
    again = dispatch(utc(2027, 1, 4, 4, 21))
    assert again.created == () and again.missed == 0
    assert set(again.started) == {runs["2027-01-04T12:00+08:00"].pk}


def test_ends_at_and_a_paused_campaign_stop_the_occurrences():
    # 10:00 in Shanghai is 02:00 UTC.
    ending = recurring(recurrence_kind="cron", cron="0 10 * * *", ends_at=utc(2027, 1, 2, 3))
    paused = recurring(recurrence_kind="cron", cron="0 10 * * *", status=CampaignStatus.PAUSED)
    interval = recurring(
        recurrence_kind="interval", interval=dt.timedelta(hours=12), send_at=utc(2027, 1, 1, 6)
    )
    dispatch(utc(2027, 1, 1, 2, 0, 30))
    dispatch(utc(2027, 1, 2, 2, 0, 30))
    dispatch(utc(2027, 1, 3, 2, 0, 30))
    assert ending.runs.count() == 2  # 1 and 2 January, not the 3rd
    assert paused.runs.count() == 0
    # Every 12 hours from 06:00 UTC: 06:00 and 18:00 on the 1st and 2nd; the 1 Jan 06:00 and 18:00
    # ones were more than the catch-up window late by the wakes above, so recorded as missed.
    assert list(interval.runs.order_by("due_at").values_list("due_at", flat=True)) == [
        utc(2027, 1, 1, 6), utc(2027, 1, 1, 18), utc(2027, 1, 2, 6), utc(2027, 1, 2, 18),
    ]  # fmt: skip
    assert interval.runs.filter(status=RunStatus.CANCELLED).count() == 4


def test_the_once_only_run_approval_made_is_started_when_due():
    campaign = recurring(schedule_kind="at", send_at=utc(2027, 5, 20, 1))
    run = CampaignRun.objects.create(campaign=campaign, occurrence="once", due_at=campaign.send_at)
    assert dispatch(utc(2027, 5, 20, 0, 59)).started == ()
    assert dispatch(utc(2027, 5, 20, 1, 0, 5)).started == (run.pk,)


def _messages(run):
    from campaigns.models import Message

    return Message.objects.filter(source_kind="campaign", occurrence=str(run.pk))


def test_a_recurring_campaign_sends_each_occurrence_once_through_the_real_start():
    from campaigns.services.campaigns import campaign_run_start
    from tests.campaigns.campaign_helpers import campaign_make, consent_sql, customers_sql, segment_make

    ids = customers_sql(30)
    consent_sql(ids)
    campaign = campaign_make(
        segment=segment_make(), holdout="0", status=CampaignStatus.SCHEDULED, schedule_kind="recurring",
        recurrence_kind="cron", cron="0 10 * * 1", approved_at=utc(2027, 1, 1),
    )  # fmt: skip
    runs = []
    for day in (4, 11):
        monday = dt.datetime(2027, 1, day, 10, tzinfo=SHANGHAI)
        (run_id,) = dispatch(monday + dt.timedelta(seconds=5)).created
        run = CampaignRun.objects.get(pk=run_id)
        campaign_run_start(run=run, now=monday + dt.timedelta(seconds=6))  # the worker
        assert _messages(run).count() == 30
        # The dispatcher wakes again, the start task is delivered twice: nothing more is queued.
        assert dispatch(monday + dt.timedelta(seconds=15)).created == ()
        campaign_run_start(run=CampaignRun.objects.get(pk=run_id), now=monday + dt.timedelta(seconds=16))
        assert _messages(run).count() == 30
        assert set(_messages(run).values_list("due_at", flat=True)) == {monday}
        runs.append(run)
    from campaigns.models import Message

    assert Message.objects.filter(source_kind="campaign", source_ref=str(campaign.pk)).count() == 60
    assert runs[0].pk != runs[1].pk


def test_nine_local_messages_are_due_at_nine_in_each_customers_zone_across_the_dst_change():
    from campaigns.services.campaigns import campaign_run_start
    from tests.campaigns.campaign_helpers import campaign_make, consent_sql, customers_sql, segment_make

    zones = ("America/Los_Angeles", "Europe/London", "Asia/Kolkata")
    ids = customers_sql(6, zones=zones)
    consent_sql(ids)
    campaign_make(
        segment=segment_make(), holdout="0", status=CampaignStatus.SCHEDULED, schedule_kind="recurring",
        recurrence_kind="cron", cron="0 9 * * *", local_time=True, approved_at=utc(2027, 3, 13, 12),
    )  # fmt: skip
    # 14 March 2027: Los Angeles has just moved to PDT (-7); London is still on GMT.
    (run_id,) = dispatch(utc(2027, 3, 14, 3, 30, 5)).created  # Kolkata's 9:00 comes first
    run = CampaignRun.objects.get(pk=run_id)
    assert run.due_at == utc(2027, 3, 14, 3, 30)
    campaign_run_start(run=run, now=utc(2027, 3, 14, 3, 30, 6))
    due_by_zone = {
        zone: set(_messages(run).filter(customer__time_zone=zone).values_list("due_at", flat=True))
        for zone in zones
    }
    assert due_by_zone == {
        "America/Los_Angeles": {utc(2027, 3, 14, 16)},
        "Europe/London": {utc(2027, 3, 14, 9)},
        "Asia/Kolkata": {utc(2027, 3, 14, 3, 30)},
    }


def test_a_local_send_inside_quiet_hours_is_deferred_by_the_pipelines_rule_not_dropped():
    from campaigns.models import DeliverySettings
    from campaigns.services.campaigns import campaign_run_start
    from campaigns.services.rules import quiet_until
    from tests.campaigns.campaign_helpers import campaign_make, consent_sql, customers_sql, segment_make

    ids = customers_sql(2, zones=("America/Los_Angeles",))
    consent_sql(ids)
    campaign_make(
        segment=segment_make(), holdout="0", status=CampaignStatus.SCHEDULED, schedule_kind="recurring",
        recurrence_kind="cron", cron="30 7 * * *", local_time=True, approved_at=utc(2027, 3, 14, 12),
    )  # fmt: skip
    # 07:30 PDT on 15 March is 14:30 UTC: inside the default quiet hours (21:00-08:00 local).
    (run_id,) = dispatch(utc(2027, 3, 15, 14, 30, 5)).created
    run = CampaignRun.objects.get(pk=run_id)
    campaign_run_start(run=run, now=utc(2027, 3, 15, 14, 30, 6))
    (due,) = set(_messages(run).values_list("due_at", flat=True))
    assert due == utc(2027, 3, 15, 14, 30)
    settings_row = DeliverySettings.objects.get_or_create(pk=1)[0]
    released = quiet_until(
        due, ZoneInfo("America/Los_Angeles"), settings_row.quiet_start, settings_row.quiet_end
    )
    assert released == utc(2027, 3, 15, 15)  # 08:00 PDT, the end of quiet hours that morning


def test_the_one_beat_entry_runs_the_registered_dispatcher_task(settings):
    from django_celery_beat.models import PeriodicTask

    from config.celery import app

    entry = settings.CELERY_BEAT_SCHEDULE["campaigns-runs-dispatch"]
    assert entry["task"] == "campaigns.tasks.campaign_schedule_dispatch"
    app.loader.import_default_modules()
    recurring(recurrence_kind="cron", cron="* * * * *", approved_at=timezone.now() - dt.timedelta(minutes=3))
    with TestCase.captureOnCommitCallbacks(execute=False):
        app.tasks[entry["task"]].run()  # the task body, in this process
    assert CampaignRun.objects.filter(status=RunStatus.SCHEDULED).count() == 1
    assert (
        not PeriodicTask.objects.filter(task__startswith="campaigns.")
        .exclude(name__startswith="campaigns-")
        .exists()
    )  # never a PeriodicTask per campaign
