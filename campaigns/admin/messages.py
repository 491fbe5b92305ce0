"""The outbox, read-only: every message, filterable, searchable by customer, fast on a table of millions
(crm's LargeTableAdmin: no full count, no facet counts)."""

from __future__ import annotations

from django.contrib import admin
from django.utils import timezone
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _

from campaigns.models import Message
from campaigns.selectors import message_why
from crm.admin.base import CustomerColumnsMixin, LargeTableAdmin, ReadOnlyAdmin, pretty_json
from crm.admin.search import customer_search_filter
from crm.models import Customer

# A search by name may match many customers: their messages are listed for this many at most.
SEARCH_CUSTOMERS_LIMIT = 200


class MessageColumnsMixin:
    @admin.display(description=_("source"))
    def source_display(self, obj):
        kind = obj.get_source_kind_display()
        if obj.source_label:
            return format_html('{} <span class="ws-quiet">{}</span>', obj.source_label, kind)
        return kind

    @admin.display(description=_("why"))
    def why_display(self, obj):
        # The business time zone in lists (one customer's zone would cost a join per row).
        return message_why(obj, tz=timezone.get_default_timezone(), now=timezone.now()) or "—"

    @admin.display(description=_("status history"))
    def history_display(self, obj):
        return pretty_json(obj.history)

    @admin.display(description=_("template data"))
    def data_display(self, obj):
        return pretty_json(obj.data)


class CustomerSearchMixin:
    """The search box finds a customer the way the customer list does (phone, email, identifier, id, name:
    crm.admin.search) and lists their messages: a few index lookups, never a join over the outbox."""

    search_fields = ("customer__id",)  # shows the box; get_search_results does the work
    search_help_text = _("A customer's phone, email, WeChat openid, id or name.")

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip()
        if not term:
            return queryset, False
        ids = list(
            Customer.objects.filter(customer_search_filter(term))
            .order_by()
            .values_list("pk", flat=True)[:SEARCH_CUSTOMERS_LIMIT]
        )
        if term.lstrip("#").isdigit():
            ids.append(int(term.lstrip("#")))
        return queryset.filter(customer_id__in=ids), False


@admin.register(Message)
class MessageAdmin(
    CustomerSearchMixin, MessageColumnsMixin, CustomerColumnsMixin, ReadOnlyAdmin, LargeTableAdmin
):
    empty_results_text = _(
        "Every message considered for a customer is listed here: campaigns, journeys, notices, the send API "
        "and test sends from a template's preview."
    )
    list_display = (
        "id",
        "created_at",
        "customer_display",
        "channel",
        "purpose",
        "source_display",
        "status",
        "why_display",
    )
    list_filter = ("channel", "status", "source_kind", "purpose")
    list_filter_submit = True
    sortable_by = ()
    ordering = ("-id",)
    fieldsets = (
        (
            None,
            {
                "fields": (
                    "customer_detail",
                    "channel",
                    "purpose",
                    "source_kind",
                    "source_label",
                    "source_ref",
                    "occurrence",
                    "status",
                    "why_display",
                    "template",
                    "template_version",
                    "language",
                    "priority",
                    "on_cap",
                )
            },
        ),
        (
            _("Delivery"),
            {
                "fields": (
                    "address",
                    "provider",
                    "provider_message_id",
                    "attempts",
                    "error_code",
                    "error_detail",
                    "subject",
                    "created_at",
                    "due_at",
                    "expires_at",
                    "handed_at",
                    "sent_at",
                    "delivered_at",
                    "opened_at",
                    "clicked_at",
                    "finished_at",
                )
            },
        ),
        (_("Record"), {"fields": ("history_display", "data_display")}),
    )
    readonly_fields = tuple(f for _title, fs in fieldsets for f in fs["fields"])

    def get_queryset(self, request):
        qs = super().get_queryset(request)
        # The list never shows the template data, links or history: a page reads only what it shows.
        if request.resolver_match and request.resolver_match.url_name.endswith("_changelist"):
            qs = qs.defer("data", "links", "history")
        return qs
