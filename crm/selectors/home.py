"""The customer figures of the admin's home page (config/admin_home.py composes them with the other apps'):
a few aggregate queries, never one per customer, with the days counted in the business time zone.

The windows are whole business days: "the last 30 days" is today and the 29 days before it, "the
previous 30" the 30 days before those. The customer list filters (crm/admin/customers.py) use the same
definitions, so each figure's link lists exactly the customers it counts.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal

from django.db.models import Count, Exists, Max, OuterRef, Q, Sum

from crm.clock import business_day_end, business_day_start, business_today
from crm.models import Customer, Event, Order
from crm.models.metrics import CustomerMetrics, LifecycleStage

HOME_WINDOW_DAYS = 30


@dataclass(frozen=True)
class DayWindow:
    """Business days first..last (inclusive), and the instants they span: [start, end)."""

    first: date
    last: date
    start: datetime
    end: datetime


def home_windows(*, now: datetime, days: int = HOME_WINDOW_DAYS) -> tuple[DayWindow, DayWindow]:
    """The last `days` business days up to today, and the `days` before them."""
    today = business_today(now)
    first = today - timedelta(days=days - 1)
    previous_first = first - timedelta(days=days)
    current = DayWindow(first, today, business_day_start(first), business_day_end(today))
    previous = DayWindow(
        previous_first,
        first - timedelta(days=1),
        business_day_start(previous_first),
        business_day_start(first),
    )
    return current, previous


def customers_active_q(*, since: datetime) -> Q:
    """Customers who ordered or did anything we track (a behaviour event) since `since`."""
    return Q(Exists(Order.objects.filter(customer_id=OuterRef("pk"), placed_at__gte=since))) | Q(
        Exists(Event.objects.filter(customer_id=OuterRef("pk"), occurred_at__gte=since))
    )


@dataclass(frozen=True)
class CustomerHomeFigures:
    current: DayWindow
    previous: DayWindow
    customers: int
    active_customers: int
    gmv: Decimal
    orders: int
    previous_gmv: Decimal
    previous_orders: int
    buyers: int  # customers with at least one order (customer metrics)
    repeat_buyers: int  # ... with two or more
    stage_counts: dict[str, int]  # every lifecycle stage, zero when empty
    uncomputed: int  # customers the metrics have not reached yet (new since the last run)
    sleeping_high_value: int
    metrics_as_of: date | None

    @property
    def repeat_rate(self) -> float | None:
        return self.repeat_buyers / self.buyers if self.buyers else None


def customer_home_figures(*, now: datetime) -> CustomerHomeFigures:
    """Three queries: customers (with the active ones), orders in both windows, and the metrics' counts.

    GMV is the value of the orders placed in the window as placed (refunds do not lower it, the usual
    meaning of GMV). Stages, repeat buyers and sleeping high-value customers come from the latest metrics
    run, as the customer list's filters on them do."""
    current, previous = home_windows(now=now)
    people = Customer.objects.filter(erased_at__isnull=True).aggregate(
        customers=Count("pk"), active=Count("pk", filter=customers_active_q(since=current.start))
    )
    in_current = Q(placed_at__gte=current.start, placed_at__lt=current.end)
    in_previous = Q(placed_at__gte=previous.start, placed_at__lt=previous.end)
    orders = Order.objects.filter(placed_at__gte=previous.start, placed_at__lt=current.end).aggregate(
        gmv=Sum("total", filter=in_current),
        orders=Count("pk", filter=in_current),
        previous_gmv=Sum("total", filter=in_previous),
        previous_orders=Count("pk", filter=in_previous),
    )
    stage_aggregates = {
        f"stage_{stage.value}": Count("pk", filter=Q(lifecycle_stage=stage.value)) for stage in LifecycleStage
    }
    metrics = CustomerMetrics.objects.filter(customer__erased_at__isnull=True).aggregate(
        computed=Count("pk"),
        buyers=Count("pk", filter=Q(order_count__gte=1)),
        repeat_buyers=Count("pk", filter=Q(order_count__gte=2)),
        sleeping=Count("pk", filter=Q(sleeping_high_value=True)),
        as_of=Max("as_of"),
        **stage_aggregates,
    )
    return CustomerHomeFigures(
        current=current,
        previous=previous,
        customers=people["customers"],
        active_customers=people["active"],
        gmv=orders["gmv"] or Decimal(0),
        orders=orders["orders"],
        previous_gmv=orders["previous_gmv"] or Decimal(0),
        previous_orders=orders["previous_orders"],
        buyers=metrics["buyers"],
        repeat_buyers=metrics["repeat_buyers"],
        stage_counts={stage.value: metrics[f"stage_{stage.value}"] for stage in LifecycleStage},
        uncomputed=max(people["customers"] - metrics["computed"], 0),
        sleeping_high_value=metrics["sleeping"],
        metrics_as_of=metrics["as_of"],
    )
