"""Conditions on a customer's orders: counts, spend and average in a window, first and last order,
bought a product or category."""

from __future__ import annotations

from decimal import Decimal

from django.db.models import Avg, Count, DecimalField, ExpressionWrapper, F, Q, Sum
from django.utils.functional import Promise
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from crm.segments import sql
from crm.segments.fields.base import (
    AGGREGATE_OPERATORS,
    DATETIME_OPERATORS,
    NONE,
    OPERATORS,
    TWO,
    ConditionType,
    _choices_json,
    _window_param_schema,
    date_operator_bounds,
    parse_choice,
    parse_date,
    parse_days,
    parse_list,
    parse_number,
    parse_pair,
    parse_text,
    parse_window,
)


def _channel_param_schema() -> dict:
    from crm.models import Channel

    return {
        "name": "channel",
        "label": str(_("order channel")),
        "type": "choice",
        "required": False,
        "choices": _choices_json(Channel.choices),
    }


def _clean_order_channel(raw: dict) -> str | None:
    from crm.models import Channel

    if raw.get("channel") in (None, ""):
        return None
    return parse_choice(raw["channel"], Channel.choices)


def counted_orders_q(channel: str | None = None, *, via: str = "") -> Q:
    """Orders that count: not fully refunded (optionally on one channel). `via` prefixes the paths, for
    orders reached from the customer ("orders__")."""
    from crm.models import OrderStatus

    q = ~Q(**{f"{via}status": OrderStatus.REFUNDED})
    return q & Q(**{f"{via}channel": channel}) if channel else q


def counted_orders(channel: str | None = None):
    from crm.models import Order

    return Order.objects.filter(counted_orders_q(channel))


class OrderAggregateCondition(ConditionType):
    """Count, net spend or average order value of a customer's orders within a window."""

    group = "orders"
    kind_label = gettext_lazy("number")
    operators = AGGREGATE_OPERATORS
    param_names = ("window", "channel")

    def __init__(self, key: str, label: Promise, aggregate: str):
        self.key, self.label, self.aggregate = key, label, aggregate

    def clean_params(self, raw):
        return {"window": parse_window(raw.get("window")), "channel": _clean_order_channel(raw)}

    def clean_value(self, operator, raw):
        number = lambda v: parse_number(v, integer=self.aggregate == "count")  # noqa: E731
        return parse_pair(raw, number) if operator == "between" else number(raw)

    def to_q(self, condition, ctx):
        lo, hi = condition.params["window"].bounds(ctx.now)
        channel = condition.params["channel"]
        joined = sql.JoinedAggregate(
            relation="orders",
            rows=lambda at: (
                counted_orders_q(channel, via=at) & sql.datetime_range_q(f"{at}placed_at", lo, hi)
            ),
            aggregate=self._aggregate,
            operator=condition.operator,
            value=condition.value,
            default={"count": 0, "sum": Decimal(0), "avg": None}[self.aggregate],
        )
        if ctx.joined is not None and not ctx.joined:
            ctx.joined.append(joined)
            return Q()
        return joined.as_correlated_q(in_or=ctx.in_or)

    def _aggregate(self, at: str):
        """The aggregate over orders; `at` prefixes the paths ("" on Order itself, "<alias>__" via a join)."""
        money = DecimalField(max_digits=16, decimal_places=2)
        net = ExpressionWrapper(F(f"{at}total") - F(f"{at}refunded_amount"), output_field=money)
        if self.aggregate == "count":
            # placed_at: never NULL on an order (so it counts the joined orders, and no missing one), and
            # in the (customer, placed_at) index, which then answers the join alone.
            return Count(f"{at}placed_at") if at else Count("*")
        return (Sum if self.aggregate == "sum" else Avg)(net, output_field=money)

    def value_input(self, operator):
        kind = "integer" if self.aggregate == "count" else "number"
        return {"type": kind + ("_pair" if operator == "between" else "")}

    def params_schema(self):
        return [_window_param_schema(), _channel_param_schema()]


class OrderDateCondition(ConditionType):
    """When the first or last order was placed. Written as EXISTS / NOT EXISTS pairs over the (customer,
    placed_at) index: the first order is in [lo, hi) iff some order is and none is before lo."""

    group = "orders"
    kind_label = gettext_lazy("date")
    operators = DATETIME_OPERATORS
    param_names = ("channel",)

    def __init__(self, key: str, label: Promise, which: str):
        self.key, self.label, self.which = key, label, which

    def clean_params(self, raw):
        return {"channel": _clean_order_channel(raw)}

    def clean_value(self, operator, raw):
        if operator in ("in_last_days", "more_than_days_ago"):
            return parse_days(raw)
        return parse_pair(raw, parse_date) if operator == "between" else parse_date(raw)

    def to_q(self, condition, ctx):
        orders = counted_orders(condition.params["channel"])
        op = condition.operator
        if op in ("is_set", "is_not_set"):
            return sql.exists_q(orders, "customer", negated=op == "is_not_set")
        lo, hi = date_operator_bounds(op, condition.value, ctx.now)
        q = sql.exists_q(orders.filter(sql.datetime_range_q("placed_at", lo, hi)), "customer")
        if self.which == "first" and lo is not None:
            q &= sql.exists_q(orders.filter(placed_at__lt=lo), "customer", negated=True)
        if self.which == "last" and hi is not None:
            q &= sql.exists_q(orders.filter(placed_at__gte=hi), "customer", negated=True)
        return q

    def value_input(self, operator):
        arity = OPERATORS[operator].arity
        if arity == NONE:
            return {"type": "none"}
        if operator in ("in_last_days", "more_than_days_ago"):
            return {"type": "days"}
        return {"type": "date_pair" if arity == TWO else "date"}

    def params_schema(self):
        return [_channel_param_schema()]


class PurchaseCondition(ConditionType):
    """Bought a product (by SKU) or something in a category, within a window. A line counts unless its
    order was fully refunded or its whole quantity was."""

    group = "orders"
    operators = ("bought_any", "bought_all", "bought_none")
    param_names = ("window", "channel")

    def __init__(self, key: str, label: Promise, column: str, kind_label: Promise):
        self.key, self.label, self.column, self.kind_label = key, label, column, kind_label

    def clean_params(self, raw):
        return {"window": parse_window(raw.get("window")), "channel": _clean_order_channel(raw)}

    def clean_value(self, operator, raw):
        return parse_list(raw, parse_text)

    def to_q(self, condition, ctx):
        from crm.models import OrderLine, OrderStatus

        lo, hi = condition.params["window"].bounds(ctx.now)
        lines = OrderLine.objects.filter(refunded_quantity__lt=F("quantity")).exclude(
            order__status=OrderStatus.REFUNDED
        )
        lines = lines.filter(sql.datetime_range_q("order__placed_at", lo, hi))
        if condition.params["channel"]:
            lines = lines.filter(order__channel=condition.params["channel"])
        if condition.operator == "bought_all":
            q = Q()
            for value in condition.value:
                q &= sql.exists_q(lines.filter(**{self.column: value}), "order__customer")
            return q
        rows = lines.filter(**{f"{self.column}__in": condition.value})
        return sql.exists_q(rows, "order__customer", negated=condition.operator == "bought_none")

    def value_input(self, operator):
        if self.column == "category":
            from crm.models import Product

            categories = Product.objects.exclude(category="").values_list("category", flat=True).distinct()
            return {"type": "text_list", "suggestions": sorted(categories[:500])}
        return {"type": "text_list"}

    def params_schema(self):
        return [_window_param_schema(), _channel_param_schema()]


def _order_conditions() -> list[ConditionType]:
    return [
        OrderAggregateCondition("orders.count", gettext_lazy("Number of orders"), "count"),
        OrderAggregateCondition("orders.total_spend", gettext_lazy("Total spend (net of refunds)"), "sum"),
        OrderAggregateCondition("orders.average_value", gettext_lazy("Average order value"), "avg"),
        OrderDateCondition("orders.first_order_at", gettext_lazy("First order"), "first"),
        OrderDateCondition("orders.last_order_at", gettext_lazy("Last order"), "last"),
        PurchaseCondition(
            "orders.bought_product", gettext_lazy("Bought product (SKU)"), "sku", gettext_lazy("product")
        ),
        PurchaseCondition(
            "orders.bought_category", gettext_lazy("Bought in category"), "category", gettext_lazy("category")
        ),
    ]
