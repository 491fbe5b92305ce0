"""The building blocks of segment conditions: errors, operators, value parsing, time windows, the
validated rule tree and the `ConditionType` every condition family derives from (with `ColumnCondition`,
a condition on one column reached from the customer)."""

from __future__ import annotations

import re
import zoneinfo
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from django.conf import settings
from django.db.models import Q
from django.utils.functional import Promise
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from crm.segments import sql

# --- Errors -------------------------------------------------------------------------------------------


class ConditionError(ValueError):
    """One problem with one condition; the walker prefixes it with the condition's path."""

    def __init__(self, message: str, *, subpath: str = ""):
        super().__init__(message)
        self.message = message
        self.subpath = subpath


@dataclass(frozen=True)
class RuleProblem:
    path: str  # "group 1 › group 2 › condition 3", for people
    message: str
    loc: tuple[int, ...] = ()  # child positions from the root (0-based), for the builder to highlight

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class RuleInvalid(ValueError):
    """A rule that cannot be compiled; `problems` name each condition at fault."""

    def __init__(self, problems: list[RuleProblem]):
        self.problems = problems
        super().__init__("; ".join(str(p) for p in problems))

    @property
    def messages(self) -> list[str]:
        return [str(p) for p in self.problems]


# --- Operators ----------------------------------------------------------------------------------------

NONE, ONE, TWO, LIST = "none", "one", "two", "list"


@dataclass(frozen=True)
class Operator:
    key: str
    label: Promise
    arity: str


OPERATORS: dict[str, Operator] = {
    o.key: o
    for o in [
        Operator("eq", gettext_lazy("is"), ONE),
        Operator("neq", gettext_lazy("is not"), ONE),
        Operator("contains", gettext_lazy("contains"), ONE),
        Operator("not_contains", gettext_lazy("does not contain"), ONE),
        Operator("starts_with", gettext_lazy("starts with"), ONE),
        Operator("in", gettext_lazy("is one of"), LIST),
        Operator("not_in", gettext_lazy("is not one of"), LIST),
        Operator("is_set", gettext_lazy("is set"), NONE),
        Operator("is_not_set", gettext_lazy("is not set"), NONE),
        Operator("gt", gettext_lazy("is greater than"), ONE),
        Operator("gte", gettext_lazy("is at least"), ONE),
        Operator("lt", gettext_lazy("is less than"), ONE),
        Operator("lte", gettext_lazy("is at most"), ONE),
        Operator("between", gettext_lazy("is between"), TWO),
        Operator("on", gettext_lazy("is on"), ONE),
        Operator("before", gettext_lazy("is before"), ONE),
        Operator("after", gettext_lazy("is after"), ONE),
        Operator("in_last_days", gettext_lazy("is within the last … days"), ONE),
        Operator("more_than_days_ago", gettext_lazy("is more than … days ago"), ONE),
        Operator("is_true", gettext_lazy("is yes"), NONE),
        Operator("is_false", gettext_lazy("is no"), NONE),
        Operator("present", gettext_lazy("is present"), NONE),
        Operator("absent", gettext_lazy("is absent"), NONE),
        Operator("opted_in", gettext_lazy("opted in"), NONE),
        Operator("not_opted_in", gettext_lazy("has not opted in"), NONE),
        Operator("opted_out", gettext_lazy("opted out"), NONE),
        Operator("no_record", gettext_lazy("has no consent record"), NONE),
        Operator("has_any", gettext_lazy("has any of"), LIST),
        Operator("has_all", gettext_lazy("has all of"), LIST),
        Operator("has_none", gettext_lazy("has none of"), LIST),
        Operator("member_of_any", gettext_lazy("is in any of"), LIST),
        Operator("member_of_none", gettext_lazy("is in none of"), LIST),
        Operator("bought_any", gettext_lazy("bought any of"), LIST),
        Operator("bought_all", gettext_lazy("bought all of"), LIST),
        Operator("bought_none", gettext_lazy("bought none of"), LIST),
        Operator("did", gettext_lazy("did it"), NONE),
        Operator("did_not", gettext_lazy("did not do it"), NONE),
        Operator("at_least", gettext_lazy("did it at least … times"), ONE),
        Operator("at_most", gettext_lazy("did it at most … times"), ONE),
        Operator("exactly", gettext_lazy("did it exactly … times"), ONE),
    ]
}

TEXT_OPERATORS = (
    "eq",
    "neq",
    "contains",
    "not_contains",
    "starts_with",
    "in",
    "not_in",
    "is_set",
    "is_not_set",
)
NUMBER_OPERATORS = ("eq", "neq", "gt", "gte", "lt", "lte", "between", "is_set", "is_not_set")
AGGREGATE_OPERATORS = ("eq", "neq", "gt", "gte", "lt", "lte", "between")
DATETIME_OPERATORS = (
    "on", "before", "after", "between", "in_last_days", "more_than_days_ago", "is_set", "is_not_set",
)  # fmt: skip
DATE_OPERATORS = ("on", "before", "after", "between", "is_set", "is_not_set")
CHOICE_OPERATORS = ("in", "not_in", "is_set", "is_not_set")
BOOLEAN_OPERATORS = ("is_true", "is_false")
PROPERTY_OPERATORS = ("eq", "neq", "contains", "in", "gt", "gte", "lt", "lte", "is_set", "is_not_set")

MAX_TEXT = 200
MAX_LIST = 1000
MAX_DAYS = 36500
MAX_WINDOW_DAYS = 3650
MAX_DEPTH = 6
MAX_CONDITIONS = 100
MAX_PROPERTY_FILTERS = 10
PROPERTY_KEY_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:-]{0,63}$")
EVENT_TYPE_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
IDENTITY_KIND_RE = re.compile(r"^([a-z][a-z0-9_]{0,31}|channel:[a-z0-9_.-]{1,32})$")


# --- Value parsing ------------------------------------------------------------------------------------


def _show(raw: Any) -> str:
    text = str(raw)
    return text if len(text) <= 40 else text[:37] + "…"


def parse_text(raw: Any) -> str:
    if (
        isinstance(raw, bool)
        or not isinstance(raw, str | int | Decimal)
        or (isinstance(raw, str) and not raw)
    ):
        raise ConditionError(_("a text value is required"))
    text = str(raw)
    if len(text) > MAX_TEXT:
        raise ConditionError(_("the value is longer than %(n)s characters") % {"n": MAX_TEXT})
    return text


def parse_list(raw: Any, item: Callable[[Any], Any]) -> list:
    if not isinstance(raw, list) or not raw:
        raise ConditionError(_("a list of one or more values is required"))
    if len(raw) > MAX_LIST:
        raise ConditionError(_("a list may hold at most %(n)s values") % {"n": MAX_LIST})
    out = []
    for value in raw:
        parsed = item(value)
        if parsed not in out:
            out.append(parsed)
    return out


def parse_number(raw: Any, *, integer: bool = False, minimum: Decimal | int | None = None) -> Decimal | int:
    if isinstance(raw, bool) or raw is None or raw == "":
        raise ConditionError(_("a number is required"))
    try:
        number = Decimal(str(raw).strip())
    except InvalidOperation:
        raise ConditionError(_("'%(value)s' is not a number") % {"value": _show(raw)})
    if not number.is_finite() or abs(number) >= Decimal("1e15"):
        raise ConditionError(_("'%(value)s' is not a number") % {"value": _show(raw)})
    if integer:
        if number != number.to_integral_value():
            raise ConditionError(_("'%(value)s' is not a whole number") % {"value": _show(raw)})
        number = int(number)
    if minimum is not None and number < minimum:
        raise ConditionError(_("the value must be at least %(min)s") % {"min": minimum})
    return number


def parse_date(raw: Any) -> date:
    if isinstance(raw, str) and len(raw) == 10:
        try:
            return date.fromisoformat(raw)
        except ValueError:
            pass
    raise ConditionError(_("'%(value)s' is not a date (YYYY-MM-DD)") % {"value": _show(raw)})


def parse_days(raw: Any, maximum: int = MAX_DAYS) -> int:
    days = parse_number(raw, integer=True)
    if not 1 <= days <= maximum:
        raise ConditionError(_("the number of days must be between 1 and %(max)s") % {"max": maximum})
    return days


def parse_pair(raw: Any, item: Callable[[Any], Any]) -> tuple:
    if not isinstance(raw, list) or len(raw) != 2:
        raise ConditionError(_("two values (from, to) are required"))
    lo, hi = item(raw[0]), item(raw[1])
    if lo > hi:
        raise ConditionError(
            _("the first value (%(lo)s) is greater than the second (%(hi)s)") % {"lo": lo, "hi": hi}
        )
    return lo, hi


def parse_choice(raw: Any, choices: Iterable[tuple[Any, Any]]) -> Any:
    values = [c[0] for c in choices]
    for value in values:
        if raw == value or (isinstance(value, int) and not isinstance(raw, bool) and str(raw) == str(value)):
            return value
    shown = ", ".join(str(v) for v in values if v != "")
    raise ConditionError(
        _("'%(value)s' is not one of the choices (%(choices)s)") % {"value": _show(raw), "choices": shown}
    )


# --- Time ---------------------------------------------------------------------------------------------


def segment_time_zone() -> zoneinfo.ZoneInfo:
    name = getattr(settings, "SEGMENT_TIME_ZONE", None) or settings.TIME_ZONE
    return zoneinfo.ZoneInfo(name)


def start_of_day(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=segment_time_zone())


def date_operator_bounds(operator: str, value: Any, now: datetime) -> tuple[datetime | None, datetime | None]:
    """[lo, hi) in UTC-aware datetimes for a date operator on a timestamp."""
    if operator == "on":
        return start_of_day(value), start_of_day(value + timedelta(days=1))
    if operator == "before":
        return None, start_of_day(value)
    if operator == "after":
        return start_of_day(value + timedelta(days=1)), None
    if operator == "between":
        return start_of_day(value[0]), start_of_day(value[1] + timedelta(days=1))
    if operator == "in_last_days":
        return now - timedelta(days=value), None
    if operator == "more_than_days_ago":
        return None, now - timedelta(days=value)
    raise ValueError(operator)


@dataclass(frozen=True)
class Window:
    """When rows count: all time, the last N days before now, or between two days (inclusive)."""

    kind: str = "all_time"
    days: int | None = None
    start: date | None = None
    end: date | None = None

    def bounds(self, now: datetime) -> tuple[datetime | None, datetime | None]:
        if self.kind == "last_days":
            return now - timedelta(days=self.days), None
        if self.kind == "between":
            return start_of_day(self.start), start_of_day(self.end + timedelta(days=1))
        return None, None

    def as_json(self) -> dict:
        if self.kind == "last_days":
            return {"kind": "last_days", "days": self.days}
        if self.kind == "between":
            return {"kind": "between", "from": self.start.isoformat(), "to": self.end.isoformat()}
        return {"kind": "all_time"}


def parse_window(raw: Any) -> Window:
    if raw is None:
        return Window()
    if not isinstance(raw, dict):
        raise ConditionError(_("the window must be an object with a 'kind'"))
    kind = raw.get("kind")
    allowed = {"all_time": {"kind"}, "last_days": {"kind", "days"}, "between": {"kind", "from", "to"}}
    if kind not in allowed:
        raise ConditionError(
            _("the window kind '%(kind)s' is not one of all_time, last_days, between") % {"kind": _show(kind)}
        )
    extra = set(raw) - allowed[kind]
    if extra:
        raise ConditionError(_("the window has an unexpected key '%(key)s'") % {"key": sorted(extra)[0]})
    if kind == "last_days":
        try:
            days = parse_days(raw.get("days"), MAX_WINDOW_DAYS)
        except ConditionError:
            raise ConditionError(
                _("the window's days must be a whole number between 1 and %(max)s") % {"max": MAX_WINDOW_DAYS}
            )
        return Window("last_days", days=days)
    if kind == "between":
        try:
            start, end = parse_date(raw.get("from")), parse_date(raw.get("to"))
        except ConditionError as e:
            raise ConditionError(_("the window's dates: %(error)s") % {"error": e.message})
        if start > end:
            raise ConditionError(
                _("the window starts (%(start)s) after it ends (%(end)s)") % {"start": start, "end": end}
            )
        return Window("between", start=start, end=end)
    return Window()


# --- Validated rule trees -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Condition:
    type: ConditionType
    operator: str
    value: Any
    params: dict
    path: str


@dataclass(frozen=True)
class Group:
    op: str
    children: tuple
    path: str


@dataclass
class CompileContext:
    now: datetime
    in_or: bool = False
    # Set (to a list) only for the conditions directly below the rule's top-level AND, when the caller
    # builds the whole queryset: an order aggregate may then put itself there as a sql.JoinedAggregate
    # (one at most) instead of returning a sub-select.
    joined: list | None = None


# --- Condition types ----------------------------------------------------------------------------------

GROUPS: dict[str, Promise] = {
    "profile": gettext_lazy("Profile"),
    "identifiers": gettext_lazy("Identifiers"),
    "consent": gettext_lazy("Consent"),
    "tags": gettext_lazy("Tags and lists"),
    "orders": gettext_lazy("Orders"),
    "events": gettext_lazy("Behaviour"),
    "metrics": gettext_lazy("Intelligence"),
    "loyalty": gettext_lazy("Loyalty"),
}


class ConditionType:
    """One kind of condition. Subclasses set the class attributes and implement `clean_value`,
    `to_q` and, when they take parameters, `clean_params`."""

    key: str
    label: Promise
    group: str
    kind_label: Promise  # "a <kind> field" in messages
    operators: tuple[str, ...]
    param_names: tuple[str, ...] = ()
    # Whether the condition is a plain comparison on the customer row (or a one-to-one row), as opposed
    # to a sub-select over other tables; an OR group of only such conditions is cheap wherever it runs.
    on_customer_row: bool = False

    def clean(self, raw: dict) -> tuple[str, Any, dict]:
        operator = raw.get("operator")
        if not isinstance(operator, str) or not operator:
            raise ConditionError(_("an operator is required"))
        if operator not in self.operators:
            if operator in OPERATORS:
                raise ConditionError(
                    _("operator '%(op)s' does not apply to a %(kind)s field")
                    % {"op": operator, "kind": self.kind_label}
                )
            raise ConditionError(_("unknown operator '%(op)s'") % {"op": _show(operator)})
        extra = set(raw) - {"field", "operator", "value", *self.param_names}
        if extra:
            raise ConditionError(_("unexpected key '%(key)s'") % {"key": sorted(extra)[0]})
        params = self.clean_params(raw)
        arity = OPERATORS[operator].arity
        if arity == NONE:
            if raw.get("value") not in (None, "", []):
                raise ConditionError(_("operator '%(op)s' takes no value") % {"op": operator})
            value = None
        else:
            if "value" not in raw or raw["value"] is None:
                raise ConditionError(_("operator '%(op)s' needs a value") % {"op": operator})
            value = self.clean_value(operator, raw["value"])
        return operator, value, params

    def clean_params(self, raw: dict) -> dict:
        return {}

    def clean_value(self, operator: str, raw: Any) -> Any:  # pragma: no cover - every type overrides it
        raise NotImplementedError

    def to_q(self, condition: Condition, ctx: CompileContext) -> Q:  # pragma: no cover
        raise NotImplementedError

    def value_input(self, operator: str) -> dict:
        """How the builder asks for the value of `operator` (see static/crm/segments/builder.js)."""
        return {"type": "none"}

    def params_schema(self) -> list[dict]:
        return []

    def schema(self) -> dict:
        return {
            "key": self.key,
            "label": str(self.label),
            "group": self.group,
            "operators": [
                {"key": op, "label": str(OPERATORS[op].label), "input": self.value_input(op)}
                for op in self.operators
            ],
            "params": self.params_schema(),
        }


def _choices_json(choices) -> list[list]:
    return [[value, str(label)] for value, label in choices]


class ColumnCondition(ConditionType):
    """A value on the customer row, or on a one-to-one table reached by `path` (`metrics__r_score`)."""

    on_customer_row = True

    KINDS = {
        "text": (gettext_lazy("text"), TEXT_OPERATORS),
        "number": (gettext_lazy("number"), NUMBER_OPERATORS),
        "datetime": (gettext_lazy("date"), DATETIME_OPERATORS),
        "date": (gettext_lazy("date"), DATE_OPERATORS),
        "choice": (gettext_lazy("choice"), CHOICE_OPERATORS),
        "boolean": (gettext_lazy("yes/no"), BOOLEAN_OPERATORS),
    }

    def __init__(
        self,
        key: str,
        label: Promise,
        group: str,
        kind: str,
        path: str,
        *,
        choices: Callable[[], list] | list | None = None,
        integer: bool = False,
        null_path: str | None = None,
    ):
        self.key, self.label, self.group, self.kind, self.path = key, label, group, kind, path
        self.kind_label, self.operators = self.KINDS[kind]
        self._choices = choices
        self.integer = integer
        self.null_path = null_path or path  # what "is set" tests (the column under a transform)

    @property
    def choices(self) -> list:
        return list(self._choices() if callable(self._choices) else self._choices or [])

    def clean_value(self, operator, raw):
        if self.kind == "text":
            return parse_list(raw, parse_text) if operator in ("in", "not_in") else parse_text(raw)
        if self.kind == "number":
            number = lambda v: parse_number(v, integer=self.integer)  # noqa: E731
            return parse_pair(raw, number) if operator == "between" else number(raw)
        if self.kind == "choice":
            return parse_list(raw, lambda v: parse_choice(v, self.choices))
        if operator in ("in_last_days", "more_than_days_ago"):
            return parse_days(raw)
        return parse_pair(raw, parse_date) if operator == "between" else parse_date(raw)

    def to_q(self, condition, ctx):
        op, value, path = condition.operator, condition.value, self.path
        if op in ("is_true", "is_false"):
            return Q(**{path: op == "is_true"})
        if op == "is_set":
            q = Q(**{f"{self.null_path}__isnull": False})
            return q & ~Q(**{self.null_path: ""}) if self._blank_is_unset() else q
        if op == "is_not_set":
            q = Q(**{f"{self.null_path}__isnull": True})
            return q | Q(**{self.null_path: ""}) if self._blank_is_unset() else q
        if self.kind == "text":
            positive = {
                "eq": "exact", "neq": "exact", "contains": "icontains", "not_contains": "icontains",
                "starts_with": "istartswith", "in": "in", "not_in": "in",
            }[op]  # fmt: skip
            q = Q(**{f"{path}__{positive}": value})
            return self._complement(q) if op in ("neq", "not_contains", "not_in") else q
        if self.kind == "choice":
            q = Q(**{f"{path}__in": value})
            return self._complement(q) if op == "not_in" else q
        if self.kind == "number":
            return sql.number_q(path, op, value)
        if self.kind == "date":
            if op == "on":
                return Q(**{path: value})
            if op == "before":
                return Q(**{f"{path}__lt": value})
            if op == "after":
                return Q(**{f"{path}__gt": value})
            return Q(**{f"{path}__gte": value[0], f"{path}__lte": value[1]})
        lo, hi = date_operator_bounds(op, value, ctx.now)
        return sql.datetime_range_q(path, lo, hi)

    def _complement(self, q: Q) -> Q:
        # The NULL case is spelled out rather than left to Django: when an earlier condition has already
        # joined the metrics table and an OR then makes the join outer, Django does not add its
        # "IS NOT NULL" guard to a negation, and customers without a metrics row would drop out.
        return Q(**{f"{self.null_path}__isnull": True}) | ~q

    def _blank_is_unset(self) -> bool:
        return self.kind == "text" or (
            self.kind == "choice" and all(isinstance(c[0], str) for c in self.choices)
        )

    def value_input(self, operator):
        arity = OPERATORS[operator].arity
        if arity == NONE:
            return {"type": "none"}
        if self.kind == "text":
            return {"type": "text_list" if arity == LIST else "text"}
        if self.kind == "choice":
            return {"type": "choices", "choices": _choices_json(c for c in self.choices if c[0] != "")}
        if self.kind == "number":
            kind = "integer" if self.integer else "number"
            return {"type": kind + ("_pair" if arity == TWO else "")}
        if operator in ("in_last_days", "more_than_days_ago"):
            return {"type": "days"}
        return {"type": "date_pair" if arity == TWO else "date"}


def _window_param_schema() -> dict:
    return {"name": "window", "label": str(_("when")), "type": "window", "required": False}
