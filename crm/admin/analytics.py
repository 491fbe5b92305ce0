"""The analytics page (its admin entry "Dashboards" opens the charts) and the acquisition costs staff enter
for it. Thin: the figures come from crm.analytics."""

from __future__ import annotations

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpResponseNotAllowed
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.translation import gettext as _
from unfold.admin import ModelAdmin

from crm.admin.base import job_progress_message
from crm.analytics.services import analytics_refresh_queue
from crm.models import AcquisitionCost, DashboardSummary


@admin.register(AcquisitionCost)
class AcquisitionCostAdmin(ModelAdmin):
    list_display = ["month", "channel", "cac", "currency", "note"]
    list_editable = ["cac", "note"]
    list_filter = ["channel", "currency"]
    date_hierarchy = "month"
    ordering = ["-month", "channel"]


@admin.register(DashboardSummary)
class DashboardAdmin(ModelAdmin):
    """The analytics page. Its admin entry ("Dashboards") opens the charts, not a list of summary rows."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def get_urls(self):
        wrap = self.admin_site.admin_view
        return [
            path("refresh/", wrap(self.refresh_view), name="crm_dashboardsummary_refresh"),
            *super().get_urls(),
        ]

    def changelist_view(self, request, extra_context=None):
        if not self.has_view_permission(request):
            raise PermissionDenied
        from crm.analytics.views import dashboard_context

        context = {
            **self.admin_site.each_context(request),
            **dashboard_context(request),
            "title": _("Customer analytics"),
            "opts": self.model._meta,
            "can_refresh": request.user.has_perm("crm.change_dashboardsummary"),
        }
        return TemplateResponse(request, "admin/crm/analytics/dashboard.html", context)

    def refresh_view(self, request):
        """Queue a recomputation of the summaries (the nightly task, now)."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not request.user.has_perm("crm.change_dashboardsummary"):
            raise PermissionDenied
        since = timezone.now()
        analytics_refresh_queue()
        self.message_user(
            request,
            job_progress_message(
                text=_("The dashboards are being recomputed."),
                status_url=reverse("crm_analytics:dashboards_job"),
                since=since,
            ),
        )
        return redirect("admin:crm_dashboardsummary_changelist")
