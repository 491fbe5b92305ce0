"""Reads of the customer metrics for the admin, the API, segments, journeys and the CSV export."""

from __future__ import annotations

import csv
from typing import TextIO

from django.db import connection
from django.db.models import Count, F, IntegerField, QuerySet, Value
from django.db.models.functions import Cast, NullIf

from crm.models import Customer
from crm.models.metrics import CustomerMetrics, LifecycleStage, MetricsRun

# The export's columns, in order: the BG/NBD inputs and outputs first (the agreed interface), then the
# rest of the row. `customer_external_id` is empty for customers without one.
EXPORT_COLUMNS = [
    "customer_external_id",
    "frequency",
    "recency_days",
    "tenure_days",
    "monetary_value",
    "p_alive",
    "expected_purchases_90d",
    "predicted_clv_365d",
    "lifecycle_stage",
    "r_score",
    "f_score",
    "m_score",
    "customer_id",
    "as_of",
    "order_count",
    "first_order_date",
    "last_order_date",
    "total_value",
    "average_order_value",
    "purchase_cycle_days",
    "days_since_last_order",
    "rfm_segment",
    "churn_risk",
    "value_tier",
    "sleeping_high_value",
    "expected_next_purchase_date",
    "stage_since",
]


def customer_metrics_get(*, customer_id: int) -> CustomerMetrics | None:
    return CustomerMetrics.objects.filter(customer_id=customer_id).first()


def metrics_run_started_since(*, since) -> MetricsRun | None:
    """The first computation started at or after `since` (the one a "recompute" queued then), if any."""
    return MetricsRun.objects.filter(started_at__gte=since).order_by("started_at").first()


def metrics_latest_run() -> MetricsRun | None:
    """The latest successful computation, with its fitted parameters."""
    return MetricsRun.objects.filter(status=MetricsRun.Status.DONE).order_by("-started_at").first()


def lifecycle_stage_counts() -> dict[str, int]:
    """Customers per lifecycle stage (every stage present, zero when empty)."""
    counts = dict(
        CustomerMetrics.objects.values_list("lifecycle_stage").annotate(n=Count("customer_id")).order_by()
    )
    return {stage.value: counts.get(stage.value, 0) for stage in LifecycleStage}


def customers_in_stage(*, stage: str) -> QuerySet[Customer]:
    return Customer.objects.filter(erased_at__isnull=True, metrics__lifecycle_stage=stage)


def sleeping_high_value_customers() -> QuerySet[Customer]:
    """High-value customers who are dormant: the audience of a win-back campaign."""
    return Customer.objects.filter(erased_at__isnull=True, metrics__sleeping_high_value=True)


def _export_queryset():
    # Text that would differ between COPY and Python's csv module is normalised in SQL: an empty segment
    # becomes NULL (COPY quotes empty strings) and the boolean 0/1 (COPY prints t/f).
    annotations = {
        "customer_external_id": ("x_external_id", F("customer__external_id")),
        "rfm_segment": ("x_rfm_segment", NullIf("rfm_segment", Value(""))),
        "sleeping_high_value": ("x_sleeping_high_value", Cast("sleeping_high_value", IntegerField())),
    }
    fields = [annotations[c][0] if c in annotations else c for c in EXPORT_COLUMNS]
    return (
        CustomerMetrics.objects.filter(customer__erased_at__isnull=True)
        .annotate(**dict(annotations.values()))
        .order_by("customer_id")
        .values_list(*fields)
    )


def _as_postgres_prints(value):
    if value is None:
        return ""
    if isinstance(value, float):
        # Both print the shortest text that reads back as the same float; PostgreSQL drops a ".0".
        text = repr(value)
        return text[:-2] if text.endswith(".0") else text
    return value


def metrics_export_csv(*, out: TextIO) -> int:
    """Write one CSV row per (not erased) customer to `out`, with a header; returns the number of rows.
    PostgreSQL streams it with COPY; elsewhere the ORM writes it row by row. Both print floats at full
    (shortest round-trip) precision, so the two agree byte for byte."""
    out.write(",".join(EXPORT_COLUMNS) + "\n")
    if connection.vendor == "postgresql":
        sql, params = _export_queryset().query.sql_with_params()
        rows = 0
        with connection.cursor() as cursor:
            with cursor.cursor.copy(f"COPY ({sql}) TO STDOUT (FORMAT csv)", params) as copy:
                for chunk in copy:
                    text = bytes(chunk).decode()
                    rows += text.count("\n")
                    out.write(text)
        return rows
    writer = csv.writer(out, lineterminator="\n")
    rows = 0
    for row in _export_queryset().iterator(chunk_size=5000):
        writer.writerow([_as_postgres_prints(v) for v in row])
        rows += 1
    return rows
