"""The schedule fields of the campaign form: checks naming the field, the cron in words, calendar codes."""

import datetime as dt

import pytest
from django.utils import timezone, translation

from campaigns.admin.schedule_fields import CampaignScheduleForm
from campaigns.models import Campaign
from campaigns.services.calendar import calendar_dates_seed
from crm.clock import business_today

pytestmark = pytest.mark.django_db


def form(**data):
    base = {"schedule_kind": "recurring", "calendar_offset_days": "0"}
    return CampaignScheduleForm(data=base | data)


def test_a_bad_cron_is_refused_on_its_field_naming_the_cron_field():
    with translation.override("en"):
        f = form(recurrence_kind="cron", cron="0 25 * * 1")
        assert not f.is_valid()
        assert f.errors["cron"] == ["The hour (0-23) field “25” is not valid."]
    with translation.override("zh-hans"):
        f = form(recurrence_kind="cron", cron="0 10 * *")
        assert not f.is_valid()
        assert "五个字段" in f.errors["cron"][0]
    assert form(recurrence_kind="cron", cron="0 10 * * 1").is_valid()


def test_recurring_needs_its_kind_an_hour_of_interval_and_an_end_after_now():
    with translation.override("en"):
        f = form()
        assert not f.is_valid() and "recurrence_kind" in f.errors
        f = form(recurrence_kind="interval", interval="00:10:00")
        assert not f.is_valid() and "at least one hour" in f.errors["interval"][0]
        past = (timezone.now() - dt.timedelta(days=1)).strftime("%Y-%m-%d %H:%M:%S")
        f = form(recurrence_kind="interval", interval="1 00:00:00", ends_at=past)
        assert not f.is_valid() and "ends_at" in f.errors


def test_a_calendar_schedule_needs_a_known_code_with_a_coming_date_and_a_time():
    this_year = business_today(timezone.now()).year
    calendar_dates_seed(years=[this_year, this_year + 1])
    with translation.override("en"):
        f = form(recurrence_kind="calendar", calendar_code="double_11", calendar_offset_days="-3")
        assert not f.is_valid() and "send_time" in f.errors
        f = form(
            recurrence_kind="calendar",
            calendar_code="double_11",
            calendar_offset_days="-3",
            send_time="10:00",
        )
        assert f.is_valid(), f.errors
        f = form(recurrence_kind="calendar", calendar_code="nope", send_time="10:00")
        assert not f.is_valid()
        assert "calendar_code" in f.errors  # not even a choice
    # Codes are offered by name in the staff's language.
    with translation.override("zh-hans"):
        assert ("mid_autumn", "中秋 (mid_autumn)") in form().fields["calendar_code"].choices


def test_the_cron_is_described_in_words_on_the_change_page(admin_client):
    campaign = Campaign.objects.create(
        name="周一推送", channel="sms", schedule_kind="recurring", recurrence_kind="cron", cron="0 10 * * 1"
    )
    with translation.override("en"):
        page = admin_client.get(f"/admin/campaigns/campaign/{campaign.pk}/change/", HTTP_ACCEPT_LANGUAGE="en")
    assert page.status_code == 200
    assert "At 10:00, only on Monday" in page.content.decode()


def test_the_list_says_the_schedule_in_words():
    from campaigns.admin.schedule_fields import schedule_summary

    calendar_dates_seed(years=[2027])
    before_mid_autumn = Campaign(
        name="中秋", channel="sms", schedule_kind="recurring", recurrence_kind="calendar",
        calendar_code="mid_autumn", calendar_offset_days=-3, send_time=dt.time(10), local_time=True,
    )  # fmt: skip
    weekly = Campaign(
        name="周一", channel="sms", schedule_kind="recurring", recurrence_kind="cron", cron="0 10 * * 1"
    )
    with translation.override("en"):
        assert schedule_summary(before_mid_autumn) == (
            "3 days before Mid-autumn Festival, 10:00, each customer's local time"
        )
        assert schedule_summary(weekly) == "At 10:00, only on Monday"
    with translation.override("zh-hans"):
        assert schedule_summary(before_mid_autumn) == "中秋前 3 天, 10:00，按每位客户的当地时间"
        assert schedule_summary(weekly) == "在 10:00, 仅在 星期一"
