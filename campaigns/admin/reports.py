"""The campaign report page (per run: funnel per arm, conversions over time, uplift with its interval, the
automatic winner's decision; Chart.js) and the CSV export of per-customer outcomes. Thin: the figures
come from campaigns.reports (stored by campaigns.services.reports), the words from here."""

from __future__ import annotations

import csv
from decimal import Decimal

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db import connection
from django.http import Http404, HttpResponseRedirect, StreamingHttpResponse
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import formats, timezone
from django.utils.translation import gettext, pgettext
from django.utils.translation import gettext_lazy as _

from campaigns.experiment_statistics import WinnerReason
from campaigns.models import CampaignRun, CampaignRunReport, MessageStatus
from campaigns.reports import (
    HOLDOUT,
    ReportUnavailable,
    campaign_arm_costs,
    campaign_run_outcomes,
    run_summary,
)
from campaigns.services.reports import (
    REFRESH_EVERY,
    campaign_run_report_refresh,
    campaign_run_report_stored,
)
from crm.admin.base import ReadOnlyAdmin

# A run this small is computed on the page when its stored report is missing or stale (well under a
# second); a larger one waits for the beat-woken refresh (campaigns/services/reports.py).
COMPUTE_ON_PAGE_UP_TO = 50_000

METRIC_LABELS = {
    "opened": _("Opened"),
    "clicked": _("Clicked"),
    "converted": _("Converted"),
    "unsubscribed": _("Unsubscribed"),
    "revenue": _("Revenue per recipient"),
}
REASON_LABELS = {
    WinnerReason.BEATS_A: _("{winner} beat {default}: its interval against {default} lies above zero."),
    WinnerReason.NO_CLEAR_WINNER: _(
        "No variant beat {default} clearly (every interval contains zero or lies below it): {default} is kept."
    ),
    WinnerReason.SAMPLE_TOO_SMALL: _(
        "An arm had fewer recipients than the minimum sample ({min_sample}): {default} is kept."
    ),
    WinnerReason.ONLY_ONE_ARM: _("Only one variant: it is sent to the rest."),
}


def arm_label(key: str) -> str:
    if key == HOLDOUT:
        return gettext("Holdout")
    if key in ("", ":rest"):
        return gettext("Rest (waiting for the winner)")
    if key.endswith(":rest"):
        return gettext("Rest (variant %(key)s)") % {"key": key.removesuffix(":rest")}
    return gettext("Variant %(key)s") % {"key": key}


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.2f} %"


def _signed(value: float, metric: str) -> str:
    if metric == "revenue":
        return f"{value:+,.2f}"
    return f"{value * 100:+.2f} pp"


def _arm_rows(report) -> list[dict]:
    rows = []
    for arm in report.arms:
        rows.append(
            {
                "key": arm.label_key,
                "label": arm_label(arm.label_key),
                "figures": arm,
                "conversion_rate": _percent(arm.rate("converted")),
                "open_rate": _percent(arm.rate("opened")),
                "click_rate": _percent(arm.rate("clicked")),
            }
        )
    return rows


def _comparison_rows(report) -> list[dict]:
    return [
        {
            "metric": METRIC_LABELS[c.metric],
            "arm": arm_label(c.arm),
            "against": arm_label(c.against),
            "estimate": _signed(c.estimate, c.metric),
            "low": _signed(c.low, c.metric),
            "high": _signed(c.high, c.metric),
            "uplift": "—" if c.relative_uplift is None else f"{c.relative_uplift * 100:+.1f} %",
            "clear": c.excludes_zero,
        }
        for c in report.comparisons
    ]


def _return_rows(report, campaign) -> dict:
    """Cost and return of the treated arms: each arm's messages sent times its channel's cost."""
    costs = campaign_arm_costs(campaign)
    summary = run_summary(report, cost_per_message=campaign.cost_per_message, arm_costs=costs)

    def ratio(value):
        return "—" if value is None else f"{value * 100:,.1f} %"

    arms = []
    for arm in report.arms:
        if arm.is_holdout or not arm.key:
            continue
        cost_per_message = costs.get(arm.key, campaign.cost_per_message)
        arms.append(
            {
                "key": arm.label_key,
                "label": arm_label(arm.label_key),
                "sent": arm.sent,
                "cost_per_message": cost_per_message,
                "cost": (cost_per_message * arm.sent).quantize(Decimal("0.01")),
                "revenue": arm.revenue,
            }
        )
    return {
        "summary": summary,
        "arms": arms,
        "roi": ratio(summary.roi),
        "incremental_roi": ratio(summary.incremental_roi),
    }


def _chart_data(report) -> dict:
    variants = [a for a in report.arms if a.recipients]
    funnel_steps = ("sent", "delivered", "opened", "clicked", "converted")
    days = sorted({day for points in report.conversions_by_day.values() for day, _n in points})
    series = []
    for arm in variants:
        per_day = dict(report.conversions_by_day.get(arm.label_key, []))
        running, values = 0, []
        for day in days:
            running += per_day.get(day, 0)
            values.append(round(running / arm.recipients * 100, 4))
        series.append({"key": arm.label_key, "label": arm_label(arm.label_key), "values": values})
    uplift = [
        {
            "label": arm_label(c.arm),
            "estimate": round(c.estimate * 100, 4),
            "low": round(c.low * 100, 4),
            "high": round(c.high * 100, 4),
        }
        for c in report.comparisons
        if c.metric == "converted" and c.against == HOLDOUT
    ]
    return {
        "funnel": {
            "steps": [
                gettext("Sent"),
                gettext("Delivered"),
                gettext("Opened"),
                gettext("Clicked"),
                gettext("Converted"),
            ],
            "arms": [
                {
                    "key": a.label_key,
                    "label": arm_label(a.label_key),
                    "values": [round(getattr(a, step) / a.recipients * 100, 4) for step in funnel_steps],
                }
                for a in variants
            ],
        },
        "days": [formats.date_format(day, "SHORT_DATE_FORMAT") for day in days],
        "conversions": series,
        "uplift": uplift,
        "labels": {
            "percentOfRecipients": gettext("percent of recipients"),
            "cumulativeConversion": gettext("converted, percent of recipients (cumulative)"),
            "uplift": gettext("conversion against the holdout, percentage points (95 percent interval)"),
            "interval": gettext("95 percent interval"),
            "estimate": gettext("estimate"),
        },
    }


def _decision(run) -> dict | None:
    decision = run.winner_decision
    if not decision:
        return None
    default = decision.get("default_key", "A")
    reason = REASON_LABELS.get(decision.get("reason"))
    text = (
        str(reason).format(
            winner=decision.get("winner_key"), default=default, min_sample=decision.get("min_sample")
        )
        if reason
        else decision.get("reason", "")
    )
    metric = decision.get("metric", "")
    arms = [
        {
            "label": arm_label(a["key"]),
            "n": a["n"],
            "value": "—"
            if a["value"] is None
            else (f"{a['value']:,.2f}" if metric == "revenue" else _percent(a["value"])),
        }
        for a in decision.get("arms", [])
    ]
    comparisons = [
        {
            "label": f"{arm_label(c['key'])} − {arm_label(c['against'])}",
            "estimate": _signed(c["estimate"], metric),
            "low": _signed(c["low"], metric),
            "high": _signed(c["high"], metric),
        }
        for c in decision.get("comparisons", [])
    ]
    return {
        "winner": arm_label(decision.get("winner_key", "")),
        "metric": METRIC_LABELS.get(metric, metric),
        "reason": text,
        "min_sample": decision.get("min_sample"),
        "confidence": f"{decision.get('comparison_confidence', 0.95) * 100:.1f} %",
        "arms": arms,
        "comparisons": comparisons,
        "decided_at": run.winner_decided_at,
        "rest_enqueued": decision.get("rest_enqueued"),
    }


@admin.register(CampaignRunReport)
class CampaignRunReportAdmin(ReadOnlyAdmin):
    """Campaign reports: one per run. The list shows the stored ones; a run's page is its report."""

    list_display = ("run", "campaign_name", "computed_at", "compute_seconds")
    list_select_related = ("run__campaign",)
    ordering = ("-computed_at",)

    @admin.display(description=_("campaign"))
    def campaign_name(self, obj):
        return obj.run.campaign.name

    def get_urls(self):
        wrap = self.admin_site.admin_view
        return [
            path("run/<int:run_id>/", wrap(self.report_view), name="campaigns_campaignrunreport_run"),
            path(
                "run/<int:run_id>/outcomes.csv", wrap(self.csv_view), name="campaigns_campaignrunreport_csv"
            ),
            *super().get_urls(),
        ]

    def change_view(self, request, object_id, form_url="", extra_context=None):
        return HttpResponseRedirect(reverse("admin:campaigns_campaignrunreport_run", args=[int(object_id)]))

    def _run(self, request, run_id: int) -> CampaignRun:
        if not self.has_view_permission(request):
            raise PermissionDenied
        run = (
            CampaignRun.objects.select_related("campaign")
            .prefetch_related("campaign__variants", "campaign__channel_costs")
            .filter(pk=run_id)
            .first()
        )
        if run is None:
            raise Http404(gettext("No such campaign run."))
        return run

    def report_view(self, request, run_id: int):
        run = self._run(request, run_id)
        now = timezone.now()
        unavailable = None
        report = None
        computed_at = None
        stored = campaign_run_report_stored(run)
        try:
            if run.started_at is not None and run.audience_size <= COMPUTE_ON_PAGE_UP_TO:
                if stored is None or stored[1].computed_at < now - REFRESH_EVERY:
                    stored = (campaign_run_report_refresh(run=run, now=now), None)
                    computed_at = now
            if stored is not None:
                report = stored[0]
                computed_at = computed_at or stored[1].computed_at
        except ReportUnavailable as error:
            unavailable = error.code
        campaign = run.campaign
        context = {
            **self.admin_site.each_context(request),
            "title": gettext("Report: %(campaign)s") % {"campaign": campaign.name},
            "opts": self.model._meta,
            "run": run,
            "campaign": campaign,
            "report": report,
            "computed_at": computed_at,
            "not_started": run.started_at is None,
            "unavailable": unavailable,
            "arms": _arm_rows(report) if report else [],
            "comparisons": _comparison_rows(report) if report else [],
            "returns": _return_rows(report, campaign) if report else None,
            "chart": _chart_data(report) if report else None,
            "decision": _decision(run),
            "csv_url": reverse("admin:campaigns_campaignrunreport_csv", args=[run.pk]),
            "attribution_days": campaign.attribution_days,
            "window_start": run.due_at,
        }
        return TemplateResponse(request, "admin/campaigns/campaign_report.html", context)

    def csv_view(self, request, run_id: int):
        run = self._run(request, run_id)
        statuses = dict(MessageStatus.choices)
        tz = timezone.get_default_timezone()

        class Echo:
            def write(self, value):
                return value

        writer = csv.writer(Echo())
        header = [
            gettext("customer id"),
            gettext("external id"),
            gettext("arm"),
            gettext("phase"),
            gettext("message status"),
            gettext("converted"),
            gettext("revenue"),
            gettext("first order in the window"),
        ]
        yes, no = pgettext("csv boolean", "yes"), pgettext("csv boolean", "no")

        def rows():
            yield "\ufeff"  # Excel opens UTF-8 (Chinese names and labels) only with the byte order mark
            yield writer.writerow(header)
            for (
                customer_id,
                external_id,
                arm,
                phase,
                status,
                converted,
                revenue,
                first_at,
            ) in campaign_run_outcomes(run):
                yield writer.writerow(
                    [
                        customer_id,
                        external_id,
                        arm,
                        phase,
                        statuses.get(status, status),
                        yes if converted else no,
                        f"{revenue:.2f}",
                        first_at.astimezone(tz).isoformat(timespec="seconds") if first_at else "",
                    ]
                )

        if run.started_at is None:
            raise Http404(gettext("This run has not started: it has no outcomes yet."))
        if connection.vendor != "postgresql":
            messages.error(request, gettext("Campaign reports need PostgreSQL (set DATABASE_URL)."))
            return HttpResponseRedirect(reverse("admin:campaigns_campaignrunreport_run", args=[run.pk]))
        filename = f"campaign-{run.campaign_id}-run-{run.pk}-{timezone.localdate():%Y%m%d}.csv"
        response = StreamingHttpResponse(rows(), content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="{filename}"'
        return response
