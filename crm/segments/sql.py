"""SQL building blocks the condition types compile to.

Every condition becomes a `Q` on the customer table. Conditions on other tables become semi-joins
(`EXISTS`, `id IN (...)`) or anti-joins (`NOT EXISTS`), which PostgreSQL plans as hash or merge joins over
the whole set instead of a lookup per customer. The one shape to avoid is `id NOT IN (subquery)`:
PostgreSQL cannot turn it into an anti-join (NULL semantics) and, when the subquery's result does not fit
in `work_mem`, re-scans it for every customer. `InCustomerSet(negated=True)` writes the anti-join as
`NOT EXISTS (SELECT 1 FROM (subquery) s WHERE s.cid = customer.id)` instead.

Aggregate conditions ("at least 3 orders in the last 90 days") have two shapes:

- under AND (the usual case) a grouped subquery joined as a set: `id IN (SELECT customer_id ... GROUP BY
  customer_id HAVING count(*) >= 3)`, or, when customers with no rows at all match ("at most 2 orders"),
  the anti-join of the customers that fail;
- below an OR, where PostgreSQL cannot turn a sub-select into a join, a correlated aggregate per customer
  (`COALESCE((SELECT count(*) FROM crm_order WHERE customer_id = c.id AND ...), 0) >= 3`) that walks
  the (customer_id, time) index: linear in the customers that reach it, whereas a non-hashable
  `IN (subquery)` below an OR would be quadratic.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from django.db import NotSupportedError
from django.db.models import (
    BooleanField,
    DecimalField,
    Exists,
    Expression,
    F,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    TextField,
)
from django.db.models.functions import Coalesce
from django.db.models.lookups import (
    Exact,
    GreaterThan,
    GreaterThanOrEqual,
    IsNull,
    LessThan,
    LessThanOrEqual,
)

SET_ALIAS = "segment_set"
CID = "segment_cid"


class InCustomerSet(Expression):
    """`customer.id IN (subquery)`, or negated, the anti-join `NOT EXISTS (SELECT 1 FROM (subquery) s
    WHERE s.segment_cid = customer.id)`. The subquery must select one column named `segment_cid`."""

    output_field = BooleanField()
    conditional = True

    def __init__(self, queryset: QuerySet, *, negated: bool = False):
        super().__init__(output_field=BooleanField())
        self.queryset = queryset
        self.negated = negated
        self.subquery = Subquery(queryset)
        self.outer = F("pk")

    def get_source_expressions(self):
        return [self.subquery, self.outer]

    def set_source_expressions(self, exprs):
        self.subquery, self.outer = exprs

    def as_sql(self, compiler, connection):
        sub_sql, sub_params = compiler.compile(self.subquery)
        outer_sql, outer_params = compiler.compile(self.outer)
        if not self.negated:
            return f"{outer_sql} IN {sub_sql}", (*outer_params, *sub_params)
        sql = f"NOT EXISTS (SELECT 1 FROM {sub_sql} {SET_ALIAS} WHERE {SET_ALIAS}.{CID} = {outer_sql})"
        return sql, (*sub_params, *outer_params)


class JsonNumber(Expression):
    """The number under `key` of a JSON column, or NULL when it is missing or not a number (a string
    "abc" must not make the whole query fail on a cast)."""

    output_field = DecimalField()

    def __init__(self, field_name: str, key: str):
        super().__init__(output_field=DecimalField())
        self.col = F(field_name)
        self.key = key

    def get_source_expressions(self):
        return [self.col]

    def set_source_expressions(self, exprs):
        (self.col,) = exprs

    def as_sql(self, compiler, connection):
        raise NotSupportedError("JSON number conditions need PostgreSQL or SQLite")

    def as_postgresql(self, compiler, connection):
        col, params = compiler.compile(self.col)
        sql = f"(CASE WHEN jsonb_typeof({col} -> %s) = 'number' THEN ({col} ->> %s)::numeric END)"
        return sql, (*params, self.key, *params, self.key)

    def as_sqlite(self, compiler, connection):
        col, params = compiler.compile(self.col)
        path = '$."' + self.key.replace('"', "") + '"'
        # CAST gives the expression REAL affinity, so SQLite compares it with the (text-adapted) Decimal
        # parameter as a number.
        sql = f"CAST(CASE WHEN json_type({col}, %s) IN ('integer', 'real') THEN json_extract({col}, %s) END AS REAL)"
        return sql, (*params, path, *params, path)


class JsonText(Expression):
    """The text under `key` of a JSON column, as PostgreSQL's `->>` gives it: strings as they are, numbers
    and booleans as their JSON text, NULL when the key is missing or holds JSON null."""

    output_field = TextField()

    def __init__(self, field_name: str, key: str):
        super().__init__(output_field=TextField())
        self.col = F(field_name)
        self.key = key

    def get_source_expressions(self):
        return [self.col]

    def set_source_expressions(self, exprs):
        (self.col,) = exprs

    def as_sql(self, compiler, connection):
        raise NotSupportedError("JSON property conditions need PostgreSQL or SQLite")

    def as_postgresql(self, compiler, connection):
        col, params = compiler.compile(self.col)
        return f"({col} ->> %s)", (*params, self.key)

    def as_sqlite(self, compiler, connection):
        col, params = compiler.compile(self.col)
        path = '$."' + self.key.replace('"', "") + '"'
        sql = (
            f"(CASE WHEN json_type({col}, %s) IS NULL OR json_type({col}, %s) = 'null' THEN NULL "
            f"WHEN json_type({col}, %s) IN ('true', 'false') THEN json_type({col}, %s) "
            f"ELSE CAST(json_extract({col}, %s) AS TEXT) END)"
        )
        return sql, (*params, path, *params, path, *params, path, *params, path, *params, path)


# --- Comparisons --------------------------------------------------------------------------------------

_LOOKUPS = {"gt": GreaterThan, "gte": GreaterThanOrEqual, "lt": LessThan, "lte": LessThanOrEqual}


def holds(operator: str, value: Any, x: Any) -> bool:
    """Whether a number comparison holds for `x` in Python (None never compares)."""
    if x is None:
        return False
    if operator == "eq":
        return x == value
    if operator == "neq":
        return x != value
    if operator == "gt":
        return x > value
    if operator == "gte":
        return x >= value
    if operator == "lt":
        return x < value
    if operator == "lte":
        return x <= value
    if operator == "between":
        return value[0] <= x <= value[1]
    raise ValueError(operator)


def number_q(path: str, operator: str, value: Any) -> Q:
    """A number comparison on a field path. Comparisons need a value: a missing value (NULL) never
    matches, not even `neq`."""
    if operator == "eq":
        return Q(**{path: value})
    if operator == "neq":
        return Q(**{f"{path}__isnull": False}) & ~Q(**{path: value})
    if operator == "between":
        return Q(**{f"{path}__gte": value[0], f"{path}__lte": value[1]})
    return Q(**{f"{path}__{operator}": value})


def expression_q(expr, operator: str, value: Any) -> Q:
    """The same comparisons on an expression (a correlated aggregate)."""
    if operator == "eq":
        return Q(Exact(expr, value))
    if operator == "neq":
        return Q(IsNull(expr, False)) & ~Q(Exact(expr, value))
    if operator == "between":
        return Q(GreaterThanOrEqual(expr, value[0])) & Q(LessThanOrEqual(expr, value[1]))
    return Q(_LOOKUPS[operator](expr, value))


def datetime_range_q(path: str, lo: datetime | None, hi: datetime | None) -> Q:
    q = Q()
    if lo is not None:
        q &= Q(**{f"{path}__gte": lo})
    if hi is not None:
        q &= Q(**{f"{path}__lt": hi})
    return q


# --- Sets of customers --------------------------------------------------------------------------------


def exists_q(queryset: QuerySet, customer_path: str, *, negated: bool = False) -> Q:
    """The customer has (or, negated, has no) row in `queryset`; `customer_path` leads from its model to
    the customer id (`customer`, `order__customer`)."""
    correlated = Exists(queryset.filter(**{customer_path: OuterRef("pk")}))
    return ~Q(correlated) if negated else Q(correlated)


def aggregate_q(
    queryset: QuerySet,
    customer_path: str,
    aggregate,
    operator: str,
    value: Any,
    *,
    default: Decimal | int | None,
    in_or: bool,
) -> Q:
    """Compare an aggregate over each customer's rows of `queryset` with `value`. A customer without rows
    has the aggregate `default` (0 for counts and sums, None for averages, which then never match)."""
    if in_or:
        per_customer = (
            queryset.filter(**{customer_path: OuterRef("pk")})
            .values(customer_path)
            .annotate(segment_n=aggregate)
            .values("segment_n")
        )
        expr = Subquery(per_customer, output_field=aggregate.output_field)
        if default is not None:
            expr = Coalesce(expr, default, output_field=aggregate.output_field)
        return expression_q(expr, operator, value)

    grouped = queryset.values(**{CID: F(customer_path)}).annotate(segment_n=aggregate)
    matches = number_q("segment_n", operator, value)
    if default is not None and holds(operator, value, default):
        # Customers without rows match, so take everyone but the customers whose rows fail.
        return Q(InCustomerSet(grouped.filter(~matches).values(CID), negated=True))
    return Q(InCustomerSet(grouped.filter(matches).values(CID)))
