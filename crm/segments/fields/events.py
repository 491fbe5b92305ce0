"""Conditions on behaviour events: did (not) do X, N times, in a window, with property filters."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.db.models import Count, Q
from django.db.models.lookups import Exact, IContains, In, IsNull
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from crm.event_types import event_types
from crm.segments import sql
from crm.segments.fields.base import (
    EVENT_TYPE_RE,
    MAX_PROPERTY_FILTERS,
    NONE,
    ONE,
    OPERATORS,
    PROPERTY_KEY_RE,
    PROPERTY_OPERATORS,
    ConditionError,
    ConditionType,
    _show,
    _window_param_schema,
    parse_list,
    parse_number,
    parse_text,
    parse_window,
)


@dataclass(frozen=True)
class PropertyFilter:
    key: str
    operator: str
    value: Any


class EventCondition(ConditionType):
    """Did (or did not do) a behaviour event, how many times, when, with property filters."""

    key = "events.performed"
    label = gettext_lazy("Behaviour event")
    group = "events"
    kind_label = gettext_lazy("behaviour event")
    operators = ("did", "did_not", "at_least", "at_most", "exactly")
    param_names = ("event_type", "window", "properties")

    def clean_params(self, raw):
        event_type = raw.get("event_type")
        if not isinstance(event_type, str) or not EVENT_TYPE_RE.match(event_type):
            raise ConditionError(_("an event type is required (letters, digits, _ . : -, at most 64)"))
        properties = raw.get("properties") or []
        if not isinstance(properties, list):
            raise ConditionError(_("the property filters must be a list"))
        if len(properties) > MAX_PROPERTY_FILTERS:
            raise ConditionError(_("at most %(n)s property filters") % {"n": MAX_PROPERTY_FILTERS})
        filters = []
        for number, item in enumerate(properties, start=1):
            try:
                filters.append(self._clean_property(item))
            except ConditionError as e:
                label = _("property filter %(n)s") % {"n": number}
                raise ConditionError(e.message, subpath=label)
        return {
            "event_type": event_type,
            "window": parse_window(raw.get("window")),
            "properties": tuple(filters),
        }

    def _clean_property(self, item) -> PropertyFilter:
        if not isinstance(item, dict):
            raise ConditionError(_("a property filter must be an object with key, operator and value"))
        extra = set(item) - {"key", "operator", "value"}
        if extra:
            raise ConditionError(_("unexpected key '%(key)s'") % {"key": sorted(extra)[0]})
        key = item.get("key")
        if not isinstance(key, str) or not PROPERTY_KEY_RE.match(key):
            raise ConditionError(_("'%(key)s' is not a property name") % {"key": _show(key)})
        op = item.get("operator")
        if op not in PROPERTY_OPERATORS:
            raise ConditionError(
                _("operator '%(op)s' does not apply to an event property") % {"op": _show(op)}
            )
        raw = item.get("value")
        arity = OPERATORS[op].arity
        if arity == NONE:
            value = None
        elif op == "in":
            value = parse_list(raw, parse_property_text)
        elif op in ("gt", "gte", "lt", "lte"):
            value = parse_number(raw)
        else:
            value = parse_property_text(raw)
        return PropertyFilter(key, op, value)

    def clean_value(self, operator, raw):
        return parse_number(raw, integer=True, minimum=1 if operator == "at_least" else 0)

    def to_q(self, condition, ctx):
        from crm.models import Event

        params = condition.params
        lo, hi = params["window"].bounds(ctx.now)
        events = Event.objects.filter(type=params["event_type"]).filter(
            sql.datetime_range_q("occurred_at", lo, hi)
        )
        for prop in params["properties"]:
            events = events.filter(property_q(prop))
        op, n = condition.operator, condition.value
        if op == "did" or (op == "at_least" and n == 1):
            return sql.exists_q(events, "customer")
        if op == "did_not" or (op in ("exactly", "at_most") and n == 0):
            return sql.exists_q(events, "customer", negated=True)
        comparison = {"at_least": "gte", "at_most": "lte", "exactly": "eq"}[op]
        return sql.aggregate_q(events, "customer", Count("*"), comparison, n, default=0, in_or=ctx.in_or)

    def value_input(self, operator):
        return {"type": "integer"} if OPERATORS[operator].arity == ONE else {"type": "none"}

    def params_schema(self):
        return [
            {
                "name": "event_type",
                "label": str(_("event")),
                "type": "text",
                "required": True,
                "suggestions": [t.code for t in event_types()],  # crm.event_types, every app's
            },
            _window_param_schema(),
            {
                "name": "properties",
                "label": str(_("where")),
                "type": "properties",
                "required": False,
                "operators": [{"key": op, "label": str(OPERATORS[op].label)} for op in PROPERTY_OPERATORS],
            },
        ]


def parse_property_text(raw: Any) -> str:
    """Property values compare as text (`properties ->> key`), so 2 matches both 2 and "2"."""
    if isinstance(raw, bool):
        return "true" if raw else "false"
    if isinstance(raw, int | float | Decimal) and not isinstance(raw, bool):
        number = parse_number(raw)
        return str(int(number)) if number == number.to_integral_value() else str(number)
    return parse_text(raw)


def property_q(prop: PropertyFilter) -> Q:
    text = sql.JsonText("properties", prop.key)
    op, value = prop.operator, prop.value
    if op == "eq":
        return Q(Exact(text, value))
    if op == "neq":  # missing or different
        return Q(IsNull(text, True)) | ~Q(Exact(text, value))
    if op == "contains":
        return Q(IContains(text, value))
    if op == "in":
        return Q(In(text, value))
    if op == "is_set":
        return Q(IsNull(text, False))
    if op == "is_not_set":
        return Q(IsNull(text, True))
    return sql.expression_q(sql.JsonNumber("properties", prop.key), op, value)
