"""Conditions on the per-customer metrics row (RFM, lifecycle stage, predicted value, ...)."""

from __future__ import annotations

from typing import Any

from django.apps import apps
from django.core.exceptions import FieldDoesNotExist
from django.utils.translation import gettext_lazy

from crm.segments.fields.base import ColumnCondition, ConditionType

# The per-customer metrics (crm.models.metrics), one row per customer reached through a one-to-one
# relation. Each entry: (field name, label, kind, integer). A field the metrics model does not (yet) have
# is skipped, so the registry follows that model as it grows.
METRIC_FIELDS = [
    ("lifecycle_stage", gettext_lazy("Lifecycle stage"), "choice", False),
    ("stage_since", gettext_lazy("In lifecycle stage since"), "date", False),
    ("rfm_segment", gettext_lazy("RFM segment"), "choice", False),
    ("r_score", gettext_lazy("Recency score (R)"), "number", True),
    ("f_score", gettext_lazy("Frequency score (F)"), "number", True),
    ("m_score", gettext_lazy("Monetary score (M)"), "number", True),
    ("value_tier", gettext_lazy("Value tier"), "choice", False),
    ("sleeping_high_value", gettext_lazy("Sleeping high-value customer"), "boolean", False),
    ("p_alive", gettext_lazy("Probability alive"), "number", False),
    ("churn_risk", gettext_lazy("Churn risk"), "number", False),
    ("expected_purchases_90d", gettext_lazy("Expected purchases, next 90 days"), "number", False),
    ("predicted_clv_365d", gettext_lazy("Predicted value, next 365 days"), "number", False),
    ("expected_next_purchase_date", gettext_lazy("Expected next purchase"), "date", False),
    ("order_count", gettext_lazy("Orders (all time)"), "number", True),
    ("total_value", gettext_lazy("Net spend (all time)"), "number", False),
    ("average_order_value", gettext_lazy("Average order value (all time)"), "number", False),
    ("first_order_date", gettext_lazy("First order date"), "date", False),
    ("last_order_date", gettext_lazy("Last order date"), "date", False),
    ("days_since_last_order", gettext_lazy("Days since last order"), "number", True),
    ("purchase_cycle_days", gettext_lazy("Purchase cycle (days)"), "number", False),
]


def metrics_relation() -> tuple[Any, str] | None:
    """(CustomerMetrics, its accessor from Customer) once crm.models.metrics defines it, else None."""
    try:
        model = apps.get_model("crm", "CustomerMetrics")
    except LookupError:
        return None
    return model, model._meta.get_field("customer").remote_field.get_accessor_name()


def _metric_conditions() -> list[ConditionType]:
    """Metrics are read through the one-to-one join customer -> metrics row; a customer without a row
    (not computed yet) has no value, so only "is not set" and the negative choice operators match it."""
    found = metrics_relation()
    if found is None:
        return []
    model, accessor = found
    out = []
    for name, label, kind, integer in METRIC_FIELDS:
        try:
            model_field = model._meta.get_field(name)
        except FieldDoesNotExist:
            continue
        choices = (lambda f: lambda: list(f.choices))(model_field) if kind == "choice" else None
        out.append(
            ColumnCondition(
                f"metrics.{name}",
                label,
                "metrics",
                kind,
                f"{accessor}__{name}",
                choices=choices,
                integer=integer,
            )
        )
    return out
