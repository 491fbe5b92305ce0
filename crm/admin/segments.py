"""Admin for segments (with the rule builder), static lists and snapshots. Thin: every read and write goes
through crm.segments."""

from __future__ import annotations

import json
from datetime import date

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import Count
from django.http import HttpResponseNotAllowed, JsonResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, path, reverse
from django.utils.html import format_html
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy, ngettext
from unfold.admin import ModelAdmin

from crm.models import (
    Segment,
    SegmentSnapshot,
    StaticList,
    StaticListMember,
)
from crm.segments.fields import RuleInvalid
from crm.segments.forms import AddToStaticListForm, SegmentForm, SnapshotForm, StaticListForm
from crm.segments.selectors import (
    PreviewTooSlow,
    customers_csv_rows,
    segment_customers,
    segment_preview,
    snapshot_customers,
    static_list_customers,
)
from crm.segments.services import (
    UploadRejected,
    segment_save,
    segment_snapshot_create,
    static_list_add,
    static_list_upload,
)


def _csv_response(rows, filename: str) -> StreamingHttpResponse:
    def body():
        yield "\ufeff"  # a BOM, so spreadsheet programs read the UTF-8 (Chinese names) correctly
        yield from rows

    response = StreamingHttpResponse(body(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


def _customer_url(pk: int) -> str | None:
    try:
        return reverse("admin:crm_customer_change", args=[pk])
    except NoReverseMatch:
        return None


def problems_json(error: RuleInvalid) -> list[dict]:
    return [
        {"path": p.path, "loc": list(p.loc), "message": p.message, "text": str(p)} for p in error.problems
    ]


@admin.register(Segment)
class SegmentAdmin(ModelAdmin):
    form = SegmentForm
    list_display = ["name", "last_count", "last_counted_at", "updated_at"]
    search_fields = ["name", "description"]
    readonly_fields = ["last_count", "last_counted_at", "created_by", "created_at", "updated_at"]
    fieldsets = [
        (None, {"fields": ["name", "description", "rule"]}),
        (gettext_lazy("Record"), {"fields": readonly_fields, "classes": ["collapse"]}),
    ]
    change_form_template = "admin/crm/segments/segment_change_form.html"
    actions = ["snapshot_selected"]

    def get_urls(self):
        wrap = self.admin_site.admin_view
        return [
            path("preview/", wrap(self.preview_view), name="crm_segment_preview"),
            path("<int:pk>/snapshot/", wrap(self.snapshot_view), name="crm_segment_snapshot"),
            path("<int:pk>/export/", wrap(self.export_view), name="crm_segment_export"),
            *super().get_urls(),
        ]

    def save_model(self, request, obj, form, change):
        segment_save(segment=obj, created_by=None if change else request.user)

    def preview_view(self, request):
        """The builder's live count: POST {"rule": {...}} -> {"count", "sample"} or {"errors"}."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not (self.has_view_permission(request) or self.has_add_permission(request)):
            raise PermissionDenied
        try:
            rule = json.loads(request.body or b"{}")["rule"]
        except (ValueError, KeyError, TypeError):
            message = _('The request body must be JSON like {"rule": {...}}.')
            return JsonResponse(
                {"errors": [{"path": "", "loc": [], "message": message, "text": message}]}, status=400
            )
        try:
            result = segment_preview(rule=rule)
        except RuleInvalid as e:
            return JsonResponse({"errors": problems_json(e)}, status=400)
        except PreviewTooSlow as e:
            return JsonResponse({"count": None, "warning": str(e)})
        for row in result["sample"]:
            row["url"] = _customer_url(row["id"])
        return JsonResponse(result)

    def snapshot_view(self, request, pk: int):
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        segment = get_object_or_404(Segment, pk=pk)
        if not self.has_change_permission(request, segment):
            raise PermissionDenied
        form = SnapshotForm(request.POST)
        purpose = form.cleaned_data["purpose"] if form.is_valid() else ""
        try:
            snapshot = segment_snapshot_create(segment=segment, purpose=purpose, created_by=request.user)
        except RuleInvalid as e:
            self.message_user(
                request,
                _("The rule cannot be used: %(errors)s") % {"errors": "; ".join(e.messages)},
                messages.ERROR,
            )
            return redirect("admin:crm_segment_change", pk)
        self.message_user(
            request,
            ngettext("Snapshot taken: %(n)s member.", "Snapshot taken: %(n)s members.", snapshot.member_count)
            % {"n": snapshot.member_count},
            messages.SUCCESS,
        )
        return redirect("admin:crm_segmentsnapshot_change", snapshot.pk)

    def export_view(self, request, pk: int):
        segment = get_object_or_404(Segment, pk=pk)
        if not request.user.has_perm("crm.export_segment"):
            raise PermissionDenied
        try:
            customers = segment_customers(segment=segment)
        except RuleInvalid as e:
            self.message_user(
                request,
                _("The rule cannot be used: %(errors)s") % {"errors": "; ".join(e.messages)},
                messages.ERROR,
            )
            return redirect("admin:crm_segment_change", pk)
        return _csv_response(customers_csv_rows(customers), f"segment-{segment.pk}-{date.today():%Y%m%d}.csv")

    def change_view(self, request, object_id, form_url="", extra_context=None):
        extra_context = {
            **(extra_context or {}),
            "can_export": request.user.has_perm("crm.export_segment"),
            "snapshot_form": SnapshotForm(),
        }
        return super().change_view(request, object_id, form_url, extra_context)

    @admin.action(
        description=gettext_lazy("Take a snapshot of the selected segments"), permissions=["change"]
    )
    def snapshot_selected(self, request, queryset):
        for segment in queryset:
            try:
                snapshot = segment_snapshot_create(segment=segment, created_by=request.user)
            except RuleInvalid as e:
                self.message_user(request, f"{segment}: {'; '.join(e.messages)}", messages.ERROR)
                continue
            self.message_user(
                request, _("%(segment)s: %(n)s members") % {"segment": segment, "n": snapshot.member_count}
            )


@admin.register(SegmentSnapshot)
class SegmentSnapshotAdmin(ModelAdmin):
    list_display = ["segment_name", "purpose", "member_count", "created_at", "created_by"]
    list_filter = ["segment"]
    search_fields = ["segment_name", "purpose"]
    readonly_fields = [
        "segment",
        "segment_name",
        "purpose",
        "member_count",
        "created_at",
        "created_by",
        "rule_json",
    ]
    exclude = ["rule"]
    change_form_template = "admin/crm/segments/snapshot_change_form.html"

    def get_urls(self):
        wrap = self.admin_site.admin_view
        return [
            path("<int:pk>/export/", wrap(self.export_view), name="crm_segmentsnapshot_export"),
            *super().get_urls(),
        ]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    @admin.display(description=gettext_lazy("rule"))
    def rule_json(self, obj):
        return format_html("<pre>{}</pre>", json.dumps(obj.rule, ensure_ascii=False, indent=2))

    def export_view(self, request, pk: int):
        snapshot = get_object_or_404(SegmentSnapshot, pk=pk)
        if not request.user.has_perm("crm.export_segment"):
            raise PermissionDenied
        return _csv_response(
            customers_csv_rows(snapshot_customers(snapshot=snapshot)), f"snapshot-{snapshot.pk}.csv"
        )

    def change_view(self, request, object_id, form_url="", extra_context=None):
        extra_context = {**(extra_context or {}), "can_export": request.user.has_perm("crm.export_segment")}
        return super().change_view(request, object_id, form_url, extra_context)


@admin.register(StaticList)
class StaticListAdmin(ModelAdmin):
    form = StaticListForm
    list_display = ["name", "member_count", "updated_at"]
    search_fields = ["name", "description"]
    change_form_template = "admin/crm/segments/staticlist_change_form.html"

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(member_total=Count("members"))

    @admin.display(description=gettext_lazy("members"), ordering="member_total")
    def member_count(self, obj):
        return obj.member_total

    def get_urls(self):
        wrap = self.admin_site.admin_view
        return [
            path("<int:pk>/export/", wrap(self.export_view), name="crm_staticlist_export"),
            *super().get_urls(),
        ]

    def save_model(self, request, obj, form, change):
        if not change:
            obj.created_by = request.user
        super().save_model(request, obj, form, change)
        upload, paste = form.cleaned_data.get("upload"), form.cleaned_data.get("paste")
        if not (upload or paste):
            return
        source = upload if upload else _TextFile(paste)
        try:
            # A savepoint: a rejected file leaves the list saved and its members untouched.
            with transaction.atomic():
                result = static_list_upload(
                    static_list=obj, file=source, match_by=form.cleaned_data.get("match_by") or None
                )
        except UploadRejected as e:
            details = "; ".join(str(p) for p in e.problems[:20])
            self.message_user(request, f"{e.message} {details}", messages.ERROR)
            return
        self.message_user(
            request,
            _(
                "%(added)s customers added, %(already)s already in the list, %(unmatched)s lines matched no customer."
            )
            % {"added": result.added, "already": result.already_members, "unmatched": result.unmatched_count},
            messages.SUCCESS if not result.unmatched_count else messages.WARNING,
        )
        if result.unmatched:
            self.message_user(request, "; ".join(str(p) for p in result.unmatched[:20]), messages.WARNING)

    def export_view(self, request, pk: int):
        static_list = get_object_or_404(StaticList, pk=pk)
        if not request.user.has_perm("crm.export_staticlist"):
            raise PermissionDenied
        rows = customers_csv_rows(static_list_customers(static_list=static_list))
        return _csv_response(rows, f"list-{static_list.pk}.csv")

    def change_view(self, request, object_id, form_url="", extra_context=None):
        extra_context = {
            **(extra_context or {}),
            "can_export": request.user.has_perm("crm.export_staticlist"),
        }
        return super().change_view(request, object_id, form_url, extra_context)


class _TextFile:
    """Pasted identifiers read like an uploaded file."""

    def __init__(self, text: str):
        self.text = text

    def read(self):
        return self.text


@admin.register(StaticListMember)
class StaticListMemberAdmin(ModelAdmin):
    """Hand-picking: add or remove single customers (lists are filled in bulk from the list page)."""

    list_display = ["customer", "static_list", "source", "added_at"]
    list_filter = ["static_list", "source"]
    list_select_related = ["customer", "static_list"]
    raw_id_fields = ["customer"]
    search_fields = ["customer__name", "customer__email", "customer__phone", "customer__external_id"]
    fields = ["static_list", "customer"]
    show_full_result_count = False


def add_to_static_list(modeladmin, request, queryset):
    """Customer admin action: put the selected customers on a static list (hand-picking)."""
    if not request.user.has_perm("crm.add_staticlistmember") and not request.user.has_perm(
        "crm.change_staticlist"
    ):
        raise PermissionDenied
    if "apply" in request.POST:
        form = AddToStaticListForm(request.POST)
        if form.is_valid():
            added, already = static_list_add(
                static_list=form.cleaned_data["static_list"],
                customer_ids=queryset.values_list("pk", flat=True),
                source="manual",
            )
            modeladmin.message_user(
                request,
                _("%(added)s customers added to %(list)s (%(already)s were already on it).")
                % {"added": added, "list": form.cleaned_data["static_list"], "already": already},
            )
            return None
    else:
        form = AddToStaticListForm()
    return TemplateResponse(
        request,
        "admin/crm/segments/add_to_static_list.html",
        {
            **modeladmin.admin_site.each_context(request),
            "title": _("Add customers to a static list"),
            "form": form,
            "selected_ids": request.POST.getlist(admin.helpers.ACTION_CHECKBOX_NAME),
            "count": queryset.count(),
            "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
            "opts": modeladmin.model._meta,
        },
    )


add_to_static_list.short_description = gettext_lazy("Add selected customers to a static list")
