"""JSON endpoints of the analytics dashboard (mounted by crm/urls_analytics.py) and the context of the
admin page that draws them. Thin: parse and check the query string, read the summaries."""

from __future__ import annotations

import re
from datetime import date, datetime, time, timedelta
from functools import wraps

from django.http import JsonResponse
from django.urls import NoReverseMatch, reverse
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.translation import get_language, gettext_lazy
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET

from crm.analytics import compute, services
from crm.analytics.attribution import merge_attribution
from crm.analytics.funnel import funnel, funnel_labelled
from crm.analytics.ltv import ltv_by_channel
from crm.analytics.sqlbits import reporting_currency
from crm.clock import business_time_zone
from crm.metrics.selectors import metrics_run_started_since
from crm.segments.fields import segment_time_zone

PERMISSION = "crm.view_dashboardsummary"
MONTH_RE = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")
MAX_ATTRIBUTION_MONTHS = 24
MAX_FUNNEL_DAYS = 366


class BadParameter(ValueError):
    pass


def staff_json_endpoint(permission: str, denied):
    """Staff with `permission` only (`denied` is the 403's message); bad parameters are a 400 with a
    message, not a 500."""

    def decorator(view):
        @require_GET
        @wraps(view)
        def wrapper(request, *args, **kwargs):
            user = request.user
            if not user.is_authenticated:
                return JsonResponse({"error": _("Log in to the admin first.")}, status=401)
            if not (user.is_active and user.is_staff and user.has_perm(permission)):
                return JsonResponse({"error": str(denied)}, status=403)
            try:
                return JsonResponse(view(request, *args, **kwargs))
            except BadParameter as e:
                return JsonResponse({"error": str(e)}, status=400)

        return wrapper

    return decorator


def analytics_endpoint(view):
    """Staff with the dashboard permission only; bad parameters are a 400 with a message, not a 500."""
    return staff_json_endpoint(PERMISSION, gettext_lazy("You may not view the dashboards."))(view)


def _payload(summary) -> dict:
    return {**summary.data, "computed_at": summary.computed_at.isoformat()}


@analytics_endpoint
def lifecycle_view(request):
    return compute.lifecycle_labelled(
        _payload(
            services.summary_get_or_compute(
                chart="lifecycle", key="all", compute_fn=compute.lifecycle_history
            )
        )
    )


@analytics_endpoint
def cohorts_view(request):
    return _payload(
        services.summary_get_or_compute(chart="cohorts", key="all", compute_fn=compute.cohort_retention)
    )


@analytics_endpoint
def orders_view(request):
    return _payload(
        services.summary_get_or_compute(chart="orders", key="all", compute_fn=compute.order_months)
    )


@analytics_endpoint
def ltv_view(request):
    summary = services.summary_get_or_compute(
        chart="acquisition", key="all", compute_fn=compute.acquisition_value
    )
    months = None
    if request.GET.get("from") or request.GET.get("to"):
        first, last = _month_range(request, default_months=12)
        months = set(compute.months_between(first, last))
    # CAC entries are read live, so a cost entered a minute ago shows at once.
    return {**ltv_by_channel(summary.data, months=months), "computed_at": summary.computed_at.isoformat()}


@analytics_endpoint
def funnel_view(request):
    if request.GET.get("from") or request.GET.get("to"):
        start_day, end_day = _date(request, "from"), _date(request, "to")
        if start_day > end_day:
            raise BadParameter(
                _("'from' (%(from)s) is after 'to' (%(to)s).") % {"from": start_day, "to": end_day}
            )
        if (end_day - start_day).days >= MAX_FUNNEL_DAYS:
            raise BadParameter(_("A funnel spans at most %(n)s days.") % {"n": MAX_FUNNEL_DAYS})
        tz = segment_time_zone()
        start = datetime.combine(start_day, time.min, tzinfo=tz)
        end = datetime.combine(end_day + timedelta(days=1), time.min, tzinfo=tz)
        return funnel_labelled({**funnel(start=start, end=end), "computed_at": timezone.now().isoformat()})
    days = _int(request, "days", default=30)
    if days not in services.FUNNEL_WINDOWS:
        raise BadParameter(
            _("'days' must be one of %(choices)s, or give 'from' and 'to' dates.")
            % {"choices": ", ".join(map(str, services.FUNNEL_WINDOWS))}
        )
    now = timezone.now()
    start, end = services.funnel_window(days, now)
    return funnel_labelled(
        _payload(
            services.summary_get_or_compute(
                chart="funnel", key=f"{days}d", compute_fn=lambda: funnel(start=start, end=end)
            )
        )
    )


@analytics_endpoint
def attribution_view(request):
    lookback = _int(request, "lookback", default=30)
    if not 1 <= lookback <= 90:
        raise BadParameter(_("'lookback' must be a number of days from 1 to 90."))
    first, last = _month_range(request, default_months=3)
    months = compute.months_between(first, last)
    if len(months) > MAX_ATTRIBUTION_MONTHS:
        raise BadParameter(_("Attribution spans at most %(n)s months.") % {"n": MAX_ATTRIBUTION_MONTHS})
    parts, computed = [], []
    for month in months:
        summary = services.summary_get_or_compute(
            chart="attribution",
            key=services.attribution_key(month, lookback),
            compute_fn=lambda m=month: services.attribution_month(m, lookback),
        )
        parts.append(summary.data)
        computed.append(summary.computed_at)
    return {
        "rows": merge_attribution(parts),
        "from": first,
        "to": last,
        "lookback_days": lookback,
        "currency": reporting_currency(),
        "computed_at": min(computed).isoformat() if computed else None,
    }


# --- Parameters ----------------------------------------------------------------------------------------


def _int(request, name: str, *, default: int) -> int:
    raw = request.GET.get(name)
    if raw in (None, ""):
        return default
    try:
        return int(raw)
    except ValueError:
        raise BadParameter(
            _("'%(name)s' must be a whole number, not '%(value)s'.") % {"name": name, "value": raw[:20]}
        )


def _date(request, name: str) -> date:
    raw = request.GET.get(name, "")
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise BadParameter(
            _("'%(name)s' must be a date (YYYY-MM-DD), not '%(value)s'.") % {"name": name, "value": raw[:20]}
        )


def _month_range(request, *, default_months: int) -> tuple[str, str]:
    current = compute.month_key(timezone.now().astimezone(compute._tz()))
    first = request.GET.get("from") or compute.add_months(current, -(default_months - 1))
    last = request.GET.get("to") or current
    for name, value in (("from", first), ("to", last)):
        if not MONTH_RE.match(value):
            raise BadParameter(
                _("'%(name)s' must be a month (YYYY-MM), not '%(value)s'.")
                % {"name": name, "value": value[:20]}
            )
    if first > last:
        raise BadParameter(_("'from' (%(from)s) is after 'to' (%(to)s).") % {"from": first, "to": last})
    return first, last


# --- The admin page ------------------------------------------------------------------------------------


ENDPOINTS = ["lifecycle", "cohorts", "orders", "ltv", "funnel", "attribution"]
# The browser locale whose medium date style matches the page language's Django formats
# (config/formats): "2026年11月11日 00:00" and "11 Nov 2026, 00:00" (en-GB, not en-US's "Nov 11").
INTL_LOCALES = {"zh-hans": "zh-CN", "en": "en-GB"}


def dashboard_context(request) -> dict:
    try:
        urls = {name: reverse(f"crm_analytics:{name}") for name in ENDPOINTS}
    except NoReverseMatch:
        urls = None
    current = compute.month_key(timezone.now().astimezone(compute._tz()))
    return {
        "endpoints": urls,
        "funnel_windows": services.FUNNEL_WINDOWS,
        "lookbacks": services.ATTRIBUTION_LOOKBACKS,
        "currency": reporting_currency(),
        "default_from": compute.add_months(current, -2),
        "default_to": current,
        # The endpoints send ISO 8601 instants; the page shows them on the business's clock, not the
        # browser's (a staff member travelling still reads Beijing time).
        "chart_clock": {
            "time_zone": str(business_time_zone()),
            "locale": INTL_LOCALES.get(get_language() or "", "en-GB"),
        },
        "chart_labels": {
            "customers": _("Customers"),
            "orders": _("Orders"),
            "revenue": _("Revenue"),
            "aov": _("Average order value"),
            "repeat_rate": _("Repeat-purchase rate"),
            "ltv": _("LTV to date"),
            "predicted_ltv": _("Predicted LTV (to date + next 365 days)"),
            "cac": _("CAC"),
            "ltv_cac": _("LTV : CAC"),
            "predicted_ltv_cac": _("Predicted LTV : CAC"),
            "first_touch": _("First touch"),
            "last_touch": _("Last touch"),
            "linear": _("Linear"),
            "cohort": _("Cohort (first order)"),
            "size": _("Size"),
            "month_n": _("Month %(n)s"),
            "no_data": _("No data yet."),
            "tracked_since": _(
                "Lifecycle stages are recorded from %(date)s, the first computation: the months before have no figures."
            ),
            "no_cac": _("No acquisition cost has been entered for these channels and months yet."),
            "computed_at": _("Computed at %(when)s"),
            "failed": _("This chart could not be loaded: %(error)s"),
            "no_touch": _("(no tracked touch)"),
            "source": _("Source"),
            "campaign": _("Campaign"),
            "overall_repeat": _("All-time repeat-purchase rate: %(rate)s"),
            "of_previous": _("%(rate)s of the previous step"),
        },
    }


# --- Progress of a recomputation started from the admin ------------------------------------------------

# A job queued longer than this without starting most likely has no worker to run it.
QUEUED_TOO_LONG_SECONDS = 30


def _since(request) -> datetime:
    raw = request.GET.get("since", "")
    try:
        since = datetime.fromisoformat(raw)
    except ValueError:
        raise BadParameter(
            _("'since' must be a date and time (ISO 8601), not '%(value)s'.") % {"value": raw[:40]}
        )
    if timezone.is_naive(since):
        raise BadParameter(_("'since' needs a time zone offset, e.g. +08:00."))
    return since


def _queued(seconds: int) -> dict:
    if seconds > QUEUED_TOO_LONG_SECONDS:
        message = _(
            "Queued %(seconds)s s ago and not started yet: is the Celery worker running? (make run starts one.)"
        )
    else:
        message = _("Queued %(seconds)s s ago: waiting for the Celery worker to start it.")
    return {"state": "queued", "message": message % {"seconds": seconds}}


@staff_json_endpoint("crm.view_metricsrun", gettext_lazy("You may not view the metrics runs."))
def metrics_job_view(request):
    """The computation queued at `since` by the lifecycle settings' "Save and recompute"."""
    since = _since(request)
    now = timezone.now()
    run = metrics_run_started_since(since=since)
    if run is None:
        return _queued(max(0, int((now - since).total_seconds())))
    link = reverse("admin:crm_metricsrun_change", args=[run.pk])
    if run.status == run.Status.RUNNING:
        seconds = max(0, int((now - run.started_at).total_seconds()))
        return {
            "state": "running",
            "message": _("Computing every customer's metrics… (%(seconds)s s)") % {"seconds": seconds},
        }
    if run.status == run.Status.FAILED:
        return {
            "state": "failed",
            "message": _("The computation failed: %(error)s") % {"error": run.message[:300]},
            "link": link,
            "link_text": _("See the run"),
        }
    return {
        "state": "done",
        "message": _(
            "Done in %(seconds)s s: as of %(as_of)s, %(customers)s customers, %(changes)s lifecycle-stage changes."
        )
        % {
            "seconds": f"{run.duration_seconds or 0:.1f}",
            "as_of": date_format(run.as_of, "DATE_FORMAT"),
            "customers": f"{run.customers:,}",
            "changes": f"{run.stage_changes:,}",
        },
        "link": link,
        "link_text": _("See the run"),
    }


@analytics_endpoint
def dashboards_job_view(request):
    """The refresh queued at `since` by the dashboard's "Recompute now"."""
    since = _since(request)
    progress = services.analytics_refresh_progress(since=since)
    seconds = max(0, int((timezone.now() - since).total_seconds()))
    body = {"done": progress.done, "total": progress.total}
    if progress.done == 0:
        return {**body, **_queued(seconds)}
    if progress.done < progress.total:
        message = _("Recomputing the dashboards: %(done)s of %(total)s figures (%(seconds)s s)")
        return {"state": "running", "message": message % {**body, "seconds": seconds}, **body}
    message = _("Done: %(total)s figures recomputed in %(seconds)s s. The charts show them.")
    return {
        "state": "done",
        "message": message % {"total": progress.total, "seconds": f"{progress.duration_ms / 1000:.1f}"},
        **body,
    }
