"""The win-back programme in the admin: the rules and offers (with a preview of tonight's count before
saving), "run now", the report with its charts and CSV, and the runs and assignments, read-only."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponseRedirect, JsonResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _
from unfold.admin import ModelAdmin, TabularInline

from crm.admin.base import LargeTableAdmin, ReadOnlyAdmin
from crm.models.metrics import ValueTier
from crm.task_queue import task_queue_on_commit
from journeys.models import WinbackAssignment, WinbackOffer, WinbackProgramme, WinbackRun
from journeys.models.winback import SUPPRESSION_LABELS
from journeys.services.winback import winback_preview
from journeys.winback_report import GroupResult, winback_report, winback_report_csv_rows

TIER_CHOICES = [(t.value, t.label) for t in (ValueTier.HIGH, ValueTier.MEDIUM, ValueTier.LOW)]


def suppression_text(suppressed: dict) -> str:
    return "; ".join(
        f"{SUPPRESSION_LABELS.get(code, code)}: {n}" for code, n in sorted((suppressed or {}).items())
    )


class WinbackProgrammeForm(forms.ModelForm):
    value_tiers = forms.MultipleChoiceField(
        label=_("value tiers"),
        choices=TIER_CHOICES,
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text=_("None ticked: every buyer."),
    )

    class Meta:
        model = WinbackProgramme
        fields = (
            "name",
            "is_active",
            "audience",
            "journey",
            "cycles_without_order",
            "max_p_alive",
            "value_tiers",
            "budget_kind",
            "budget_offers",
            "budget_amount",
            "currency",
            "sms_capacity",
            "wechat_capacity",
            "email_capacity",
            "message_cost",
            "holdout_percent",
            "reactivation_days",
            "recent_message_days",
            "cooldown_days",
        )


class WinbackOfferInline(TabularInline):
    model = WinbackOffer
    extra = 0
    fields = ("value_tier", "coupon_programme", "points_bonus", "cost")
    autocomplete_fields = ()


@admin.register(WinbackProgramme)
class WinbackProgrammeAdmin(ModelAdmin):
    form = WinbackProgrammeForm
    change_form_template = "admin/journeys/winbackprogramme/change_form.html"
    change_list_template = "admin/journeys/winbackprogramme/change_list.html"
    list_display = ("name", "audience", "is_active", "holdout_percent", "budget", "last_run", "report_link")
    list_filter = ("is_active", "audience")
    inlines = [WinbackOfferInline]
    fieldsets = (
        (None, {"fields": ("name", "is_active", "audience", "journey")}),
        (_("Who is dormant"), {"fields": ("cycles_without_order", "max_p_alive", "value_tiers")}),
        (
            _("Whom to wake first"),
            {
                "fields": (
                    "budget_kind",
                    "budget_offers",
                    "budget_amount",
                    "currency",
                    "sms_capacity",
                    "wechat_capacity",
                    "email_capacity",
                    "message_cost",
                )
            },
        ),
        (
            _("Measurement and exclusions"),
            {
                "fields": (
                    "holdout_percent",
                    "reactivation_days",
                    "recent_message_days",
                    "cooldown_days",
                )
            },
        ),
    )

    @admin.display(description=_("budget"))
    def budget(self, obj):
        if obj.budget_kind == "money":
            return f"{obj.budget_amount} {obj.currency}"
        return gettext("%(n)s offers") % {"n": obj.budget_offers}

    @admin.display(description=_("last run"))
    def last_run(self, obj):
        run = obj.runs.order_by("-run_date").first()
        return run.run_date if run else "—"

    @admin.display(description=_("report"))
    def report_link(self, obj):
        return format_html(
            '<a href="{}">{}</a>',
            reverse("admin:journeys_winbackprogramme_report", args=[obj.pk]),
            gettext("Report"),
        )

    def get_urls(self):
        wrap = self.admin_site.admin_view
        return [
            path("preview/", wrap(self.preview_view), name="journeys_winbackprogramme_preview"),
            path("<int:pk>/run/", wrap(self.run_view), name="journeys_winbackprogramme_run"),
            path("<int:pk>/report/", wrap(self.report_view), name="journeys_winbackprogramme_report"),
            path("<int:pk>/report.csv", wrap(self.csv_view), name="journeys_winbackprogramme_csv"),
            path("demo/", wrap(self.demo_view), name="journeys_winbackprogramme_demo"),
            *super().get_urls(),
        ]

    def preview_view(self, request):
        """The counts tonight's run would find with the rules as they stand in the form, unsaved (the
        change form's "Preview" button posts the form here)."""
        if request.method != "POST" or not self.has_view_permission(request):
            raise PermissionDenied
        pk = request.POST.get("programme_id") or None
        instance = WinbackProgramme.objects.filter(pk=pk).first() if pk else None
        form = self.get_form(request, instance)(request.POST, instance=instance)
        if not form.is_valid():
            return JsonResponse(
                {"ok": False, "errors": {f: [str(e) for e in errs] for f, errs in form.errors.items()}},
                status=400,
            )
        programme = form.save(commit=False)
        preview = winback_preview(programme=programme, now=timezone.now())
        suppressed = [
            {"reason": str(SUPPRESSION_LABELS.get(code, code)), "count": n}
            for code, n in sorted(preview.suppressed.items())
        ]
        return JsonResponse(
            {
                "ok": True,
                "considered": preview.considered,
                "dormant": preview.dormant,
                "eligible": preview.eligible,
                "suppressed": suppressed,
                "text": gettext(
                    "Tonight: %(eligible)s eligible of %(dormant)s customers the rules catch "
                    "(%(considered)s buyers considered)."
                )
                % {
                    "eligible": preview.eligible,
                    "dormant": preview.dormant,
                    "considered": preview.considered,
                },
            }
        )

    def run_view(self, request, pk: int):
        if request.method != "POST" or not self.has_change_permission(request):
            raise PermissionDenied
        programme = get_object_or_404(WinbackProgramme, pk=pk)
        task_queue_on_commit("journeys.tasks.winback_programme_run", programme.pk)
        messages.success(
            request, gettext("Tonight's selection of %(name)s is queued.") % {"name": programme.name}
        )
        return HttpResponseRedirect(reverse("admin:journeys_winbackprogramme_report", args=[programme.pk]))

    def demo_view(self, request):
        if request.method != "POST" or not self.has_add_permission(request):
            raise PermissionDenied
        task_queue_on_commit("journeys.tasks.winback_demo")
        messages.success(
            request,
            gettext(
                "The win-back demo is running in the worker; its programme's report appears here in a minute."
            ),
        )
        return HttpResponseRedirect(reverse("admin:journeys_winbackprogramme_changelist"))

    def report_view(self, request, pk: int):
        if not self.has_view_permission(request):
            raise PermissionDenied
        programme = WinbackProgramme.objects.filter(pk=pk).first()
        if programme is None:
            raise Http404(gettext("No such win-back programme."))
        report = winback_report(programme=programme)
        context = {
            **self.admin_site.each_context(request),
            "title": gettext("Win-back report: %(name)s") % {"name": programme.name},
            "opts": self.model._meta,
            "programme": programme,
            "report": report,
            "total": _group_row(report.total, gettext("All runs")),
            "runs": [
                {
                    **_group_row(g, str(run.run_date)),
                    "run": run,
                    "suppressed": suppression_text(run.suppressed),
                }
                for run, g in reversed(report.runs)
            ],
            "tiers": [_group_row(g, str(dict(ValueTier.choices).get(g.key, g.key))) for g in report.tiers],
            "channels": [_group_row(g, g.key) for g in report.channels],
            "chart": _chart(report),
            "csv_url": reverse("admin:journeys_winbackprogramme_csv", args=[programme.pk]),
            "run_url": reverse("admin:journeys_winbackprogramme_run", args=[programme.pk]),
            "can_run": self.has_change_permission(request),
        }
        return TemplateResponse(request, "admin/journeys/winback_report.html", context)

    def csv_view(self, request, pk: int):
        if not self.has_view_permission(request):
            raise PermissionDenied
        programme = get_object_or_404(WinbackProgramme, pk=pk)

        def rows():
            yield "\ufeff"  # Excel reads UTF-8 only with the byte order mark
            yield from winback_report_csv_rows(programme=programme)

        response = StreamingHttpResponse(rows(), content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="winback-{programme.pk}.csv"'
        return response


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f}%"


def _group_row(group: GroupResult, label: str) -> dict:
    t, h = group.treated, group.holdout
    diff = group.difference
    revenue = group.incremental_revenue
    interval = group.incremental_revenue_interval
    return {
        "label": label,
        "treated": t,
        "holdout": h,
        "treated_rate": _pct(t.rate),
        "holdout_rate": _pct(h.rate),
        "uplift": "—" if diff is None else f"{diff.estimate * 100:+.1f} pp",
        "interval": "—" if diff is None else f"[{diff.low * 100:+.1f}, {diff.high * 100:+.1f}] pp",
        "clear": diff is not None and diff.excludes_zero,
        "incremental_reactivations": "—"
        if group.incremental_reactivations is None
        else f"{group.incremental_reactivations:.1f}",
        "incremental_orders": "—" if group.incremental_orders is None else f"{group.incremental_orders:.1f}",
        "incremental_revenue": "—" if revenue is None else f"{revenue:.2f}",
        "revenue_interval": "—" if interval is None else f"[{interval[0]:.2f}, {interval[1]:.2f}]",
        "cost": f"{group.cost:.2f}",
        "roi": "—" if group.roi is None else f"{group.roi * 100:.0f}%",
    }


def _chart(report) -> dict:
    runs = [(run, g) for run, g in report.runs if g.treated.n]
    return {
        "runs": [str(run.run_date) for run, _g in runs],
        "treated": [None if g.treated.rate is None else round(g.treated.rate * 100, 2) for _r, g in runs],
        "holdout": [None if g.holdout.rate is None else round(g.holdout.rate * 100, 2) for _r, g in runs],
        "uplift": [
            {
                "label": str(dict(ValueTier.choices).get(g.key, g.key)),
                "estimate": round(g.difference.estimate * 100, 2),
                "low": round(g.difference.low * 100, 2),
                "high": round(g.difference.high * 100, 2),
            }
            for g in [*report.tiers, *report.channels]
            if g.difference is not None
        ],
        "labels": {
            "treated": gettext("Treated"),
            "holdout": gettext("Holdout"),
            "rate": gettext("Reactivation rate (%)"),
            "uplift": gettext("Uplift (percentage points)"),
            "interval": gettext("95% interval"),
            "estimate": gettext("Estimate"),
        },
    }


@admin.register(WinbackRun)
class WinbackRunAdmin(ReadOnlyAdmin):
    list_display = (
        "programme",
        "run_date",
        "status",
        "phase",
        "considered",
        "eligible",
        "selected",
        "held_out",
        "enrolled",
        "messaged",
        "budget_spent",
        "suppressed_by_reason",
    )
    list_filter = ("status", "programme")
    list_select_related = ("programme",)
    readonly_fields = ("suppressed_by_reason",)
    exclude = ("suppressed",)

    @admin.display(description=_("suppressed, by reason"))
    def suppressed_by_reason(self, obj):
        return format_html_join(
            "",
            "<div>{}: {}</div>",
            ((SUPPRESSION_LABELS.get(c, c), n) for c, n in sorted(obj.suppressed.items())),
        )


@admin.register(WinbackAssignment)
class WinbackAssignmentAdmin(LargeTableAdmin, ReadOnlyAdmin):
    list_display = (
        "run",
        "customer_id",
        "arm",
        "value_tier",
        "channel",
        "rank",
        "score",
        "enrolled_at",
        "messages",
        "returned_at",
        "revenue",
        "coupon_order",
    )
    list_filter = ("arm", "value_tier", "channel")
    list_select_related = ("run__programme",)
    raw_id_fields = ("customer", "coupon")
    search_fields = ("=customer__id",)
