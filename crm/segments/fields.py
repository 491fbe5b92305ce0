"""The registry of condition types a segment rule may use.

A rule is a JSON tree::

    {"op": "and", "conditions": [
        {"field": "profile.city", "operator": "in", "value": ["上海", "杭州"]},
        {"field": "consent.status", "channel": "sms", "operator": "opted_in"},
        {"op": "or", "conditions": [
            {"field": "orders.count", "operator": "gte", "value": 2, "window": {"kind": "last_days", "days": 90}},
            {"field": "events.performed", "event_type": "add_to_cart", "operator": "at_least", "value": 3,
             "window": {"kind": "between", "from": "2026-11-01", "to": "2026-11-11"},
             "properties": [{"key": "category", "operator": "eq", "value": "baby"}]}
        ]}
    ]}

Each condition names a registered *condition type* (`field`), one of the operators that type allows, a
value when the operator takes one, and the type's parameters (`window`, `channel`, `event_type`, ...).
A condition type validates its own input (`clean`) and compiles itself to a `Q` on the customer table
(`to_q`); adding one (loyalty tier and points balance, once loyalty exists) is one `register()` call
from that app's `AppConfig.ready()`, so crm never imports it.

Validation errors name where they are, the way the builder numbers things:
"group 1 › group 2 › condition 3: operator 'contains' does not apply to a number field".

Semantics worth knowing (the tests' reference evaluator implements the same):

- Negative text and choice operators (is not, is not one of, does not contain) are complements: they
  match empty and unknown values. Number and date comparisons, `neq` included, need a value; "is not set"
  is how to ask for a missing one.
- Dates are calendar days in `settings.SEGMENT_TIME_ZONE` (default: the business time zone) and
  ranges are inclusive of both days. "In the last N days" means at or after now − N×24h.
- Orders: an order counts unless fully refunded; spend is net of refunds; a customer with no order in
  the window has count 0 and spend 0 and no average (average conditions never match them).
- Behaviour events: "at most N times" and "exactly 0 times" match customers who never did it.
"""

from __future__ import annotations

import re
import zoneinfo
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from django.apps import apps
from django.conf import settings
from django.core.exceptions import FieldDoesNotExist
from django.db.models import Avg, Count, DecimalField, ExpressionWrapper, F, Q, Sum
from django.db.models.lookups import Exact, IContains, In, IsNull
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


class IdentityCondition(ConditionType):
    """The customer has (or has no) identifier of a kind: an openid, a phone number, a Tmall buyer id."""

    key = "identifiers.kind"
    label = gettext_lazy("Identifier")
    group = "identifiers"
    kind_label = gettext_lazy("identifier")
    operators = ("present", "absent")
    param_names = ("kind",)

    def clean_params(self, raw):
        kind = raw.get("kind")
        if not isinstance(kind, str) or not IDENTITY_KIND_RE.match(kind):
            raise ConditionError(
                _("'%(kind)s' is not an identifier kind (email, phone, wechat_openid, ... or channel:<name>)")
                % {"kind": _show(kind)}
            )
        return {"kind": kind}

    def to_q(self, condition, ctx):
        from crm.models import CustomerIdentity

        rows = CustomerIdentity.objects.filter(kind=condition.params["kind"])
        return sql.exists_q(rows, "customer", negated=condition.operator == "absent")

    def params_schema(self):
        from crm.models import IdentityKind

        return [
            {
                "name": "kind",
                "label": str(_("kind")),
                "type": "choice_or_text",
                "required": True,
                "choices": _choices_json(IdentityKind.choices),
            }
        ]


class ConsentCondition(ConditionType):
    key = "consent.status"
    label = gettext_lazy("Consent")
    group = "consent"
    kind_label = gettext_lazy("consent")
    operators = ("opted_in", "not_opted_in", "opted_out", "no_record")
    param_names = ("channel",)

    def clean_params(self, raw):
        from crm.models import ConsentChannel

        if raw.get("channel") in (None, ""):
            raise ConditionError(_("a consent channel is required"))
        return {"channel": parse_choice(raw.get("channel"), ConsentChannel.choices)}

    def to_q(self, condition, ctx):
        from crm.models import Consent, ConsentStatus

        rows = Consent.objects.filter(channel=condition.params["channel"])
        op = condition.operator
        if op in ("opted_in", "not_opted_in"):
            return sql.exists_q(
                rows.filter(status=ConsentStatus.OPTED_IN), "customer", negated=op == "not_opted_in"
            )
        if op == "opted_out":
            return sql.exists_q(rows.filter(status=ConsentStatus.OPTED_OUT), "customer")
        return sql.exists_q(rows, "customer", negated=True)

    def params_schema(self):
        from crm.models import ConsentChannel

        return [
            {
                "name": "channel",
                "label": str(_("channel")),
                "type": "choice",
                "required": True,
                "choices": _choices_json(ConsentChannel.choices),
            }
        ]


class _IdListCondition(ConditionType):
    """A condition whose value is a list of row ids that must exist (tags, static lists)."""

    model_name: str
    missing_message: Promise

    def clean_value(self, operator, raw):
        ids = parse_list(raw, lambda v: parse_number(v, integer=True, minimum=1))
        model = apps.get_model("crm", self.model_name)
        found = set(model.objects.filter(pk__in=ids).values_list("pk", flat=True))
        missing = [i for i in ids if i not in found]
        if missing:
            raise ConditionError(self.missing_message % {"id": missing[0]})
        return ids

    def schema(self):
        model = apps.get_model("crm", self.model_name)
        choices = [[pk, name] for pk, name in model.objects.order_by("name").values_list("pk", "name")[:2000]]
        data = super().schema()
        for operator in data["operators"]:
            operator["input"]["choices"] = choices  # one query for every operator, not one each
        return data

    def value_input(self, operator):
        return {"type": "choices", "choices": []}


class TagCondition(_IdListCondition):
    key = "tags.tagged"
    label = gettext_lazy("Tags")
    group = "tags"
    kind_label = gettext_lazy("tag")
    operators = ("has_any", "has_all", "has_none")
    model_name = "Tag"
    missing_message = gettext_lazy("tag %(id)s does not exist")

    def to_q(self, condition, ctx):
        from crm.models import CustomerTag

        if condition.operator == "has_all":
            q = Q()
            for tag_id in condition.value:
                q &= sql.exists_q(CustomerTag.objects.filter(tag_id=tag_id), "customer")
            return q
        rows = CustomerTag.objects.filter(tag_id__in=condition.value)
        return sql.exists_q(rows, "customer", negated=condition.operator == "has_none")


class StaticListCondition(_IdListCondition):
    key = "lists.member"
    label = gettext_lazy("Static list")
    group = "tags"
    kind_label = gettext_lazy("static list")
    operators = ("member_of_any", "member_of_none")
    model_name = "StaticList"
    missing_message = gettext_lazy("static list %(id)s does not exist")

    def to_q(self, condition, ctx):
        from crm.models import StaticListMember

        rows = StaticListMember.objects.filter(static_list_id__in=condition.value)
        return sql.exists_q(rows, "customer", negated=condition.operator == "member_of_none")


def _channel_param_schema() -> dict:
    from crm.models import Channel

    return {
        "name": "channel",
        "label": str(_("order channel")),
        "type": "choice",
        "required": False,
        "choices": _choices_json(Channel.choices),
    }


def _window_param_schema() -> dict:
    return {"name": "window", "label": str(_("when")), "type": "window", "required": False}


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


@dataclass(frozen=True)
class PropertyFilter:
    key: str
    operator: str
    value: Any


KNOWN_EVENT_TYPES = (
    "page_view",
    "product_view",
    "add_to_cart",
    "checkout_started",
    "order_placed",
    "order_refunded",
    "message_clicked",
    "lifecycle_stage_changed",
)


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
                "suggestions": list(KNOWN_EVENT_TYPES),
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


# --- Registry -----------------------------------------------------------------------------------------

_REGISTRY: dict[str, ConditionType] = {}
_BUILT = False


def register(condition_type: ConditionType) -> ConditionType:
    """Add (or replace) a condition type. Other apps call this from their AppConfig.ready()."""
    _REGISTRY[condition_type.key] = condition_type
    return condition_type


def _month_choices():
    import calendar

    return [(m, _(calendar.month_name[m])) for m in range(1, 13)]


def _profile_conditions() -> list[ConditionType]:
    from crm.models import Channel, Customer

    def col(key, label, kind, path=None, **kw):
        return ColumnCondition(f"profile.{key}", label, "profile", kind, path or key, **kw)

    return [
        col("name", gettext_lazy("Name"), "text"),
        col("email", gettext_lazy("Email"), "text"),
        col("phone", gettext_lazy("Phone"), "text"),
        col("external_id", gettext_lazy("External id"), "text"),
        col("gender", gettext_lazy("Gender"), "choice", choices=lambda: Customer.Gender.choices),
        col("birthday", gettext_lazy("Birthday"), "date"),
        col(
            "birthday_month",
            gettext_lazy("Birthday month"),
            "choice",
            "birthday__month",
            choices=_month_choices,
            null_path="birthday",
        ),
        col("city", gettext_lazy("City"), "text"),
        col("region", gettext_lazy("Region"), "text"),
        col("time_zone", gettext_lazy("Time zone"), "text"),
        col(
            "acquisition_channel",
            gettext_lazy("Acquisition channel"),
            "choice",
            choices=lambda: Channel.choices,
        ),
        col("utm_source", gettext_lazy("UTM source"), "text"),
        col("utm_medium", gettext_lazy("UTM medium"), "text"),
        col("utm_campaign", gettext_lazy("UTM campaign"), "text"),
        col("created_at", gettext_lazy("Signed up"), "datetime"),
    ]


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


def _build() -> None:
    global _BUILT
    if _BUILT:
        return
    builtin: list[ConditionType] = [
        *_profile_conditions(),
        IdentityCondition(),
        ConsentCondition(),
        TagCondition(),
        StaticListCondition(),
        *_order_conditions(),
        EventCondition(),
        *_metric_conditions(),
    ]
    added_elsewhere = dict(_REGISTRY)
    _REGISTRY.clear()
    for condition_type in builtin:
        _REGISTRY[condition_type.key] = condition_type
    _REGISTRY.update(added_elsewhere)
    _BUILT = True


def registry() -> dict[str, ConditionType]:
    _build()
    return _REGISTRY


def get_condition_type(key: Any) -> ConditionType:
    types = registry()
    if not isinstance(key, str) or key not in types:
        raise ConditionError(_("unknown field '%(field)s'") % {"field": _show(key)})
    return types[key]


def builder_schema() -> dict:
    """What the admin builder needs to draw its form: groups, condition types, operators, labels."""
    types = registry()
    return {
        "groups": [{"key": key, "label": str(label)} for key, label in GROUPS.items()],
        "fields": [t.schema() for t in types.values()],
    }


# --- Validation ---------------------------------------------------------------------------------------


def _join(*parts: str) -> str:
    return " › ".join(p for p in parts if p)


def validate_rule(rule: Any) -> Group:
    """Check a rule and return it parsed; raises RuleInvalid listing every problem it found."""
    problems: list[RuleProblem] = []
    counter = {"conditions": 0}
    root_path = _("group %(n)s") % {"n": 1}
    if not isinstance(rule, dict):
        raise RuleInvalid(
            [RuleProblem(root_path, _('a rule must be a group: {"op": "and", "conditions": [...]}'))]
        )
    tree = _validate_group(rule, root_path, (), problems, counter)
    if counter["conditions"] > MAX_CONDITIONS:
        problems.append(
            RuleProblem("", _("a rule may have at most %(n)s conditions") % {"n": MAX_CONDITIONS})
        )
    if problems:
        raise RuleInvalid(problems)
    return tree


def _validate_group(raw: dict, path: str, loc: tuple, problems: list, counter: dict) -> Group | None:
    if len(loc) >= MAX_DEPTH:
        problems.append(
            RuleProblem(path, _("groups may be nested at most %(n)s deep") % {"n": MAX_DEPTH}, loc)
        )
        return None
    op = raw.get("op")
    bad = False
    if op not in ("and", "or"):
        problems.append(
            RuleProblem(
                path, _("a group's 'op' must be 'and' or 'or', not '%(op)s'") % {"op": _show(op)}, loc
            )
        )
        bad = True
    extra = set(raw) - {"op", "conditions"}
    if extra:
        problems.append(RuleProblem(path, _("unexpected key '%(key)s'") % {"key": sorted(extra)[0]}, loc))
        bad = True
    children_raw = raw.get("conditions", [])
    if not isinstance(children_raw, list):
        problems.append(RuleProblem(path, _("a group's 'conditions' must be a list"), loc))
        return None
    children = []
    for number, child in enumerate(children_raw, start=1):
        if isinstance(child, dict) and "conditions" in child:
            sub_path = _join(path, _("group %(n)s") % {"n": number})
            sub = _validate_group(child, sub_path, (*loc, number - 1), problems, counter)
            if sub is not None:
                children.append(sub)
            continue
        child_path = _join(path, _("condition %(n)s") % {"n": number})
        counter["conditions"] += 1
        if not isinstance(child, dict):
            problems.append(
                RuleProblem(child_path, _("a condition must be an object with a 'field'"), (*loc, number - 1))
            )
            continue
        try:
            condition_type = get_condition_type(child.get("field"))
            operator, value, params = condition_type.clean(child)
        except ConditionError as e:
            problems.append(RuleProblem(_join(child_path, e.subpath), e.message, (*loc, number - 1)))
            continue
        children.append(Condition(condition_type, operator, value, params, child_path))
    return None if bad else Group(op, tuple(children), path)
