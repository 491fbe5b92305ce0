"""The marketing calendar staff correct and extend (a lunar festival of a year the seed does not know)."""

from __future__ import annotations

from django.contrib import admin
from django.utils.translation import gettext_lazy as _

from campaigns.models import CalendarDate, CalendarDateSource
from crm.admin.base import HistoryAdmin


@admin.register(CalendarDate)
class CalendarDateAdmin(HistoryAdmin):
    list_display = ("date", "code", "name_zh", "name_en", "kind", "source")
    list_filter = ("kind", "year", "code", "source")
    search_fields = ("code", "name_zh", "name_en")
    fields = ("code", "year", "date", "name_zh", "name_en", "kind", "source")
    readonly_fields = ("source",)
    date_hierarchy = "date"

    def get_form(self, request, obj=None, **kwargs):
        form = super().get_form(request, obj, **kwargs)
        form.base_fields["code"].help_text = _(
            "What campaigns refer to, e.g. mid_autumn: a campaign “3 days before mid_autumn” uses each "
            "year’s date of this code."
        )
        return form

    def save_model(self, request, obj, form, change):
        # A date staff saved is theirs: the seed (run by every `make run`) must not put it back.
        obj.source = CalendarDateSource.STAFF
        super().save_model(request, obj, form, change)
