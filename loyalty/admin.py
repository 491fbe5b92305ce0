"""Admin for the programme (settings, tiers, earn rules, promotions, each with a backtest before saving),
the members' ledgers (entries, lots, tier history; read-only), manual adjustments and bulk adjustments.

Thin: every write goes through loyalty.services; configuration changes are audited by
django-simple-history, ledger writes are their own audit trail."""

from __future__ import annotations

import importlib.util
import uuid

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.translation import gettext_lazy as _
from unfold.admin import ModelAdmin, TabularInline

from crm.admin.base import HistoryAdmin, ReadOnlyAdmin
from crm.admin.customer_list import CustomerListColumn, customer_list_column_register
from loyalty.models import (
    BulkAdjustmentBatch,
    BulkAdjustmentLine,
    EarnRule,
    LedgerEntry,
    LoyaltyAccount,
    ManualAdjustment,
    OwedPoints,
    PointLot,
    ProgrammeSettings,
    Promotion,
    Tier,
    TierChange,
)
from loyalty.selectors import account_history, account_lots, account_summary, account_tier_history
from loyalty.services import bulk_adjust
from loyalty.services.backtest import backtest_run
from loyalty.services.ledger import LoyaltyError, manual_adjustment_create

# --- Programme configuration, with a backtest before saving ---------------------------------------


class BacktestMixin:
    """Adds a “Backtest” button to the change form. Pressing it validates the form, runs the backtest with
    the unsaved object in place of the saved one, and shows the result with a button that saves exactly
    the data that was tested. Nothing is saved or logged by the backtest itself."""

    change_form_template = "admin/loyalty/change_form_backtest.html"
    backtest_draft = "rule"  # the backtest_run argument the draft goes to

    def _backtesting(self, request) -> bool:
        return request.method == "POST" and "_backtest" in request.POST

    def save_model(self, request, obj, form, change):
        if not self._backtesting(request):
            super().save_model(request, obj, form, change)

    def save_related(self, request, form, formsets, change):
        if not self._backtesting(request):
            super().save_related(request, form, formsets, change)

    def log_addition(self, request, obj, message):
        if not self._backtesting(request):
            return super().log_addition(request, obj, message)

    def log_change(self, request, obj, message):
        if not self._backtesting(request):
            return super().log_change(request, obj, message)

    def response_add(self, request, obj, post_url_continue=None):
        if self._backtesting(request):
            return self._backtest_response(request, obj)
        return super().response_add(request, obj, post_url_continue)

    def response_change(self, request, obj):
        if self._backtesting(request):
            return self._backtest_response(request, obj)
        return super().response_change(request, obj)

    def _backtest_response(self, request, obj):
        result = backtest_run(**{f"draft_{self.backtest_draft}": obj})
        hidden = [
            (name, value)
            for name in request.POST
            if name not in {"_backtest", "csrfmiddlewaretoken"}
            for value in request.POST.getlist(name)
        ]
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": _("Backtest of %(object)s") % {"object": obj},
            "object": obj,
            "result": result,
            "hidden": hidden,
            "tier_moves": sorted(result.tier_moves.items(), key=lambda kv: -kv[1]),
        }
        return TemplateResponse(request, "admin/loyalty/backtest_result.html", context)


@admin.register(ProgrammeSettings)
class ProgrammeSettingsAdmin(BacktestMixin, HistoryAdmin):
    backtest_draft = "programme"
    list_display = ("name", "return_window_days", "expiry_policy", "tier_basis", "tier_window_months")
    fieldsets = (
        (None, {"fields": ("name", "currency", "time_zone", "transfer_enabled")}),
        (
            _("Pending points and expiry"),
            {"fields": ("return_window_days", "expiry_policy", "expiry_months", "expiring_notice_days")},
        ),
        (
            _("Tiers"),
            {"fields": ("tier_basis", "tier_window_months", "tier_review_months", "downgrade_grace_days")},
        ),
    )

    def has_add_permission(self, request):
        return super().has_add_permission(request) and not ProgrammeSettings.objects.exists()

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Tier)
class TierAdmin(BacktestMixin, HistoryAdmin):
    backtest_draft = "tier"
    list_display = (
        "name",
        "code",
        "rank",
        "threshold_spend",
        "threshold_points",
        "earn_multiplier",
        "birthday_gift_points",
        "free_shipping",
        "exclusive_rewards",
        "is_active",
    )
    ordering = ("rank",)

    def has_delete_permission(self, request, obj=None):
        return False  # deactivate instead: accounts and history point at tiers


@admin.register(EarnRule)
class EarnRuleAdmin(BacktestMixin, HistoryAdmin):
    backtest_draft = "rule"
    list_display = (
        "name",
        "kind",
        "points_per_unit",
        "multiplier",
        "event",
        "bonus_points",
        "starts_at",
        "ends_at",
        "is_active",
    )
    list_filter = ("kind", "is_active", "event")
    search_fields = ("name", "sku", "category")
    fieldsets = (
        (None, {"fields": ("name", "kind", "is_active", ("starts_at", "ends_at"))}),
        (_("Order points"), {"fields": ("points_per_unit", "currency", "multiplier", "sku", "category")}),
        (_("Event bonus"), {"fields": ("event", "trigger_event_type", "bonus_points")}),
        (_("Caps"), {"fields": ("cap_per_day", "cap_per_customer")}),
    )

    def has_delete_permission(self, request, obj=None):
        return False  # entries point at the rule that earned them: end or deactivate it instead


@admin.register(Promotion)
class PromotionAdmin(BacktestMixin, HistoryAdmin):
    backtest_draft = "promotion"
    list_display = ("name", "multiplier", "category", "starts_at", "ends_at", "is_active")
    list_filter = ("is_active",)


# --- Members' ledgers ---------------------------------------------------------------------------------


@admin.register(LoyaltyAccount)
class LoyaltyAccountAdmin(ReadOnlyAdmin):
    # Listed by the member's name (the account's own str() is ids only, see change_view).
    list_display = ("member", "tier", "available", "pending", "owed", "status", "id")
    list_display_links = ("member",)
    list_filter = ("tier", "status")
    search_fields = ("customer__external_id", "customer__name", "customer__phone", "customer__email")
    list_select_related = ("customer", "tier")
    raw_id_fields = ("customer", "merged_into")
    change_form_template = "admin/loyalty/account_change_form.html"
    show_full_result_count = False

    @admin.display(description=_("member"), ordering="customer__name")
    def member(self, obj):
        if obj.customer_id is None:
            return _("(merged account #%(id)s)") % {"id": obj.pk}
        return obj.customer.name or f"#{obj.customer_id}"

    def change_view(self, request, object_id, form_url="", extra_context=None):
        from django.utils import timezone

        account = self.get_object(request, object_id)
        extra = dict(extra_context or {})
        if account is not None:
            extra.update(
                summary=account_summary(account=account, now=timezone.now()),
                entries=account_history(account=account)[:100],
                lots=account_lots(account=account).filter(remaining__gt=0)[:100],
                tier_history=account_tier_history(account=account)[:50],
                debts=account.debts.filter(remaining__gt=0),
                entries_url=reverse("admin:loyalty_ledgerentry_changelist")
                + f"?account__id__exact={account.pk}",
                lots_url=reverse("admin:loyalty_pointlot_changelist") + f"?account__id__exact={account.pk}",
                adjust_url=reverse("admin:loyalty_manualadjustment_add") + f"?account={account.pk}",
                # The account's own str() is ids only (it is shown in lists of millions of entries, where
                # reading each customer would cost a query); its page names the member.
                title=_("Loyalty account #%(id)s: %(customer)s")
                % {"id": account.pk, "customer": account.customer},
            )
        return super().change_view(request, object_id, form_url, extra)


@admin.register(LedgerEntry)
class LedgerEntryAdmin(ReadOnlyAdmin):
    list_display = (
        "id",
        "account",
        "kind",
        "points",
        "pending_delta",
        "owed_delta",
        "reason_shown",
        "reference",
        "occurred_at",
        "created_by",
    )
    list_filter = ("kind",)
    search_fields = ("=idempotency_key", "=reference", "=account__customer__external_id")
    list_select_related = ("account", "created_by")
    raw_id_fields = ("account", "order", "order_line", "lot", "rule")
    show_full_result_count = False

    @admin.display(description=_("reason"), ordering="reason")
    def reason_shown(self, obj):
        return obj.reason_display  # a job's reason code in the reader's language


@admin.register(PointLot)
class PointLotAdmin(ReadOnlyAdmin):
    list_display = (
        "id",
        "account",
        "state",
        "points",
        "remaining",
        "consumed",
        "expired",
        "earned_at",
        "available_at",
        "expires_at",
    )
    list_filter = ("state",)
    raw_id_fields = ("account", "earn_entry", "order_line", "expire_entry")
    show_full_result_count = False


@admin.register(TierChange)
class TierChangeAdmin(ReadOnlyAdmin):
    list_display = (
        "account",
        "from_tier",
        "to_tier",
        "reason",
        "qualifying_value",
        "changed_at",
        "created_by",
    )
    list_filter = ("reason", "to_tier")
    raw_id_fields = ("account",)


@admin.register(OwedPoints)
class OwedPointsAdmin(ReadOnlyAdmin):
    list_display = ("account", "points", "remaining", "created_at")
    raw_id_fields = ("account", "entry")


# --- Manual adjustments -------------------------------------------------------------------------------


class ManualAdjustmentForm(forms.ModelForm):
    """The adjustment is made in clean(), through the service, so a refusal (not enough points, a reused
    token) is shown on the form instead of failing the request."""

    token = forms.CharField(widget=forms.HiddenInput)

    class Meta:
        model = ManualAdjustment
        fields = ("account", "points", "reason")

    def __init__(self, *args, request=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.request = request
        if not self.is_bound:
            self.fields["token"].initial = uuid.uuid4().hex  # one per rendered form: a double submit is one
        self.fields["reason"].required = True

    def clean(self):
        data = super().clean()
        if self.errors:
            return data
        if data["points"] == 0:
            raise ValidationError({"points": _("Enter a non-zero number of points.")})
        try:
            self.instance = manual_adjustment_create(
                account=data["account"],
                points=data["points"],
                reason=data["reason"],
                idempotency_key=data["token"],
                created_by=self.request.user if self.request else None,
            )
        except LoyaltyError as exc:
            raise ValidationError(str(exc.message))
        return data

    def save(self, commit=True):
        return self.instance  # already written by the service in clean()


@admin.register(ManualAdjustment)
class ManualAdjustmentAdmin(ModelAdmin):
    form = ManualAdjustmentForm
    list_display = ("account", "points", "reason", "created_by", "created_at")
    raw_id_fields = ("account",)
    search_fields = ("=account__customer__external_id", "reason")
    list_select_related = ("account", "created_by")

    def get_form(self, request, obj=None, change=False, **kwargs):
        form_class = super().get_form(request, obj, change=change, **kwargs)

        class WithRequest(form_class):
            def __init__(self, *args, **kw):
                super().__init__(*args, request=request, **kw)

        return WithRequest

    def save_model(self, request, obj, form, change):
        pass  # written by the service in the form's clean()

    def save_related(self, request, form, formsets, change):
        pass

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


# --- Bulk adjustments ---------------------------------------------------------------------------------


class BulkUploadForm(forms.Form):
    name = forms.CharField(label=_("Name"), max_length=200)
    reason = forms.CharField(label=_("Reason"), max_length=300)
    file = forms.FileField(
        label=_("CSV file"),
        help_text=_("Columns: customer_external_id, points (negative removes), reason (optional)."),
    )


class BulkAdjustmentLineInline(TabularInline):
    model = BulkAdjustmentLine
    fields = ("line_no", "customer_external_id", "customer", "points", "reason", "error", "entry")
    readonly_fields = fields
    can_delete = False
    extra = 0
    max_num = 0
    show_change_link = False

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("customer", "entry")


@admin.register(BulkAdjustmentBatch)
class BulkAdjustmentBatchAdmin(HistoryAdmin):
    list_display = (
        "name",
        "status",
        "line_count",
        "error_count",
        "total_points",
        "progress",
        "created_by",
        "approved_by",
        "applied_at",
    )
    list_filter = ("status",)
    readonly_fields = (
        "name",
        "reason",
        "file_name",
        "file_sha256",
        "status",
        "progress",
        "progress_at",
        "line_count",
        "error_count",
        "total_points",
        "created_by",
        "created_at",
        "approved_by",
        "approved_at",
        "applied_at",
    )
    inlines = [BulkAdjustmentLineInline]
    change_form_template = "admin/loyalty/bulk_change_form.html"

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description=_("progress"))
    def progress(self, obj):
        total = obj.lines_to_apply
        if (
            obj.status in (BulkAdjustmentBatch.Status.PREVIEW, BulkAdjustmentBatch.Status.REJECTED)
            or not total
        ):
            return "—"
        return _("%(done)d of %(total)d lines (%(percent)d%%)") % {
            "done": obj.lines_done,
            "total": total,
            "percent": obj.lines_done * 100 // total,
        }

    def get_urls(self):
        return [
            path(
                "upload/",
                self.admin_site.admin_view(self.upload_view),
                name="loyalty_bulkadjustmentbatch_upload",
            ),
            path(
                "<int:batch_id>/decide/",
                self.admin_site.admin_view(self.decide_view),
                name="loyalty_bulkadjustmentbatch_decide",
            ),
            *super().get_urls(),
        ]

    def add_view(self, request, form_url="", extra_context=None):
        return HttpResponseRedirect(reverse("admin:loyalty_bulkadjustmentbatch_upload"))

    def upload_view(self, request):
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = BulkUploadForm(request.POST or None, request.FILES or None)
        if request.method == "POST" and form.is_valid():
            upload = form.cleaned_data["file"]
            try:
                batch = bulk_adjust.batch_upload(
                    name=form.cleaned_data["name"],
                    reason=form.cleaned_data["reason"],
                    data=upload.read(),
                    file_name=upload.name,
                    created_by=request.user,
                )
            except ValidationError as exc:
                for message in exc.messages:
                    form.add_error(None, message)
            else:
                messages.info(
                    request, _("Uploaded. Check the preview; another staff member must approve it.")
                )
                return HttpResponseRedirect(
                    reverse("admin:loyalty_bulkadjustmentbatch_change", args=[batch.pk])
                )
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": _("Upload bulk adjustments"),
            "form": form,
        }
        return TemplateResponse(request, "admin/loyalty/bulk_upload.html", context)

    def decide_view(self, request, batch_id):
        if request.method != "POST" or not self.has_change_permission(request):
            raise PermissionDenied
        batch = get_object_or_404(BulkAdjustmentBatch, pk=batch_id)
        try:
            if "_approve" in request.POST:
                batch = bulk_adjust.batch_approve(batch=batch, approved_by=request.user)
                if batch.status == BulkAdjustmentBatch.Status.APPLIED:
                    messages.success(
                        request, _("Approved and applied: %(n)d lines.") % {"n": batch.line_count}
                    )
                else:
                    messages.success(
                        request,
                        _(
                            "Approved: the %(n)d lines are being applied in the background; "
                            "this page shows the progress."
                        )
                        % {"n": batch.line_count},
                    )
            elif "_reject" in request.POST:
                bulk_adjust.batch_reject(batch=batch, rejected_by=request.user)
                messages.info(request, _("Rejected."))
        except ValidationError as exc:
            for message in exc.messages:
                messages.error(request, message)
        return HttpResponseRedirect(reverse("admin:loyalty_bulkadjustmentbatch_change", args=[batch.pk]))

    def change_view(self, request, object_id, form_url="", extra_context=None):
        batch = self.get_object(request, object_id)
        extra = dict(extra_context or {})
        if batch is not None:
            extra.update(
                decide_url=reverse("admin:loyalty_bulkadjustmentbatch_decide", args=[batch.pk]),
                can_approve=batch.status == BulkAdjustmentBatch.Status.PREVIEW
                and batch.created_by_id != request.user.pk
                and not batch.error_count,
                awaiting=batch.status == BulkAdjustmentBatch.Status.PREVIEW,
            )
        return super().change_view(request, object_id, form_url, extra)


class TierColumnFilter(admin.SimpleListFilter):
    """The customer list's filter on the member's tier (registered into crm's list below)."""

    title = _("tier")
    parameter_name = "tier"

    def lookups(self, request, model_admin):
        return [*Tier.objects.order_by("rank").values_list("pk", "name"), ("none", _("Not a member"))]

    def queryset(self, request, queryset):
        if self.value() == "none":
            return queryset.filter(loyalty_account__isnull=True)
        if (value := self.value() or "").isascii() and value.isdigit():
            return queryset.filter(loyalty_account__tier_id=int(self.value()))
        return queryset


def _tiers_load(customers: list) -> None:
    """The page's tiers in one query."""
    names = dict(
        LoyaltyAccount.objects.filter(customer_id__in=[c.pk for c in customers]).values_list(
            "customer_id", "tier__name"
        )
    )
    for customer in customers:
        customer.loyalty_tier_name = names.get(customer.pk)


@admin.display(description=_("tier"))
def tier_column(customer):
    return getattr(customer, "loyalty_tier_name", None) or "—"


customer_list_column_register(
    CustomerListColumn(
        name="tier", after="phone", display=tier_column, load=_tiers_load, list_filter=TierColumnFilter
    )
)

# The rewards engineer's admin (rewards catalogue, coupons, members) registers itself on import.
if importlib.util.find_spec("loyalty.admin_rewards") is not None:
    from loyalty import admin_rewards  # noqa: F401, E402

from loyalty import admin_customer_360  # noqa: F401, E402  (fills the customer 360's points panel)
