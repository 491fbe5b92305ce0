"""Products, and orders with their lines and refunds (read-only: orders arrive by ingestion)."""

from __future__ import annotations

from django.contrib import admin
from django.utils.translation import gettext_lazy as _
from unfold.admin import ModelAdmin, TabularInline

from crm.admin.base import CustomerColumnsMixin, LargeTableAdmin, ReadOnlyAdmin
from crm.models import Order, OrderLine, Product, Refund


@admin.register(Product)
class ProductAdmin(ModelAdmin):
    list_display = ("sku", "name", "category", "price", "currency", "created_at")
    list_filter = ("category", "currency")
    search_fields = ("sku", "name")
    ordering = ("sku",)
    readonly_fields = ("created_at",)


class OrderLineInline(TabularInline):
    model = OrderLine
    fields = (
        "line_no",
        "sku",
        "name",
        "category",
        "quantity",
        "unit_price",
        "line_total",
        "refunded_quantity",
    )
    readonly_fields = fields
    ordering = ("line_no",)
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class RefundInline(TabularInline):
    model = Refund
    fields = ("external_id", "amount", "refunded_at", "reason", "lines")
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(Order)
class OrderAdmin(CustomerColumnsMixin, ReadOnlyAdmin, LargeTableAdmin):
    """Orders arrive by ingestion (API, CSV), idempotent on their external id and fingerprint; editing
    one here would break that, so the admin shows them only."""

    list_display = (
        "external_id",
        "customer_display",
        "channel",
        "store",
        "placed_at",
        "total",
        "currency",
        "status",
    )
    list_filter = ("status", "channel", ("placed_at", admin.DateFieldListFilter))
    search_fields = ("external_id",)
    search_help_text = _("Order id (whole or beginning).")
    # Newest first by primary key: the model's -placed_at has no index of its own, and sorting millions of
    # orders for one page would be a full sort.
    ordering = ("-id",)
    sortable_by = ()
    fields = (
        "external_id",
        "customer_detail",
        "channel",
        "store",
        "placed_at",
        "currency",
        "total",
        "refunded_amount",
        "status",
        "created_at",
    )
    readonly_fields = fields
    inlines = (OrderLineInline, RefundInline)

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip()
        if not term:
            return queryset, False
        return queryset.filter(external_id__startswith=term), False
