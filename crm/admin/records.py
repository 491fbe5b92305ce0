"""The append-only records of what was done to customers: merges, privacy requests, consent changes."""

from __future__ import annotations

from django.contrib import admin
from django.utils.translation import gettext_lazy as _

from crm.admin.base import CustomerColumnsMixin, LargeTableAdmin, ReadOnlyAdmin, customer_link, pretty_json
from crm.models import ConsentChange, CustomerMerge, PrivacyRequest


@admin.register(CustomerMerge)
class CustomerMergeAdmin(ReadOnlyAdmin, LargeTableAdmin):
    list_display = (
        "performed_at",
        "survivor_display",
        "merged_customer_id",
        "trigger",
        "performed_by",
        "reason",
    )
    list_filter = ("trigger",)
    list_select_related = ("performed_by",)
    fields = (
        "survivor_display",
        "merged_customer_id",
        "trigger",
        "reason",
        "performed_by",
        "performed_at",
        "moved_display",
        "snapshot_display",
    )
    readonly_fields = fields

    @admin.display(description=_("survivor"), ordering="survivor_id")
    def survivor_display(self, obj):
        return customer_link(obj.survivor_id)

    @admin.display(description=_("rows moved"))
    def moved_display(self, obj):
        return pretty_json(obj.moved)

    @admin.display(description=_("merged customer as it was"))
    def snapshot_display(self, obj):
        return pretty_json(obj.merged_snapshot)


@admin.register(PrivacyRequest)
class PrivacyRequestAdmin(CustomerColumnsMixin, ReadOnlyAdmin, LargeTableAdmin):
    list_display = ("created_at", "kind", "customer_display", "via", "requested_by", "reason")
    list_filter = ("kind", "via")
    list_select_related = ("requested_by",)
    fields = ("kind", "customer_detail", "via", "requested_by", "reason", "created_at", "summary_display")
    readonly_fields = fields

    @admin.display(description=_("summary"))
    def summary_display(self, obj):
        return pretty_json(obj.summary)


@admin.register(ConsentChange)
class ConsentChangeAdmin(CustomerColumnsMixin, ReadOnlyAdmin, LargeTableAdmin):
    list_display = (
        "occurred_at",
        "customer_display",
        "channel",
        "previous_status",
        "status",
        "source_text",
        "changed_by",
    )
    list_filter = ("channel", "status")
    list_select_related = ("changed_by",)
    ordering = ("-id",)  # the history only grows; the primary key serves "newest first" without a sort
    sortable_by = ()
    fields = (
        "customer_detail",
        "channel",
        "previous_status",
        "status",
        "occurred_at",
        "source_text",
        "changed_by",
        "recorded_at",
    )
    readonly_fields = fields

    # Writers store a code (signup, csv, api:<prefix>); the list shows it in the reader's language.
    @admin.display(description=_("source"))
    def source_text(self, obj):
        return obj.source_display
