"""The delivery rules staff edit (frequency caps, the one row of delivery settings, the suppression list)
and the providers' shared state (read-only, for administrators: the System group)."""

from __future__ import annotations

from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError
from django.http import HttpResponseRedirect
from django.urls import reverse
from django.utils.translation import gettext_lazy as _
from unfold.widgets import UnfoldAdminCheckboxSelectMultipleWidget

from campaigns.addresses import address_check
from campaigns.models import (
    Channel,
    DeliverySettings,
    FrequencyCap,
    ProviderState,
    Suppression,
    SuppressionReason,
)
from crm.admin.base import CustomerColumnsMixin, HistoryAdmin, LargeTableAdmin, ReadOnlyAdmin


@admin.register(FrequencyCap)
class FrequencyCapAdmin(HistoryAdmin):
    list_display = ("__str__", "channel", "period", "limit", "active")
    list_editable = ("limit", "active")
    list_filter = ("channel", "period", "active")
    fields = ("channel", "period", "limit", "active")


class DeliverySettingsForm(forms.ModelForm):
    quiet_channels = forms.MultipleChoiceField(
        label=_("channels quiet hours hold for"),
        choices=Channel.choices,
        required=False,
        widget=UnfoldAdminCheckboxSelectMultipleWidget,
        help_text=_("None ticked: every channel. Transactional messages are never held by quiet hours."),
    )

    class Meta:
        model = DeliverySettings
        fields = ("quiet_start", "quiet_end", "quiet_channels", "sms_opt_out_zh", "sms_opt_out_en")
        help_texts = {
            "quiet_start": _(
                "In the customer's own time zone. Quiet hours may cross midnight (21:00 to 08:00)."
            ),
            "sms_opt_out_zh": _("Ends every marketing SMS in Chinese, e.g. 回T退订."),
        }

    def clean(self):
        cleaned = super().clean()
        start, end = cleaned.get("quiet_start"), cleaned.get("quiet_end")
        if start is not None and start == end:
            raise ValidationError(
                _("Quiet hours start and end at the same time: set them apart (e.g. 21:00 to 08:00).")
            )
        return cleaned

    def clean_sms_opt_out_zh(self):
        return self._opt_out("sms_opt_out_zh")

    def clean_sms_opt_out_en(self):
        return self._opt_out("sms_opt_out_en")

    def _opt_out(self, name):
        value = (self.cleaned_data.get(name) or "").strip()
        if not value:
            raise ValidationError(
                _("Marketing SMS must tell the customer how to opt out: this text is required.")
            )
        return value


@admin.register(DeliverySettings)
class DeliverySettingsAdmin(HistoryAdmin):
    """The one row (pk=1): its list opens the row itself."""

    form = DeliverySettingsForm
    fieldsets = (
        (_("Quiet hours"), {"fields": ("quiet_start", "quiet_end", "quiet_channels")}),
        (_("SMS opt-out text"), {"fields": ("sms_opt_out_zh", "sms_opt_out_en")}),
    )

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def changelist_view(self, request, extra_context=None):
        if not self.has_view_or_change_permission(request):
            from django.core.exceptions import PermissionDenied

            raise PermissionDenied
        row = DeliverySettings.current()
        return HttpResponseRedirect(reverse("admin:campaigns_deliverysettings_change", args=[row.pk]))

    def response_change(self, request, obj):
        response = super().response_change(request, obj)
        # "Save" goes back to the list, which is this same page: stay on it.
        if response.status_code == 302 and "_continue" not in request.POST:
            return HttpResponseRedirect(request.path)
        return response


# The admin's sentence for each problem campaigns.addresses reports, with the value quoted.
ADDRESS_PROBLEMS = {
    "invalid_email": _("“%(value)s” is not an email address."),
    "invalid_phone": _(
        "“%(value)s” is not a valid phone number (a Chinese mobile, or international with +)."
    ),
    "not_mobile": _("“%(value)s” is not a mobile number: it cannot receive SMS."),
    "invalid_openid": _("“%(value)s” does not look like a WeChat openid."),
    "invalid_push_token": _("“%(value)s” does not look like a push token."),
}


def suppression_address(channel: str, value: str) -> str:
    """The address in the one spelling the pipeline screens against (campaigns.addresses), or a
    ValidationError saying what is wrong: a suppression spelt otherwise would never match."""
    value = (value or "").strip()
    if not value:
        raise ValidationError(_("Enter the address to suppress."))
    normalised, problem = address_check(channel, value)
    if problem:
        raise ValidationError(ADDRESS_PROBLEMS[problem] % {"value": value})
    return normalised


class SuppressionForm(forms.ModelForm):
    class Meta:
        model = Suppression
        fields = ("channel", "address", "detail", "customer")
        help_texts = {"detail": _("Why, for whoever reads this later (e.g. the customer asked by phone).")}

    def clean(self):
        cleaned = super().clean()
        channel, address = cleaned.get("channel"), cleaned.get("address")
        if channel and address is not None:
            try:
                cleaned["address"] = suppression_address(channel, address)
            except ValidationError as error:
                self.add_error("address", error)
            else:
                self.instance.channel, self.instance.address = channel, cleaned["address"]
                if Suppression.objects.filter(channel=channel, address=cleaned["address"]).exists():
                    self.add_error("address", _("This address is already on the suppression list."))
        return cleaned


@admin.register(Suppression)
class SuppressionAdmin(CustomerColumnsMixin, LargeTableAdmin):
    """Staff add an address (reason: added by staff) or take one off; a row is never edited."""

    form = SuppressionForm
    list_display = ("address", "channel", "reason", "detail", "customer_display", "created_at")
    list_filter = ("channel", "reason")
    search_fields = ("address",)
    search_help_text = _("The exact address, or its beginning.")
    ordering = ("-created_at",)
    raw_id_fields = ("customer",)

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip()
        if not term:
            return queryset, False
        # A prefix on the unique (channel, address) index would not serve a search on every channel; the
        # exact normalised forms and a plain prefix do.
        candidates = {term, term.lower()}
        for channel in (Channel.SMS, Channel.EMAIL):
            try:
                candidates.add(suppression_address(channel, term))
            except ValidationError:
                pass
        from django.db.models import Q

        return queryset.filter(Q(address__in=candidates) | Q(address__startswith=term)), False

    def has_change_permission(self, request, obj=None):
        return False if obj is not None else super().has_change_permission(request, obj)

    def get_readonly_fields(self, request, obj=None):
        return ("channel", "address", "reason", "detail", "customer", "created_at") if obj else ()

    def get_fields(self, request, obj=None):
        if obj is None:
            return ("channel", "address", "detail", "customer")
        return ("channel", "address", "reason", "detail", "customer", "created_at")

    def save_model(self, request, obj, form, change):
        if not change:
            obj.reason = SuppressionReason.MANUAL
        super().save_model(request, obj, form, change)


@admin.register(ProviderState)
class ProviderStateAdmin(ReadOnlyAdmin):
    list_display = (
        "code",
        "cool_down_until",
        "cool_down_reason",
        "consecutive_failures",
        "tokens",
        "tokens_at",
    )
    ordering = ("code",)
