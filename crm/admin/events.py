"""The behaviour-event log, read-only."""

from __future__ import annotations

from django.contrib import admin
from django.db import connection
from django.utils.translation import gettext_lazy as _

from crm.admin.base import CustomerColumnsMixin, LargeTableAdmin, ReadOnlyAdmin, pretty_json
from crm.event_types import event_type_label
from crm.models import Event, EventLogCursor


class EventTypeFilter(admin.SimpleListFilter):
    """Event types listed without a SELECT DISTINCT over the whole log: on PostgreSQL a recursive query
    hops through the (type, occurred_at) index one type at a time (a "loose index scan")."""

    title = _("type")
    parameter_name = "type"
    max_types = 200

    def lookups(self, request, model_admin):
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute(
                    """
                    WITH RECURSIVE t(type) AS (
                        (SELECT type FROM crm_event ORDER BY type LIMIT 1)
                        UNION ALL
                        SELECT (SELECT e.type FROM crm_event e WHERE e.type > t.type ORDER BY e.type LIMIT 1)
                        FROM t WHERE t.type IS NOT NULL
                    )
                    SELECT type FROM t WHERE type IS NOT NULL LIMIT %s
                    """,
                    [self.max_types],
                )
                types = [row[0] for row in cursor.fetchall()]
        else:
            types = list(
                Event.objects.order_by("type").values_list("type", flat=True).distinct()[: self.max_types]
            )
        return [(t, event_type_label(t)) for t in types]

    def queryset(self, request, queryset):
        return queryset.filter(type=self.value()) if self.value() else queryset


@admin.register(Event)
class EventAdmin(CustomerColumnsMixin, ReadOnlyAdmin, LargeTableAdmin):
    list_display = ("id", "type_display", "customer_display", "channel", "occurred_at", "received_at")
    list_filter = (EventTypeFilter, "channel")
    sortable_by = ()
    ordering = ("-id",)
    fields = (
        "type_display",
        "customer_detail",
        "channel",
        "occurred_at",
        "received_at",
        "external_id",
        "properties_display",
    )
    readonly_fields = fields

    @admin.display(description=_("type"))
    def type_display(self, obj):
        # The catalogue's label (translated) beside the code; a brand's own type shows as its code.
        label = str(event_type_label(obj.type))
        return obj.type if label == obj.type else f"{label} ({obj.type})"

    @admin.display(description=_("properties"))
    def properties_display(self, obj):
        return pretty_json(obj.properties)


@admin.register(EventLogCursor)
class EventLogCursorAdmin(ReadOnlyAdmin):
    """Where each consumer of the log (loyalty's accrual, later the delivery pipeline and journeys) is."""

    list_display = ("consumer", "events_read", "last_event_id", "last_xact_id", "updated_at")
    ordering = ("consumer",)
