"""The business's clock: days are counted in the business time zone (settings.TIME_ZONE), not in UTC."""

import runpy
import zoneinfo
from datetime import UTC, date, datetime, time
from decimal import Decimal
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.urls import reverse
from django.utils import translation

from crm.clock import business_date_of, business_day_end, business_day_start, business_today, moment_display
from crm.models.metrics import CustomerMetrics
from crm.services.metrics import metrics_compute
from tests.factories import CustomerFactory, OrderFactory

SETTINGS_FILE = Path(__file__).resolve().parents[2] / "config" / "settings.py"

SHANGHAI = zoneinfo.ZoneInfo("Asia/Shanghai")


@pytest.fixture
def shanghai(settings):
    """The default business zone, set explicitly so the test does not depend on the environment."""
    settings.TIME_ZONE = "Asia/Shanghai"
    return SHANGHAI


def local(day: date, hour: int, minute: int = 0) -> datetime:
    return datetime.combine(day, time(hour, minute), tzinfo=SHANGHAI)


def test_a_moment_before_8_am_in_beijing_is_on_the_beijing_day_not_the_utc_one(shanghai):
    morning = local(date(2026, 11, 12), 7)
    assert morning.astimezone(UTC).date() == date(2026, 11, 11)
    assert business_date_of(morning) == date(2026, 11, 12)
    assert business_today(morning) == date(2026, 11, 12)


def test_a_business_day_runs_from_local_midnight_to_local_midnight(shanghai):
    assert business_day_start(date(2026, 11, 11)) == datetime(2026, 11, 10, 16, tzinfo=UTC)
    assert business_day_end(date(2026, 11, 11)) == datetime(2026, 11, 11, 16, tzinfo=UTC)


def test_a_business_day_with_a_dst_change_lasts_23_hours(settings):
    settings.TIME_ZONE = "Europe/Paris"
    day = date(2026, 3, 29)  # clocks go forward at 02:00
    assert (business_day_end(day) - business_day_start(day)).total_seconds() == 23 * 3600


def test_the_business_date_of_a_naive_time_is_refused(shanghai):
    with pytest.raises(ValueError, match="no time zone"):
        business_date_of(datetime(2026, 11, 11, 0, 0))


@pytest.mark.parametrize("value", ["Mars/Olympus_Mons", "asia/shanghai", "", "../etc/passwd"])
def test_a_time_zone_setting_that_is_not_an_iana_zone_stops_the_process(monkeypatch, value):
    """Runs the settings module as a process does at start-up (the live settings are left alone)."""
    monkeypatch.setenv("TIME_ZONE", value)
    with pytest.raises(ImproperlyConfigured, match="TIME_ZONE must be an IANA time zone") as refused:
        runpy.run_path(str(SETTINGS_FILE))
    assert repr(value) in str(refused.value)


def test_the_business_time_zone_comes_from_the_environment_and_defaults_to_shanghai(monkeypatch):
    monkeypatch.delenv("TIME_ZONE", raising=False)
    assert runpy.run_path(str(SETTINGS_FILE))["TIME_ZONE"] == "Asia/Shanghai"
    monkeypatch.setenv("TIME_ZONE", "Europe/Paris")
    assert runpy.run_path(str(SETTINGS_FILE))["TIME_ZONE"] == "Europe/Paris"


# --- Metrics: purchase days and the as-of boundary ---------------------------------------------------


@pytest.fixture(params=["postgres", "generic"])
def pipeline(request):
    """Both pipelines: PostgreSQL's SQL and the ORM one SQLite uses (`make run`)."""
    return request.param


def _order(customer, placed_at):
    return OrderFactory(customer=customer, placed_at=placed_at, total=Decimal("100.00"))


@pytest.mark.django_db
def test_orders_at_23_30_and_00_30_beijing_time_are_two_purchase_days(shanghai, pipeline):
    # Both are on 2026-11-11 in UTC (15:30 and 16:30): counted in UTC they would be one purchase day.
    customer = CustomerFactory()
    _order(customer, local(date(2026, 11, 11), 23, 30))
    _order(customer, local(date(2026, 11, 12), 0, 30))

    metrics_compute(as_of=date(2026, 11, 20), now=local(date(2026, 11, 21), 3), pipeline=pipeline)

    row = CustomerMetrics.objects.get(customer=customer)
    assert (row.first_order_date, row.last_order_date) == (date(2026, 11, 11), date(2026, 11, 12))
    assert row.order_count == 2
    assert row.frequency == 1  # one repeat purchase day
    assert row.recency_days == 1
    assert row.days_since_last_order == 8


@pytest.mark.django_db
def test_an_order_at_7_am_beijing_time_counts_on_that_beijing_day(shanghai, pipeline):
    customer = CustomerFactory()
    _order(customer, local(date(2026, 11, 12), 7))  # 23:00 UTC on the 11th

    metrics_compute(as_of=date(2026, 11, 12), now=local(date(2026, 11, 12), 9), pipeline=pipeline)

    row = CustomerMetrics.objects.get(customer=customer)
    assert row.first_order_date == date(2026, 11, 12)
    assert row.days_since_last_order == 0


@pytest.mark.django_db
def test_as_of_a_day_counts_orders_up_to_midnight_beijing_time(shanghai, pipeline):
    customer = CustomerFactory()
    _order(customer, local(date(2026, 11, 11), 23, 30))  # counts for the 11th
    _order(customer, local(date(2026, 11, 12), 0, 30))  # belongs to the 12th

    run = metrics_compute(as_of=date(2026, 11, 11), now=local(date(2026, 11, 12), 2, 30), pipeline=pipeline)

    row = CustomerMetrics.objects.get(customer=customer)
    assert row.order_count == 1
    assert row.last_order_date == date(2026, 11, 11)
    assert run.as_of == date(2026, 11, 11)


@pytest.mark.django_db
def test_the_default_as_of_is_today_in_beijing_even_when_utc_is_still_yesterday(shanghai, pipeline):
    customer = CustomerFactory()
    now = local(date(2026, 11, 12), 2, 30)  # the nightly run: 18:30 UTC on the 11th
    _order(customer, local(date(2026, 11, 12), 0, 30))

    run = metrics_compute(now=now, pipeline=pipeline)

    assert run.as_of == date(2026, 11, 12)
    assert CustomerMetrics.objects.get(customer=customer).last_order_date == date(2026, 11, 12)


@pytest.mark.django_db
def test_as_of_tomorrow_in_beijing_is_refused_as_the_future(shanghai):
    with pytest.raises(ValueError, match="in the future"):
        metrics_compute(as_of=date(2026, 11, 13), now=local(date(2026, 11, 12), 23, 59))


# --- What staff read ------------------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("language", "placed", "since"),
    [("zh-hans", "2026年11月11日 00:30", "2026年11月10日"), ("en", "11 Nov 2026, 00:30", "10 Nov 2026")],
)
def test_the_customer_360_shows_orders_at_beijing_time_in_the_locale_format(
    shanghai, admin_client, language, placed, since
):
    customer = CustomerFactory(created_at=local(date(2026, 11, 10), 9))
    _order(customer, local(date(2026, 11, 11), 0, 30))  # 16:30 UTC on the 10th

    page = admin_client.get(
        reverse("admin:crm_customer_change", args=[customer.pk]), HTTP_ACCEPT_LANGUAGE=language
    ).content.decode()

    assert placed in page
    assert since in page  # "customer since", a date
    assert "16:30" not in page


@pytest.mark.django_db
def test_the_order_list_shows_placed_at_in_beijing_time(shanghai, admin_client):
    _order(CustomerFactory(), local(date(2026, 11, 11), 0, 0))
    page = admin_client.get(
        reverse("admin:crm_order_changelist"), HTTP_ACCEPT_LANGUAGE="zh-hans"
    ).content.decode()
    assert "2026年11月11日 00:00" in page


@pytest.mark.parametrize(
    ("language", "shown"), [("zh-hans", "2026年11月11日 00:00"), ("en", "11 Nov 2026, 00:00")]
)
def test_times_in_messages_built_in_python_are_on_the_business_clock(shanghai, language, shown):
    with translation.override(language):
        assert moment_display(datetime(2026, 11, 10, 16, 0, tzinfo=UTC)) == shown
