"""Product affinities ("bought together"), read-only: rebuilt nightly by crm.recommendations."""

from __future__ import annotations

from django.contrib import admin
from unfold.admin import ModelAdmin

from crm.models import ProductAffinity


@admin.register(ProductAffinity)
class ProductAffinityAdmin(ModelAdmin):
    list_display = ["product", "related_product", "customers", "score", "computed_at"]
    list_select_related = ["product", "related_product"]
    search_fields = ["product__sku", "product__name"]
    ordering = ["product", "-score"]
    show_full_result_count = False

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
