"""Tags (which customers carry them is edited on the 360 page)."""

from __future__ import annotations

from django.contrib import admin
from unfold.admin import ModelAdmin

from crm.models import Tag


@admin.register(Tag)
class TagAdmin(ModelAdmin):
    list_display = ("name", "kind", "description", "created_at")
    list_filter = ("kind",)
    search_fields = ("name",)
    readonly_fields = ("created_at",)
