"""The pieces every crm admin shares: links to a customer's 360 page, lists of tables that grow to
millions of rows, read-only admins for append-only records.

Every admin of the project derives from django-unfold's ModelAdmin (the admin theme, config/admin_site.py):
its templates expect the attributes and context that class adds, so a plain Django ModelAdmin would render
half-styled pages. HistoryAdmin is simple-history's admin on the same footing."""

from __future__ import annotations

import json
from urllib.parse import urlencode

from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html
from django.utils.safestring import mark_safe
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _
from simple_history.admin import SimpleHistoryAdmin
from unfold.admin import ModelAdmin
from unfold.views import ChangeList
from unfold.widgets import CHECKBOX_CLASSES

from crm.paginators import EstimatedCountPaginator


def customer_link(customer_id, customer=None) -> str:
    """A link to the customer's 360 page: "#id" alone in lists (naming every row's customer would read
    crm_customer for each row of tables with millions), with the name when `customer` is given."""
    if customer_id is None:
        return "—"
    url = reverse("admin:crm_customer_change", args=[customer_id])
    if customer is None:
        return format_html('<a href="{}">#{}</a>', url, customer_id)
    return format_html('<a href="{}">{} (#{})</a>', url, customer, customer_id)


class CustomerColumnsMixin:
    """`customer_display` for a list's column, `customer_detail` for one record's page (one more query
    there, to show whose record it is)."""

    @admin.display(description=_("customer"), ordering="customer_id")
    def customer_display(self, obj):
        return customer_link(obj.customer_id)

    @admin.display(description=_("customer"))
    def customer_detail(self, obj):
        return customer_link(obj.customer_id, obj.customer if obj.customer_id else None)


class LargeTableChangeList(ChangeList):
    def get_results(self, request):
        super().get_results(request)
        # A filtered list that fits on one page is shown by Django from the whole queryset, which would run
        # the search a second time; the paginator already holds the matching ids, so read the rows by them.
        if (
            isinstance(self.paginator, EstimatedCountPaginator)
            and not self.multi_page
            and not (self.show_all and self.can_show_all)
            and self.paginator._is_filtered()
        ):
            self.result_list = self.paginator.page(1).object_list


# Unfold's checkbox look, written once instead of rendered by a widget template on every row.
_CHECKBOX_CLASS = " ".join([*CHECKBOX_CLASSES, "action-select"])


class LargeTableAdmin(ModelAdmin):
    """Lists of tables that grow to millions of rows: no full count, no facet counts."""

    paginator = EstimatedCountPaginator
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    list_per_page = 50

    def get_changelist(self, request, **kwargs):
        return LargeTableChangeList

    @admin.display(description=mark_safe('<input type="checkbox" id="action-toggle">'))
    def action_checkbox(self, obj):
        # The same markup as unfold's, without rendering a form widget template per row: that template,
        # once per row, was a large part of a list page's CPU time (see BENCHMARKS.md, customer admin
        # list and search).
        return format_html(
            '<input type="checkbox" name="{}" value="{}" class="{}" aria-label="{}">',
            admin.helpers.ACTION_CHECKBOX_NAME,
            obj.pk,
            _CHECKBOX_CLASS,
            format_html(gettext("Select this object for an action - {}"), obj),
        )


class HistoryAdmin(SimpleHistoryAdmin, ModelAdmin):
    """simple-history's admin (the "History" page of every audited model) in the unfold theme; its
    templates come from unfold.contrib.simple_history."""


class ReadOnlyAdmin(ModelAdmin):
    """Append-only or derived records (logs, ledgers, computed rows): staff may look, never add, edit or
    delete. The one read-only base for every app's admin (loyalty's ledger and rewards use it too)."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


def pretty_json(value) -> str:
    return format_html(
        '<pre class="c360-json">{}</pre>', json.dumps(value, ensure_ascii=False, indent=2, sort_keys=True)
    )


JOB_PROGRESS_JS = "crm/admin/job_progress.js"


def job_progress_message(*, text: str, status_url: str, since) -> str:
    """An admin message that follows a job queued at `since`: static/crm/admin/job_progress.js (add
    JOB_PROGRESS_JS to the page's media) polls `status_url` and shows its progress and result in place of
    `text`, so that staff see the outcome of a job that takes seconds instead of "reload later"."""
    url = f"{status_url}?{urlencode({'since': since.isoformat()})}"
    return format_html(
        '<span class="job-progress" data-job-progress="{}"><span class="job-progress-text">{}</span> '
        '<progress class="job-progress-bar"></progress></span>',
        url,
        text,
    )
