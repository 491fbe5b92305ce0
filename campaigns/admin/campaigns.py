"""Campaigns in the admin: the list (status, audience, schedule, sent and delivered), the form with its
variants inline, the buttons of its life (submit, approve and schedule, pause, resume, cancel: each shown
to whoever may press it, each a POST to a service), and the live progress bar of its latest run.

The services (campaigns/services/campaigns.py) own every change of status; these pages only call them."""

from __future__ import annotations

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponseNotAllowed, HttpResponseRedirect, JsonResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _
from unfold.admin import TabularInline

from campaigns.admin.schedule_fields import CampaignScheduleForm, schedule_summary
from campaigns.campaign_selectors import campaign_run_progress, campaigns_list_figures
from campaigns.models import (
    Campaign,
    CampaignChannelCost,
    CampaignRun,
    CampaignStatus,
    CampaignVariant,
    ScheduleKind,
)
from campaigns.services import campaigns as services
from crm.admin.base import HistoryAdmin
from crm.clock import moment_display

EDITABLE = (CampaignStatus.DRAFT, CampaignStatus.AWAITING_APPROVAL)
PROGRESS_JS = "campaigns/admin/campaign_progress.js"


class CampaignVariantInline(TabularInline):
    model = CampaignVariant
    extra = 0
    min_num = 1
    fields = ("key", "template", "channel", "weight", "send_delay")

    def has_change_permission(self, request, obj=None):
        return (obj is None or obj.status in EDITABLE) and super().has_change_permission(request, obj)

    def has_add_permission(self, request, obj=None):
        return (obj is None or obj.status in EDITABLE) and super().has_add_permission(request, obj)

    def has_delete_permission(self, request, obj=None):
        return (obj is None or obj.status in EDITABLE) and super().has_delete_permission(request, obj)


class CampaignChannelCostInline(CampaignVariantInline):
    """What a message costs on each channel the variants use, for ROI (editable while the variants are)."""

    model = CampaignChannelCost
    min_num = 0
    fields = ("channel", "cost_per_message")


# (action, service, label, the permission it needs beyond change, statuses it is offered in)
ACTIONS = {
    "submit": (
        services.campaign_submit,
        _("Submit for approval"),
        None,
        (CampaignStatus.DRAFT,),
    ),
    "approve": (
        services.campaign_approve,
        _("Approve and schedule"),
        services.APPROVE_PERMISSION,
        (CampaignStatus.DRAFT, CampaignStatus.AWAITING_APPROVAL),
    ),
    "pause": (
        services.campaign_pause,
        _("Pause"),
        None,
        (CampaignStatus.SCHEDULED, CampaignStatus.SENDING),
    ),
    "resume": (services.campaign_resume, _("Resume"), None, (CampaignStatus.PAUSED,)),
    "cancel": (
        services.campaign_cancel,
        _("Cancel the campaign"),
        None,
        (
            CampaignStatus.DRAFT,
            CampaignStatus.AWAITING_APPROVAL,
            CampaignStatus.SCHEDULED,
            CampaignStatus.SENDING,
            CampaignStatus.PAUSED,
        ),
    ),
}
DONE = {
    "submit": _("Submitted for approval."),
    "approve": _("Approved and scheduled."),
    "pause": _("Paused: %(count)s queued messages are held."),
    "resume": _("Resumed: %(count)s held messages are queued again."),
    "cancel": _("Cancelled: %(count)s queued messages were withdrawn."),
}


@admin.register(Campaign)
class CampaignAdmin(HistoryAdmin):
    form = CampaignScheduleForm  # the schedule fields' widgets, help texts and checks
    list_display = (
        "name",
        "status_display",
        "channel",
        "audience_display",
        "schedule_display",
        "sent_display",
        "delivered_display",
        "converted_display",
        "revenue_display",
        "roi_display",
    )
    list_filter = ("status", "channel")
    search_fields = ("name",)
    inlines = [CampaignVariantInline, CampaignChannelCostInline]
    change_form_template = "admin/campaigns/campaign/change_form.html"
    autocomplete_fields = ()
    filter_horizontal = ("exclude_segments",)
    fieldsets = (
        (None, {"fields": ("name", "goal", "channel", "status")}),
        (
            _("Audience"),
            {
                "fields": (
                    "audience_kind",
                    "segment",
                    "static_list",
                    "exclude_segments",
                    "exclude_campaign",
                    "exclude_campaign_days",
                )
            },
        ),
        (_("Delivery"), {"fields": ("priority", "on_cap", "cost_per_message", "currency")}),
        (
            _("Experiment"),
            {
                "fields": (
                    "holdout_percent",
                    "test_percent",
                    "winner_metric",
                    "winner_wait",
                    "winner_min_sample",
                    "attribution_days",
                )
            },
        ),
        (
            _("Schedule"),
            {
                "fields": (
                    "schedule_kind",
                    "send_at",
                    "recurrence_kind",
                    "cron",
                    "interval",
                    "calendar_code",
                    "calendar_offset_days",
                    "send_time",
                    "local_time",
                    "ends_at",
                )
            },
        ),
        (_("Approval"), {"fields": ("created_by", "approved_by", "approved_at", "created_at", "updated_at")}),
    )
    readonly_fields = ("status", "created_by", "approved_by", "approved_at", "created_at", "updated_at")

    class Media:
        js = [PROGRESS_JS]

    def get_readonly_fields(self, request, obj=None):
        if obj is not None and obj.status not in EDITABLE:
            # Sent or scheduled: what was approved is what goes out; the history keeps every change.
            return [f for fieldset in self.fieldsets for f in fieldset[1]["fields"]]
        return self.readonly_fields

    def has_delete_permission(self, request, obj=None):
        # A campaign that sent anything is kept: its runs, recipients and report are the record.
        if obj is not None and obj.runs.filter(started_at__isnull=False).exists():
            return False
        return super().has_delete_permission(request, obj)

    def save_model(self, request, obj, form, change):
        if not change:
            obj.created_by = request.user
        super().save_model(request, obj, form, change)

    # --- The list ---

    def get_changelist_instance(self, request):
        changelist = super().get_changelist_instance(request)
        # The page's figures in one query over the kept counts (campaigns.campaign_selectors).
        self._figures = campaigns_list_figures([c.pk for c in changelist.result_list])
        return changelist

    def _figure(self, obj, key):
        return getattr(self, "_figures", {}).get(obj.pk, {}).get(key)

    @admin.display(description=_("status"), ordering="status")
    def status_display(self, obj):
        return obj.get_status_display()

    @admin.display(description=_("audience size"))
    def audience_display(self, obj):
        value = self._figure(obj, "audience")
        return "—" if value is None else f"{value:,}"

    @admin.display(description=_("schedule"))
    def schedule_display(self, obj):
        if obj.schedule_kind == ScheduleKind.AT and obj.send_at:
            return moment_display(obj.send_at)
        if obj.schedule_kind == ScheduleKind.RECURRING:
            summary = schedule_summary(obj) or obj.get_recurrence_kind_display()
            return format_html("{} ({})", obj.get_schedule_kind_display(), summary)
        return obj.get_schedule_kind_display()

    @admin.display(description=_("sent"))
    def sent_display(self, obj):
        return f"{self._figure(obj, 'sent') or 0:,}"

    @admin.display(description=_("delivered"))
    def delivered_display(self, obj):
        return f"{self._figure(obj, 'delivered') or 0:,}"

    @admin.display(description=_("converted"))
    def converted_display(self, obj):
        value = self._figure(obj, "converted")
        return "—" if value is None else f"{value:,}"

    @admin.display(description=_("revenue"))
    def revenue_display(self, obj):
        value = self._figure(obj, "revenue")
        return "—" if value is None else f"{value:,.2f} {obj.currency}"

    @admin.display(description=_("ROI"))
    def roi_display(self, obj):
        value = self._figure(obj, "roi")
        return "—" if value is None else f"{value:.0%}"

    # --- The campaign's page: buttons and progress ---

    def _allowed_actions(self, request, obj) -> list[tuple[str, str]]:
        if obj is None or not self.has_change_permission(request, obj):
            return []
        offered = []
        for name, (_service, label, permission, statuses) in ACTIONS.items():
            if obj.status in statuses and (permission is None or request.user.has_perm(permission)):
                offered.append((name, label))
        return offered

    def change_view(self, request, object_id, form_url="", extra_context=None):
        obj = self.get_object(request, object_id)
        extra = dict(extra_context or {})
        if obj is not None:
            extra["campaign_actions"] = self._allowed_actions(request, obj)
            runs = list(obj.runs.order_by("-due_at", "-id")[:10])
            extra["campaign_runs"] = runs
            extra["progress_url"] = reverse("admin:campaigns_campaign_progress", args=[obj.pk])
            extra["initial_progress"] = campaign_run_progress(runs[0]) if runs else None
        return super().change_view(request, object_id, form_url, extra_context=extra)

    def get_urls(self):
        wrap = self.admin_site.admin_view
        return [
            path("<int:pk>/progress/", wrap(self.progress_view), name="campaigns_campaign_progress"),
            path("<int:pk>/do/<str:action>/", wrap(self.action_view), name="campaigns_campaign_action"),
            *super().get_urls(),
        ]

    def _campaign_or_404(self, request, pk) -> Campaign:
        campaign = self.get_object(request, str(pk))
        if campaign is None:
            raise Http404(gettext("No campaign with id %(id)s.") % {"id": pk})
        return campaign

    def progress_view(self, request, pk):
        """The latest run's progress as JSON, polled by the page every 2 s: one small query."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        run = (
            CampaignRun.objects.filter(campaign_id=pk)
            .select_related("campaign")
            .order_by("-due_at", "-id")
            .first()
        )
        if run is None:
            if not Campaign.objects.filter(pk=pk).exists():
                return JsonResponse(
                    {"error": gettext("No campaign with id %(id)s.") % {"id": pk}}, status=404
                )
            return JsonResponse({"run": None, "message": gettext("Not started yet.")})
        if run.status == "sending":
            services.campaign_run_settle(run=run, now=timezone.now())
        return JsonResponse(campaign_run_progress(run))

    def action_view(self, request, pk, action):
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        campaign = self._campaign_or_404(request, pk)
        back = reverse("admin:campaigns_campaign_change", args=[campaign.pk])
        if action not in ACTIONS or not self.has_change_permission(request, campaign):
            raise PermissionDenied
        permission = ACTIONS[action][2]
        if permission is not None and not request.user.has_perm(permission):
            raise PermissionDenied
        if action not in dict(self._allowed_actions(request, campaign)):
            messages.error(
                request,
                gettext("The campaign is %(status)s: this is not possible now.")
                % {"status": campaign.get_status_display()},
            )
            return HttpResponseRedirect(back)
        service = ACTIONS[action][0]
        now = timezone.now()
        try:
            if action == "submit":
                result = service(campaign=campaign, by=request.user)
            else:
                result = service(campaign=campaign, by=request.user, now=now)
        except services.CampaignError as exc:
            messages.error(request, exc.message)
            return HttpResponseRedirect(back)
        count = result if isinstance(result, int) else 0
        messages.success(request, DONE[action] % {"count": f"{count:,}"})
        return HttpResponseRedirect(back)
