"""Reads of campaigns for the staff pages: a run's progress (the live bar) and the list's figures.

A run's progress reads the kept counts (CampaignRunCount, a few rows per run) instead of counting its
messages: the bar polls every 2 s while a million messages send (see BENCHMARKS.md, campaign progress)."""

from __future__ import annotations

from django.utils.translation import gettext

from campaigns.models import CampaignRun, CampaignRunCount, MessageStatus, RunStatus
from campaigns.reasons import reason_text

# The bar's segments, in the order they are drawn; every status of the outbox falls in one.
PROGRESS_GROUPS = {
    "queued": (MessageStatus.QUEUED, MessageStatus.DEFERRED, MessageStatus.SENDING),
    "sent": (MessageStatus.SENT,),
    "delivered": (MessageStatus.DELIVERED, MessageStatus.OPENED, MessageStatus.CLICKED),
    "failed": (MessageStatus.FAILED, MessageStatus.UNKNOWN),
    "suppressed": (MessageStatus.SUPPRESSED,),
    "cancelled": (MessageStatus.CANCELLED,),
}
_GROUP_OF = {str(s): group for group, statuses in PROGRESS_GROUPS.items() for s in statuses}


def _group_labels() -> dict[str, str]:
    return {
        "queued": gettext("Queued"),
        "sent": gettext("Sent"),
        "delivered": gettext("Delivered"),
        "failed": gettext("Failed"),
        "suppressed": gettext("Suppressed"),
        "cancelled": gettext("Cancelled"),
    }


def campaign_run_progress(run: CampaignRun) -> dict:
    """The run's messages by status and by reason (suppressed, deferred, failed), how many are done, and
    whether the run is over: one query on the kept counts. A run that is over with failures says
    "partly delivered" with its counts, never "finished"."""
    rows = list(CampaignRunCount.objects.filter(run_id=run.pk, n__gt=0).values_list("status", "reason", "n"))
    by_status: dict[str, int] = {}
    groups = dict.fromkeys(PROGRESS_GROUPS, 0)
    reasons: dict[str, dict] = {}
    for status, reason, n in rows:
        by_status[status] = by_status.get(status, 0) + n
        groups[_GROUP_OF.get(status, "queued")] += n
        if reason and status in ("suppressed", "deferred", "failed", "cancelled", "unknown"):
            key = f"{status}:{reason}"
            reasons[key] = {
                "status": status,
                "reason": reason,
                "text": reason_text(
                    reason, {"source": run.campaign.name} if reason == "source_cancelled" else {}
                ),
                "count": n,
            }
    total = run.enqueued_size
    done = total - groups["queued"]
    labels = _group_labels()
    return {
        "run": run.pk,
        "status": run.status,
        "status_label": str(RunStatus(run.status).label),
        "over": run.status in (RunStatus.SENT, RunStatus.PARTIAL, RunStatus.CANCELLED),
        "partial": run.status == RunStatus.PARTIAL,
        "audience": run.audience_size,
        "holdout": run.holdout_size,
        "total": total,
        "done": max(done, 0),
        "percent": round(100 * done / total, 1) if total else (100.0 if run.finished_at else 0.0),
        "groups": [{"key": k, "label": labels[k], "count": groups[k]} for k in PROGRESS_GROUPS],
        "by_status": by_status,
        "reasons": sorted(reasons.values(), key=lambda r: -r["count"]),
    }


def campaigns_list_figures(campaign_ids: list[int]) -> dict[int, dict]:
    """The list page's figures for these campaigns (a page of them): audience, sent and delivered over
    all their runs, from the runs and the kept counts, in two queries whatever the campaigns' size.
    Converted, revenue and ROI come from the runs' stored reports (campaigns.services.reports, refreshed
    by beat): absent, and shown as a dash, until a run has one. ROI is (revenue - cost) / cost, cost being
    each arm's messages sent times its channel's cost per message (campaigns.reports.run_summary)."""
    from django.db.models import Sum

    if not campaign_ids:
        return {}
    figures: dict[int, dict] = {pk: {"audience": None, "sent": 0, "delivered": 0} for pk in campaign_ids}
    for row in (
        CampaignRun.objects.filter(campaign_id__in=campaign_ids, started_at__isnull=False)
        .values("campaign_id")
        .annotate(audience=Sum("audience_size"))
    ):
        figures[row["campaign_id"]]["audience"] = row["audience"]
    reached = [str(s) for s in PROGRESS_GROUPS["sent"] + PROGRESS_GROUPS["delivered"]]
    delivered = [str(s) for s in PROGRESS_GROUPS["delivered"]]
    for row in (
        CampaignRunCount.objects.filter(run__campaign_id__in=campaign_ids, status__in=reached)
        .values("run__campaign_id", "status")
        .annotate(n=Sum("n"))
    ):
        figure = figures[row["run__campaign_id"]]
        figure["sent"] += row["n"]
        if row["status"] in delivered:
            figure["delivered"] += row["n"]
    _add_report_figures(figures, campaign_ids)
    return figures


def _add_report_figures(figures: dict[int, dict], campaign_ids: list[int]) -> None:
    from decimal import Decimal

    from campaigns.models import CampaignRunReport
    from campaigns.reports import RunReport, campaign_arm_costs, run_summary

    totals: dict[int, dict] = {}
    rows = (
        CampaignRunReport.objects.filter(run__campaign_id__in=campaign_ids)
        .select_related("run__campaign")
        .prefetch_related("run__campaign__variants", "run__campaign__channel_costs")
    )
    for row in rows:
        campaign = row.run.campaign
        summary = run_summary(
            RunReport.from_json(row.figures),
            cost_per_message=campaign.cost_per_message,
            arm_costs=campaign_arm_costs(campaign),
        )
        total = totals.setdefault(
            campaign.pk, {"converted": 0, "revenue": Decimal("0"), "cost": Decimal("0")}
        )
        total["converted"] += summary.converted
        total["revenue"] += summary.revenue
        total["cost"] += summary.cost
    for pk, total in totals.items():
        figures[pk]["converted"] = total["converted"]
        figures[pk]["revenue"] = total["revenue"]
        figures[pk]["roi"] = (total["revenue"] - total["cost"]) / total["cost"] if total["cost"] else None
