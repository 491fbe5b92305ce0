"""`manage.py bootstrap_analytics`, which `make run` calls after seeding: the metrics with a history of
month ends and every dashboard figure, computed once."""

from __future__ import annotations

from datetime import date
from io import StringIO

import pytest
from django.core.management import call_command
from django.utils import timezone

from crm.analytics import compute
from crm.clock import business_day_end, business_today
from crm.models import CustomerMetrics, DashboardSummary, Event, MetricsRun
from crm.models.metrics import LIFECYCLE_STAGE_CHANGED
from crm.services.metrics import metrics_compute, metrics_compute_with_history, metrics_history_months

pytestmark = pytest.mark.django_db


def test_history_months_are_the_month_ends_before_this_month_oldest_first():
    assert metrics_history_months(today=date(2026, 3, 15), months=3) == [
        date(2025, 12, 31),
        date(2026, 1, 31),
        date(2026, 2, 28),
    ]


def test_bootstrap_builds_a_lifecycle_history_from_month_ends_and_fills_the_dashboards():
    call_command("seed_demo", customers=600, events_per_customer=6, seed=3, stdout=StringIO())
    today = business_today(timezone.now())
    ends = metrics_history_months(today=today, months=4)

    out = StringIO()
    call_command("bootstrap_analytics", history_months=4, stdout=out)

    runs = list(MetricsRun.objects.order_by("started_at").values_list("as_of", "status"))
    assert runs == [(day, "done") for day in [*ends, today]], out.getvalue()
    assert CustomerMetrics.objects.count() == 600
    # Each month end after the baseline announced the changes since the one before, dated at its end.
    changes = Event.objects.filter(type=LIFECYCLE_STAGE_CHANGED)
    for end in ends[1:]:
        dated = changes.filter(properties__as_of=end.isoformat())
        assert dated.exists(), end
        assert set(dated.values_list("occurred_at", flat=True)) == {business_day_end(end)}
    assert not changes.filter(properties__as_of=ends[0].isoformat()).exists()  # the baseline

    history = compute.lifecycle_history(months=4)
    assert history["tracked_since"] == ends[0].isoformat()
    columns = {tuple(series[i] for series in history["series"].values()) for i in range(4)}
    assert len(columns) > 1, history  # not today's stages copied back over every month
    charts = set(DashboardSummary.objects.values_list("chart", flat=True))
    assert {"lifecycle", "cohorts", "orders", "acquisition", "funnel", "attribution"} <= charts

    again = StringIO()
    call_command("bootstrap_analytics", history_months=4, stdout=again)
    assert MetricsRun.objects.count() == len(runs)
    assert "computed before" in again.getvalue()


def test_a_history_is_refused_once_metrics_exist():
    call_command("seed_demo", customers=50, events_per_customer=2, seed=3, stdout=StringIO())
    metrics_compute()

    with pytest.raises(ValueError, match="already computed"):
        metrics_compute_with_history(months=2)
