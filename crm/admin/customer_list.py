"""The customer list's marketing columns, filters and bulk actions, and the columns later apps add to it.

The list pages through a million customers without joins (the search's id query stays on crm_customer,
see crm/admin/search.py): the columns read from other tables (metrics, loyalty's tier) are loaded for the
page's 50 rows after it is cut, one query per source (`CustomerListChangeList`). Filters on them are
subqueries or joins only when chosen.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from django.contrib import admin
from django.core.exceptions import ObjectDoesNotExist
from django.db.models import Exists, OuterRef, prefetch_related_objects
from django.utils import timezone
from django.utils.formats import date_format, number_format
from django.utils.translation import gettext_lazy as _
from unfold.contrib.filters.admin import DropdownFilter

from crm.admin.base import LargeTableChangeList
from crm.models import CustomerTag, Tag
from crm.selectors.home import customers_active_q, home_windows


@dataclass(frozen=True)
class CustomerListColumn:
    """A column a later app adds to the customer list (loyalty: the tier).

    `load(customers)` runs once per page, a fixed number of queries, and sets what `display(customer)` reads
    on the customer objects. `list_filter` (optional) is a SimpleListFilter for the same data."""

    name: str
    after: str  # the column it follows
    display: Callable
    load: Callable[[list], None]
    list_filter: type | None = None


_columns: dict[str, CustomerListColumn] = {}


def customer_list_column_register(column: CustomerListColumn) -> None:
    """Add a column to the customer list; apps to the right of crm call this from their admin module, so crm
    never imports them."""
    _columns[column.name] = column


def customer_list_columns() -> list[CustomerListColumn]:
    return list(_columns.values())


class CustomerListChangeList(LargeTableChangeList):
    def get_results(self, request):
        super().get_results(request)
        rows = list(self.result_list)
        prefetch_related_objects(rows, "metrics")
        for column in customer_list_columns():
            column.load(rows)
        self.result_list = rows


def _metrics(customer):
    try:
        return customer.metrics
    except ObjectDoesNotExist:
        return None


class CustomerListColumnsMixin:
    """The metrics columns (the latest metrics run's view of the customer)."""

    @admin.display(description=_("lifecycle stage"))
    def lifecycle_stage_display(self, obj):
        metrics = _metrics(obj)
        return metrics.get_lifecycle_stage_display() if metrics else "—"

    @admin.display(description=_("value tier"))
    def value_tier_display(self, obj):
        metrics = _metrics(obj)
        return metrics.get_value_tier_display() if metrics else "—"

    @admin.display(description=_("total spend"))
    def total_spend_display(self, obj):
        metrics = _metrics(obj)
        return number_format(metrics.total_value, 0, force_grouping=True) if metrics else "—"

    @admin.display(description=_("last order"))
    def last_order_display(self, obj):
        metrics = _metrics(obj)
        if not metrics or not metrics.last_order_date:
            return "—"
        return date_format(metrics.last_order_date, "SHORT_DATE_FORMAT")


class TagFilter(DropdownFilter):
    title = _("tag")
    parameter_name = "tag"

    def lookups(self, request, model_admin):
        return list(Tag.objects.order_by("name").values_list("pk", "name"))

    def queryset(self, request, queryset):
        if not ((value := self.value() or "").isascii() and value.isdigit()):
            return queryset
        return queryset.filter(
            Exists(CustomerTag.objects.filter(customer_id=OuterRef("pk"), tag_id=int(self.value())))
        )


class ActiveFilter(admin.SimpleListFilter):
    """The home page's "active customers (30 days)": ordered or had a tracked event in the last 30 days."""

    title = _("activity")
    parameter_name = "active"

    def lookups(self, request, model_admin):
        return [("30", _("Active in the last 30 days"))]

    def queryset(self, request, queryset):
        if self.value() != "30":
            return queryset
        current, _previous = home_windows(now=timezone.now())
        return queryset.filter(customers_active_q(since=current.start))


class PurchasesFilter(admin.SimpleListFilter):
    """Buyers by number of orders (the latest metrics run), for the home page's repeat-purchase rate."""

    title = _("purchases")
    parameter_name = "purchases"

    def lookups(self, request, model_admin):
        return [("none", _("No order")), ("one", _("One order")), ("repeat", _("Two or more (repeat)"))]

    def queryset(self, request, queryset):
        match self.value():
            case "none":
                return queryset.exclude(metrics__order_count__gte=1)
            case "one":
                return queryset.filter(metrics__order_count=1)
            case "repeat":
                return queryset.filter(metrics__order_count__gte=2)
        return queryset
