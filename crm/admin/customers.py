"""The customer admin: the list and its search, the 360 page as the change view, and the consent, tag,
export, erase and merge actions on it. Writes go through the services; this only checks the shape of what
staff typed."""

from __future__ import annotations

import json

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.http import Http404, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _
from unfold.contrib.filters.admin import ChoicesDropdownFilter

from crm.admin.base import HistoryAdmin, LargeTableAdmin
from crm.admin.customer_360 import customer_360_context
from crm.admin.customer_list import (
    ActiveFilter,
    CustomerListChangeList,
    CustomerListColumnsMixin,
    PurchasesFilter,
    TagFilter,
    customer_list_columns,
)
from crm.admin.forms import (
    BulkTagForm,
    ConsentSetForm,
    CustomerAdminForm,
    EraseForm,
    MergeForm,
)
from crm.admin.search import customer_search_filter
from crm.admin.segments import add_to_static_list
from crm.models import (
    PROFILE_ACQUISITION_FIELDS,
    PROFILE_PERSONAL_FIELDS,
    ConsentChannel,
    ConsentStatus,
    Customer,
    CustomerMerge,
    Event,
    Order,
    Tag,
)
from crm.selectors.customer_360 import field_label
from crm.services.consent import consent_set
from crm.services.customers import MergeRefused, customer_identities_sync, customer_merge
from crm.services.privacy import PrivacyRefused, customer_erase, customer_erase_preview, customer_export_data
from crm.services.tags import TagRefused, customer_tag_add, customer_tag_remove, customers_tag_add


class ErasedFilter(admin.SimpleListFilter):
    title = _("erased")
    parameter_name = "erased"

    def lookups(self, request, model_admin):
        return [("no", _("No")), ("yes", _("Yes"))]

    def queryset(self, request, queryset):
        if self.value() == "no":
            return queryset.filter(erased_at__isnull=True)
        if self.value() == "yes":
            return queryset.filter(erased_at__isnull=False)
        return queryset


@admin.register(Customer)
class CustomerAdmin(CustomerListColumnsMixin, LargeTableAdmin, HistoryAdmin):
    form = CustomerAdminForm
    # The customer's own columns come with the page's query (no joins); the marketing columns are read for
    # the page's rows afterwards (crm/admin/customer_list.py). An erased customer shows as "已删除 / Erased".
    list_display = (
        "id",
        "name",
        "phone",
        "lifecycle_stage_display",
        "value_tier_display",
        "total_spend_display",
        "last_order_display",
        "created_date",
    )
    # One link per row: with a search or filter active, every link resolves its URL to carry the filters.
    list_display_links = ("name",)
    list_filter = (
        ("metrics__lifecycle_stage", ChoicesDropdownFilter),
        ("metrics__value_tier", ChoicesDropdownFilter),
        ("metrics__rfm_segment", ChoicesDropdownFilter),
        TagFilter,
        ActiveFilter,
        PurchasesFilter,
        "metrics__sleeping_high_value",
        "acquisition_channel",
        "gender",
        ErasedFilter,
        ("created_at", admin.DateFieldListFilter),
    )
    list_filter_submit = True
    # Sorting a million rows by a column without an index would be a full sort; offer the indexed ones.
    sortable_by = ("id", "created_date")
    search_fields = ("name",)  # shows the search box; get_search_results does the real work
    search_help_text = _(
        "Name (substring, or the first characters), email (whole or beginning), phone (with or without +86), "
        "any identifier (WeChat openid, buyer id, device id…) exactly, customer id (#123) or external id."
    )
    readonly_fields = ("external_id", "created_at", "updated_at", "erased_at")
    fieldsets = (
        (None, {"fields": PROFILE_PERSONAL_FIELDS}),
        (_("Acquisition"), {"fields": PROFILE_ACQUISITION_FIELDS}),
        (_("Record"), {"fields": ("external_id", "created_at", "updated_at", "erased_at")}),
    )
    actions = ("add_tag_selected", add_to_static_list, "merge_selected", "export_selected", "erase_selected")

    # Permissions. Customers are never deleted from the admin: erasure (which keeps orders) replaces it.
    def has_delete_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        if obj is not None and obj.is_erased:
            return False
        return super().has_change_permission(request, obj)

    def save_model(self, request, obj, form, change):
        with transaction.atomic():
            super().save_model(request, obj, form, change)
            customer_identities_sync(customer=obj, source="admin")

    def has_merge_permission(self, request):
        return request.user.has_perms(["crm.change_customer", "crm.delete_customer"])

    def has_export_permission(self, request):
        return request.user.has_perms(["crm.view_customer", "crm.add_privacyrequest"])

    def has_erase_permission(self, request):
        return request.user.has_perms(["crm.change_customer", "crm.add_privacyrequest"])

    def has_consent_permission(self, request):
        return request.user.has_perm("crm.change_consent") or request.user.has_perm("crm.add_consent")

    # List and search.
    @admin.display(description=_("created at"), ordering="created_at")
    def created_date(self, obj):
        # The day is what a marketer reads in a list; the 360 page has the time.
        return date_format(timezone.localtime(obj.created_at), "SHORT_DATE_FORMAT")

    def get_changelist(self, request, **kwargs):
        return CustomerListChangeList

    def get_list_display(self, request):
        columns = list(super().get_list_display(request))
        for column in customer_list_columns():
            at = columns.index(column.after) + 1 if column.after in columns else len(columns)
            columns.insert(at, column.display)
        return columns

    def get_list_filter(self, request):
        extra = [column.list_filter for column in customer_list_columns() if column.list_filter]
        return (*extra, *super().get_list_filter(request))

    def get_search_results(self, request, queryset, search_term):
        if not search_term.strip():
            return queryset, False
        return queryset.filter(customer_search_filter(search_term)), False

    # The 360 page is the change view.
    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        if obj is not None and not add:
            context["c360"] = customer_360_context(request, obj, model_admin=self)
        return super().render_change_form(
            request, context, add=add, change=change, form_url=form_url, obj=obj
        )

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path("<path:object_id>/consent/", view(self.consent_view), name="crm_customer_consent"),
            path("<path:object_id>/tags/", view(self.tags_view), name="crm_customer_tags"),
            path("<path:object_id>/export/", view(self.export_view), name="crm_customer_export"),
            path("<path:object_id>/erase/", view(self.erase_view), name="crm_customer_erase"),
            *super().get_urls(),
        ]

    def _customer_or_404(self, request, object_id) -> Customer:
        customer = self.get_object(request, object_id)
        if customer is None:
            raise Http404(gettext("No customer with id %(id)s.") % {"id": object_id})
        return customer

    def _back_to_360(self, customer, anchor=""):
        return HttpResponseRedirect(reverse("admin:crm_customer_change", args=[customer.pk]) + anchor)

    def consent_view(self, request, object_id):
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not self.has_consent_permission(request):
            raise PermissionDenied
        customer = self._customer_or_404(request, object_id)
        form = ConsentSetForm(request.POST)
        if customer.is_erased:
            messages.error(request, gettext("This customer was erased; consent can no longer be changed."))
        elif form.is_valid():
            consent_set(
                customer=customer,
                channel=form.cleaned_data["channel"],
                status=form.cleaned_data["status"],
                source=form.cleaned_data["source"],
                changed_by=request.user,
            )
            messages.success(
                request,
                gettext("Consent on %(channel)s set to %(status)s.")
                % {
                    "channel": ConsentChannel(form.cleaned_data["channel"]).label,
                    "status": ConsentStatus(form.cleaned_data["status"]).label,
                },
            )
        else:
            messages.error(request, _form_errors_text(form))
        return self._back_to_360(customer, "#consents")

    def tags_view(self, request, object_id):
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        customer = self._customer_or_404(request, object_id)
        operation = request.POST.get("op")
        needed = {"add": "crm.add_customertag", "remove": "crm.delete_customertag"}.get(operation)
        if needed is None:
            messages.error(request, gettext("Unknown tag operation."))
            return self._back_to_360(customer, "#tags")
        if not request.user.has_perm(needed):
            raise PermissionDenied
        tag_id = request.POST.get("tag") or ""
        tag = Tag.objects.filter(pk=int(tag_id)).first() if tag_id.isascii() and tag_id.isdigit() else None
        if tag is None:
            messages.error(request, gettext("Choose a tag."))
            return self._back_to_360(customer, "#tags")
        try:
            if operation == "add":
                _obj, created = customer_tag_add(customer=customer, tag=tag)
                text = (
                    gettext("Tag %(tag)s added.")
                    if created
                    else gettext("The customer already has tag %(tag)s.")
                )
            else:
                removed = customer_tag_remove(customer=customer, tag=tag)
                text = (
                    gettext("Tag %(tag)s removed.")
                    if removed
                    else gettext("The customer did not have tag %(tag)s.")
                )
            messages.success(request, text % {"tag": tag.name})
        except TagRefused:
            messages.error(request, gettext("This customer was erased; tags can no longer be changed."))
        return self._back_to_360(customer, "#tags")

    def _export_response(self, request, customer) -> HttpResponse:
        data = customer_export_data(customer=customer, requested_by=request.user, via="admin")
        response = HttpResponse(
            json.dumps(data, ensure_ascii=False, indent=2), content_type="application/json; charset=utf-8"
        )
        response["Content-Disposition"] = f'attachment; filename="customer-{customer.pk}-export.json"'
        return response

    def export_view(self, request, object_id):
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not self.has_export_permission(request):
            raise PermissionDenied
        return self._export_response(request, self._customer_or_404(request, object_id))

    def erase_view(self, request, object_id):
        if not self.has_erase_permission(request):
            raise PermissionDenied
        customer = self._customer_or_404(request, object_id)
        if customer.is_erased:
            messages.warning(request, gettext("This customer was already erased."))
            return self._back_to_360(customer)
        form = EraseForm(request.POST if request.method == "POST" else None)
        if request.method == "POST" and form.is_valid():
            self._erase(request, [customer], form.cleaned_data["reason"])
            return self._back_to_360(customer)
        return self._erase_confirmation(request, [customer], form, action_url=request.path)

    def _erase(self, request, customers, reason):
        for customer in customers:
            try:
                customer_erase(customer=customer, requested_by=request.user, via="admin", reason=reason)
                messages.success(request, gettext("Customer #%(id)s erased.") % {"id": customer.pk})
            except PrivacyRefused as refused:
                messages.error(request, str(refused))

    def _erase_confirmation(self, request, customers, form, *, action_url, action_name=None):
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": gettext("Erase customer data"),
            "customers": [(c, customer_erase_preview(customer=c)) for c in customers],
            "form": form,
            "action_url": action_url,
            "action_name": action_name,
            "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
        }
        return TemplateResponse(request, "admin/crm/customer/erase_confirmation.html", context)

    # Actions.
    def has_tag_permission(self, request):
        return request.user.has_perm("crm.add_customertag")

    @admin.action(description=_("Add a tag…"), permissions=["tag"])
    def add_tag_selected(self, request, queryset):
        """Tag every selected customer (all matching ones with "select all"), in one set-based write."""
        form = BulkTagForm(request.POST if "apply" in request.POST else None)
        if "apply" in request.POST and form.is_valid():
            tag = form.cleaned_data["tag"]
            added, already = customers_tag_add(
                customer_ids=queryset.values_list("pk", flat=True), tag=tag, user=request.user
            )
            self.message_user(
                request,
                gettext("Tag %(tag)s added to %(added)s customers (%(already)s already had it).")
                % {"tag": tag.name, "added": added, "already": already},
            )
            return None
        return TemplateResponse(
            request,
            "admin/crm/customer/add_tag.html",
            {
                **self.admin_site.each_context(request),
                "opts": self.model._meta,
                "title": gettext("Tag customers"),
                "form": form,
                "count": queryset.count(),
                "selected_ids": request.POST.getlist(admin.helpers.ACTION_CHECKBOX_NAME),
                "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
            },
        )

    @admin.action(description=_("Merge into…"), permissions=["merge"])
    def merge_selected(self, request, queryset):
        customers = list(queryset.order_by("pk")[:3])
        if len(customers) != 2:
            messages.error(request, gettext("Select exactly two customers to merge."))
            return None
        if any(c.is_erased for c in customers):
            messages.error(request, gettext("An erased customer cannot be merged."))
            return None
        form = MergeForm(
            request.POST if request.POST.get("post") == "yes" else None,
            customers=customers,
            initial={"survivor": customers[0].pk},
        )
        if request.POST.get("post") == "yes" and form.is_valid():
            survivor = next(c for c in customers if c.pk == form.cleaned_data["survivor"])
            merged = next(c for c in customers if c.pk != survivor.pk)
            try:
                record = customer_merge(
                    survivor=survivor,
                    merged=merged,
                    trigger=CustomerMerge.Trigger.MANUAL,
                    reason=form.cleaned_data["reason"],
                    performed_by=request.user,
                )
            except MergeRefused as refused:
                messages.error(request, str(refused))
                return None
            moved = ", ".join(f"{label}: {count}" for label, count in sorted(record.moved.items())) or "—"
            messages.success(
                request,
                gettext("Customer #%(merged)s merged into #%(survivor)s (moved %(moved)s).")
                % {"merged": record.merged_customer_id, "survivor": survivor.pk, "moved": moved},
            )
            return self._back_to_360(survivor)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": gettext("Merge two customers"),
            "columns": [
                {"customer": c, "sizes": _customer_sizes(c), "radio": radio}
                for c, radio in zip(customers, form["survivor"], strict=True)
            ],
            "size_labels": [
                ("orders", gettext("Orders")),
                ("events", gettext("Behaviour events")),
                ("identities", gettext("Identifiers")),
                ("consents", gettext("Consents")),
                ("tags", gettext("Tags")),
            ],
            "compare_fields": _comparison_rows(customers),
            "form": form,
            "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
        }
        return TemplateResponse(request, "admin/crm/customer/merge_confirmation.html", context)

    @admin.action(description=_("Export data (JSON)"), permissions=["export"])
    def export_selected(self, request, queryset):
        customers = list(queryset[:2])
        if len(customers) != 1:
            messages.error(request, gettext("Select exactly one customer to export."))
            return None
        return self._export_response(request, customers[0])

    @admin.action(description=_("Erase personal data…"), permissions=["erase"])
    def erase_selected(self, request, queryset):
        customers = list(queryset.filter(erased_at__isnull=True)[:21])
        if not customers:
            messages.error(request, gettext("The selected customers are already erased."))
            return None
        if len(customers) > 20:
            messages.error(request, gettext("Erase at most 20 customers at a time."))
            return None
        form = EraseForm(request.POST if request.POST.get("post") == "yes" else None)
        if request.POST.get("post") == "yes" and form.is_valid():
            self._erase(request, customers, form.cleaned_data["reason"])
            return None
        return self._erase_confirmation(request, customers, form, action_url="", action_name="erase_selected")


def _form_errors_text(form) -> str:
    return " ".join(
        f"{form.fields[f].label if f in form.fields else ''}: {' '.join(e)}" for f, e in form.errors.items()
    )


def _customer_sizes(customer: Customer) -> dict:
    # Capped: a bot-like customer with millions of events must not make the confirmation page slow.
    cap = 10_000
    events = Event.objects.filter(customer=customer).order_by()[: cap + 1].count()
    return {
        "orders": Order.objects.filter(customer=customer).count(),
        "events": f"{cap:,}+" if events > cap else events,
        "identities": customer.identities.count(),
        "consents": customer.consents.count(),
        "tags": customer.customer_tags.count(),
    }


def _comparison_rows(customers) -> list[dict]:
    names = (
        "name",
        "email",
        "phone",
        "external_id",
        "birthday",
        "gender",
        "city",
        "acquisition_channel",
        "created_at",
    )
    rows = []
    for name in names:
        values = [
            getattr(c, f"get_{name}_display")() if hasattr(c, f"get_{name}_display") else getattr(c, name)
            for c in customers
        ]
        rows.append(
            {
                "label": field_label(Customer, name),
                "values": values,
                "differ": len({str(v) for v in values}) > 1,
            }
        )
    return rows
