"""Admin for the rewards catalogue, coupon programmes (with "generate N codes"), coupons, redemptions,
referrals and member logins. Imported by loyalty/admin.py; registration happens on import.

Everything here is thin: writes go through loyalty.services.coupons / members.
"""

from __future__ import annotations

import csv

from django import forms
from django.contrib import admin, messages
from django.contrib.auth.hashers import make_password
from django.http import HttpResponseRedirect, StreamingHttpResponse
from django.template.response import TemplateResponse
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext
from unfold.admin import ModelAdmin

from crm.admin.base import ReadOnlyAdmin
from loyalty.models.rewards import (
    Coupon,
    CouponBatch,
    CouponProgramme,
    CouponRedemption,
    MemberApiToken,
    MemberLogin,
    Referral,
    ReferralCode,
    Reward,
    RewardRedemption,
)
from loyalty.services.coupons import code_normalise, coupon_codes_generate, coupon_revoke
from loyalty.services.members import email_normalise, member_token_revoke

# One admin request generates at most this many codes (about a few seconds of COPY); more, in several goes.
ADMIN_MAX_CODES = 200_000


@admin.register(Reward)
class RewardAdmin(ModelAdmin):
    list_display = (
        "name",
        "points_price",
        "stock",
        "per_member_limit",
        "min_tier",
        "valid_from",
        "valid_until",
        "is_active",
        "sort_order",
    )
    list_filter = ("is_active", "min_tier")
    search_fields = ("name",)
    autocomplete_fields = ("coupon_programme",)
    fieldsets = (
        (
            None,
            {
                "fields": (
                    "name",
                    "description",
                    "points_price",
                    "coupon_programme",
                    "is_active",
                    "sort_order",
                )
            },
        ),
        (_("Limits"), {"fields": ("stock", "per_member_limit", "min_tier", "valid_from", "valid_until")}),
    )

    def has_delete_permission(self, request, obj=None):
        # A reward with redemptions is history; withdraw it (inactive) instead.
        if obj is not None and obj.redemptions.exists():
            return False
        return super().has_delete_permission(request, obj)


class GenerateCodesForm(forms.Form):
    quantity = forms.IntegerField(
        label=_("How many codes"), min_value=1, max_value=ADMIN_MAX_CODES, initial=1000
    )


def _codes_csv(coupons):
    class Echo:
        def write(self, value):
            return value

    writer = csv.writer(Echo())
    yield writer.writerow(["code", "programme", "max_uses", "valid_from", "valid_until"])
    for coupon in coupons.iterator(chunk_size=5000):
        yield writer.writerow(
            [
                coupon.code,
                coupon.programme_id,
                coupon.max_uses or "",
                coupon.valid_from or "",
                coupon.valid_until or "",
            ]
        )


@admin.register(CouponProgramme)
class CouponProgrammeAdmin(ModelAdmin):
    list_display = (
        "name",
        "discount_kind",
        "discount_value",
        "currency",
        "min_spend",
        "uses_per_code",
        "valid_from",
        "valid_until",
        "is_active",
    )
    list_filter = ("is_active", "discount_kind")
    search_fields = ("name",)
    readonly_fields = ("created_by", "created_at")
    actions = ("generate_codes",)

    def save_model(self, request, obj, form, change):
        if not change:
            obj.created_by = request.user
        super().save_model(request, obj, form, change)

    def has_generate_permission(self, request):
        return request.user.has_perm("loyalty.add_coupon")

    @admin.action(description=_("Generate codes…"), permissions=["generate"])
    def generate_codes(self, request, queryset):
        if queryset.count() != 1:
            self.message_user(request, _("Choose exactly one programme."), messages.WARNING)
            return None
        programme = queryset.get()
        form = GenerateCodesForm(request.POST if "quantity" in request.POST else None)
        if form.is_valid():
            started = timezone.now()
            batch = coupon_codes_generate(
                programme=programme, quantity=form.cleaned_data["quantity"], created_by=request.user
            )
            seconds = (timezone.now() - started).total_seconds()
            self.message_user(
                request,
                ngettext(
                    "%(n)d code generated for %(programme)s in %(s).1f s (batch #%(batch)d).",
                    "%(n)d codes generated for %(programme)s in %(s).1f s (batch #%(batch)d).",
                    batch.quantity,
                )
                % {"n": batch.quantity, "programme": programme, "s": seconds, "batch": batch.pk},
                messages.SUCCESS,
            )
            return HttpResponseRedirect(request.get_full_path())
        return TemplateResponse(
            request,
            "loyalty/admin/generate_codes.html",
            {
                **self.admin_site.each_context(request),
                "title": _("Generate coupon codes"),
                "programme": programme,
                "form": form,
                "opts": self.model._meta,
                "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
            },
        )


@admin.register(CouponBatch)
class CouponBatchAdmin(ReadOnlyAdmin):
    list_display = ("id", "programme", "quantity", "created_by", "created_at")
    list_select_related = ("programme", "created_by")
    list_filter = ("programme",)
    actions = ("download_codes",)

    def has_download_permission(self, request):
        return request.user.has_perm("loyalty.export_coupon")

    @admin.action(description=_("Download codes (CSV)"), permissions=["download"])
    def download_codes(self, request, queryset):
        coupons = Coupon.objects.filter(batch__in=queryset).order_by("id")
        response = StreamingHttpResponse(_codes_csv(coupons), content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = 'attachment; filename="coupon-codes.csv"'
        return response


@admin.register(Coupon)
class CouponAdmin(ModelAdmin):
    list_display = (
        "code",
        "programme",
        "customer",
        "uses_count",
        "max_uses",
        "valid_until",
        "issued_at",
        "revoked_at",
    )
    list_select_related = ("programme", "customer")
    list_filter = ("programme",)
    # Codes are looked up whole (an index hit), never with a LIKE over 100,000s of rows.
    search_fields = ("=code",)
    raw_id_fields = ("customer", "batch")
    readonly_fields = (
        "programme",
        "batch",
        "code",
        "customer",
        "max_uses",
        "uses_count",
        "issued_at",
        "revoked_at",
    )
    show_full_result_count = False
    actions = ("revoke",)

    def has_add_permission(self, request):
        return False

    def get_search_results(self, request, queryset, search_term):
        return super().get_search_results(request, queryset, code_normalise(search_term))

    @admin.action(description=_("Withdraw the selected coupons"), permissions=["change"])
    def revoke(self, request, queryset):
        count = 0
        for coupon in queryset.filter(revoked_at__isnull=True)[:10_000]:
            coupon_revoke(coupon=coupon)
            count += 1
        self.message_user(request, _("%(n)d coupons withdrawn.") % {"n": count}, messages.SUCCESS)


@admin.register(CouponRedemption)
class CouponRedemptionAdmin(ReadOnlyAdmin):
    list_display = (
        "coupon",
        "order_reference",
        "customer",
        "order_total",
        "discount",
        "currency",
        "store",
        "redeemed_at",
    )
    list_select_related = ("coupon", "customer")
    search_fields = ("=order_reference", "=coupon__code")
    date_hierarchy = "redeemed_at"
    show_full_result_count = False


@admin.register(RewardRedemption)
class RewardRedemptionAdmin(ReadOnlyAdmin):
    list_display = ("id", "reward", "customer", "points", "coupon", "created_at")
    list_select_related = ("reward", "customer", "coupon")
    list_filter = ("reward",)
    raw_id_fields = ("customer",)
    date_hierarchy = "created_at"


@admin.register(ReferralCode)
class ReferralCodeAdmin(ReadOnlyAdmin):
    list_display = ("code", "customer", "created_at")
    list_select_related = ("customer",)
    search_fields = ("=code",)


@admin.register(Referral)
class ReferralAdmin(ReadOnlyAdmin):
    list_display = ("referrer", "referee", "code", "created_at")
    list_select_related = ("referrer", "referee")
    search_fields = ("=code",)
    date_hierarchy = "created_at"


class MemberLoginForm(forms.ModelForm):
    class Meta:
        model = MemberLogin
        fields = ("customer", "email", "is_active")

    def clean_email(self):
        return email_normalise(self.cleaned_data["email"])


@admin.register(MemberLogin)
class MemberLoginAdmin(ModelAdmin):
    """Staff can create a login (the member then signs in with an emailed link and sets a password) or
    deactivate one; they never see or set the password."""

    form = MemberLoginForm
    list_display = ("email", "customer", "is_active", "last_login", "created_at")
    list_select_related = ("customer",)
    list_filter = ("is_active",)
    search_fields = ("=email",)
    raw_id_fields = ("customer",)
    readonly_fields = ("last_login", "created_at")

    def save_model(self, request, obj, form, change):
        if not change and not obj.password:
            obj.password = make_password(None)
        super().save_model(request, obj, form, change)


@admin.register(MemberApiToken)
class MemberApiTokenAdmin(ReadOnlyAdmin):
    list_display = ("prefix", "customer", "name", "created_at", "last_used_at", "revoked_at")
    list_select_related = ("customer",)
    search_fields = ("=prefix",)
    actions = ("revoke",)

    def has_revoke_permission(self, request):
        return request.user.has_perm("loyalty.change_memberapitoken")

    @admin.action(description=_("Revoke the selected tokens"), permissions=["revoke"])
    def revoke(self, request, queryset):
        for token in queryset.filter(revoked_at__isnull=True):
            member_token_revoke(token=token)
        self.message_user(request, _("Tokens revoked."), messages.SUCCESS)
