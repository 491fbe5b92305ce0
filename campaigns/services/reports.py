"""Keeping campaign reports fresh: the report of a run (campaigns/reports.py) is one set-based statement,
but over a million recipients it takes seconds, too long for a page. So it is stored
(CampaignRunReport) and the page reads the stored figures: a beat-woken pass recomputes the reports of
runs whose attribution window is still open (orders still come in) every REFRESH_EVERY, and a small run's
page computes its own when the stored one is missing or stale (campaigns/admin/reports.py).

Reports of different runs are independent; two passes computing the same run's report at once is
harmless (the later write wins, both are correct as of their moment)."""

from __future__ import annotations

import time
from datetime import datetime, timedelta

from django.db.models import DateTimeField, DurationField, ExpressionWrapper, F, Q, Value

from campaigns.models import CampaignRun, CampaignRunReport
from campaigns.reports import RunReport, campaign_run_report

REFRESH_EVERY = timedelta(minutes=5)
# Once the window closed, one last computation after it (late refunds, late-arriving orders) is kept.
SETTLE_AFTER_WINDOW = timedelta(days=1)


def campaign_run_report_refresh(*, run: CampaignRun, now: datetime) -> RunReport:
    started = time.perf_counter()
    report = campaign_run_report(run, now=now)
    CampaignRunReport.objects.update_or_create(
        run_id=run.pk,
        defaults={
            "figures": report.as_json(),
            "computed_at": now,
            "compute_seconds": time.perf_counter() - started,
        },
    )
    return report


def campaign_run_report_stored(run: CampaignRun) -> tuple[RunReport, CampaignRunReport] | None:
    row = CampaignRunReport.objects.filter(run_id=run.pk).first()
    if row is None:
        return None
    return RunReport.from_json(row.figures), row


def campaign_reports_refresh_due(*, now: datetime, limit: int = 10) -> list[int]:
    """Recompute the stored reports that are due: runs that started, whose window (plus a day) is still
    open, with no report or one older than REFRESH_EVERY, oldest report first. Returns the runs' ids."""
    window_closed = ExpressionWrapper(
        F("due_at")
        + Value(timedelta(days=1), output_field=DurationField()) * F("campaign__attribution_days")
        + Value(SETTLE_AFTER_WINDOW, output_field=DurationField()),
        output_field=DateTimeField(),
    )
    stale = Q(report__computed_at__lt=now - REFRESH_EVERY) & Q(report__computed_at__lt=window_closed)
    runs = (
        CampaignRun.objects.filter(started_at__isnull=False)
        .filter(Q(report__isnull=True) | stale)
        .select_related("campaign")
        .order_by(F("report__computed_at").asc(nulls_first=True), "pk")[:limit]
    )
    done = []
    for run in runs:
        campaign_run_report_refresh(run=run, now=now)
        done.append(run.pk)
    return done
