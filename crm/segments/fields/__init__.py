"""The registry of condition types a segment rule may use, one module per condition family.

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

The package: base.py (errors, operators, value parsing, windows, the rule tree, `ConditionType` and
`ColumnCondition`), one module per family (profile.py: profile columns and identifiers; consent.py;
lists.py: tags and static lists; orders.py; events.py; metrics.py), registry.py (`register()`,
`registry()`, the built-in families in their order) and validation.py (`validate_rule`).

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

from crm.segments.fields.base import (  # noqa: F401
    AGGREGATE_OPERATORS,
    BOOLEAN_OPERATORS,
    CHOICE_OPERATORS,
    DATE_OPERATORS,
    DATETIME_OPERATORS,
    EVENT_TYPE_RE,
    GROUPS,
    IDENTITY_KIND_RE,
    LIST,
    MAX_CONDITIONS,
    MAX_DAYS,
    MAX_DEPTH,
    MAX_LIST,
    MAX_PROPERTY_FILTERS,
    MAX_TEXT,
    MAX_WINDOW_DAYS,
    NONE,
    NUMBER_OPERATORS,
    ONE,
    OPERATORS,
    PROPERTY_KEY_RE,
    PROPERTY_OPERATORS,
    TEXT_OPERATORS,
    TWO,
    ColumnCondition,
    CompileContext,
    Condition,
    ConditionError,
    ConditionType,
    Group,
    Operator,
    RuleInvalid,
    RuleProblem,
    Window,
    _show,
    date_operator_bounds,
    parse_choice,
    parse_date,
    parse_days,
    parse_list,
    parse_number,
    parse_pair,
    parse_text,
    parse_window,
    segment_time_zone,
    start_of_day,
)
from crm.segments.fields.consent import ConsentCondition  # noqa: F401
from crm.segments.fields.events import (  # noqa: F401
    EventCondition,
    PropertyFilter,
    parse_property_text,
    property_q,
)
from crm.segments.fields.lists import StaticListCondition, TagCondition  # noqa: F401
from crm.segments.fields.metrics import METRIC_FIELDS, metrics_relation  # noqa: F401
from crm.segments.fields.orders import (  # noqa: F401
    OrderAggregateCondition,
    OrderDateCondition,
    PurchaseCondition,
    counted_orders,
    counted_orders_q,
)
from crm.segments.fields.profile import IdentityCondition  # noqa: F401
from crm.segments.fields.registry import (  # noqa: F401
    _REGISTRY,
    builder_schema,
    get_condition_type,
    register,
    registry,
)
from crm.segments.fields.validation import validate_rule  # noqa: F401
