"""SQL building blocks the condition types compile to.

Every condition becomes a `Q` on the customer table. Conditions on other tables become semi-joins
(`EXISTS`, `id IN (...)`) or anti-joins (`NOT EXISTS`), which PostgreSQL plans as hash or merge joins over
the whole set or as an index probe per remaining customer, whichever its estimates favour. The one shape
to avoid is `id NOT IN (subquery)`: PostgreSQL cannot turn it into an anti-join (NULL semantics) and,
when the subquery's result does not fit in `work_mem`, re-scans it for every customer.

Aggregate conditions ("at least 3 orders in the last 90 days") are correlated per customer
(`COALESCE((SELECT count(*) FROM crm_order WHERE customer_id = c.id AND ...), 0) >= 3`), which walks one
customer's range of a (customer_id, time) index: linear in the customers that reach it. Under AND they
are deferred (`deferred_q`) so that only the customers left by the other conditions reach them; grouping
every order of the window first (the earlier shape, `id IN (SELECT customer_id ... GROUP BY ... HAVING)`)
cost the same whatever the other conditions left, and it was the slowest part of a count (see
BENCHMARKS.md, segment counts).

One order aggregate directly below the rule's top-level AND is instead *joined* (`JoinedAggregate`). On
PostgreSQL it is a lateral join (`LEFT JOIN LATERAL (SELECT count(*) FROM crm_order WHERE customer_id =
c.id AND ...) n ON TRUE ... WHERE n >= 3`): the planner places it after the cheaper joins like any other
relation, nothing is grouped, and "at least N" reads only each customer's N-th row. On SQLite, which has
no LATERAL, the customers are joined to their orders in the window and grouped (`LEFT JOIN crm_order ...
GROUP BY crm_customer.id HAVING count(...) >= 3`). On PostgreSQL the lateral form is the fastest of the
three for a count with an order aggregate (lateral, grouped join, deferred sub-select; see BENCHMARKS.md,
segment counts). Only one: two joined to-many relations would multiply each other's rows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.db import NotSupportedError, connection, transaction
from django.db.models import (
    Count,
    DecimalField,
    Exists,
    Expression,
    F,
    FilteredRelation,
    IntegerField,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    TextField,
    Value,
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


def deferred_q(q: Q) -> Q:
    """`q` as a semi-join of the customer table with itself: `EXISTS (SELECT 1 FROM crm_customer d WHERE
    d.id = customer.id AND q(d))`.

    A correlated sub-select written straight into the WHERE clause is a filter of the customer scan, so
    PostgreSQL evaluates it for every customer the scan returns, before any join with the consent, tag or
    metrics tables has narrowed them. As a semi-join it is a relation of its own that the planner orders
    like the others: it probes the customer's primary key (and, from there, the per-customer index of
    the sub-select) only for the customers left after the cheaper, more selective conditions."""
    from crm.models import Customer

    return Q(Exists(Customer.objects.filter(pk=OuterRef("pk")).filter(q)))


def per_customer(queryset: QuerySet, customer_path: str, aggregate) -> QuerySet:
    """`aggregate` of the outer customer's rows of `queryset` (correlated by OuterRef("pk")), as column
    `segment_n`: one row, or none for a customer without rows."""
    return (
        queryset.filter(**{customer_path: OuterRef("pk")})
        .values(customer_path)
        .annotate(segment_n=aggregate)
        .values("segment_n")
    )


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
    has the aggregate `default` (0 for counts and sums, None for averages, which then never match).

    The aggregate is always correlated (one walk of the customer's (customer_id, time) index range); under
    AND it is deferred (see `deferred_q`) so that it runs only for the customers the other conditions
    leave, instead of grouping every row of the window before anything narrows them."""
    expr = Subquery(per_customer(queryset, customer_path, aggregate), output_field=aggregate.output_field)
    if default is not None:
        expr = Coalesce(expr, default, output_field=aggregate.output_field)
    q = expression_q(expr, operator, value)
    return q if in_or else deferred_q(q)


JOINED_RELATION = "segment_joined"
JOINED_VALUE = "segment_joined_value"


@dataclass(frozen=True)
class JoinedAggregate:
    """An aggregate over one to-many relation of the customer (`relation`, e.g. "orders"), compared with a
    value, applied to a customer queryset as a lateral join (PostgreSQL) or a join + GROUP BY + HAVING
    instead of a correlated sub-select (see the module docstring). `rows(at)` selects the relation's rows
    and `aggregate(at)` aggregates them, each with its paths prefixed by `at` ("" on the related model
    itself, "<alias>__" through a join);
    `default` is the aggregate of a customer with no rows (0 for counts and sums, None for averages)."""

    relation: str
    rows: Callable[[str], Q]
    aggregate: Callable[[str], Any]
    operator: str
    value: Any
    default: Any

    def apply(self, customers: QuerySet, *, lateral: bool | None = None) -> QuerySet:
        """`lateral`: the lateral-join form (PostgreSQL's default) rather than join + GROUP BY (SQLite,
        which has no LATERAL)."""
        if not _rows_are_customers(customers):
            # Another to-many join would multiply the rows this aggregates: keep the correlated form.
            return customers.filter(self.as_correlated_q(in_or=False))
        if lateral is None:
            lateral = connection.vendor == "postgresql"
        if lateral:
            return self._apply_lateral(customers)
        joined = FilteredRelation(self.relation, condition=self.rows(f"{self.relation}__"))
        value = self.aggregate(f"{JOINED_RELATION}__")
        if self.default is not None:
            value = Coalesce(value, self.default, output_field=value.output_field)
        return (
            customers.alias(**{JOINED_RELATION: joined})
            .alias(**{JOINED_VALUE: value})
            .filter(number_q(JOINED_VALUE, self.operator, self.value))
        )

    def _apply_lateral(self, customers: QuerySet) -> QuerySet:
        """PostgreSQL: `LEFT JOIN LATERAL (SELECT <aggregate> FROM <rows> WHERE customer_id = c.id) ON
        TRUE`, compared in the WHERE clause. The planner orders a lateral join like any other, so it
        probes the customer's index range only for the customers the cheaper conditions leave, and no
        GROUP BY over the joined rows is needed, which is what the join form spent much of its time on
        (see BENCHMARKS.md, segment counts). (Its probes run in the leader process only, as PostgreSQL
        15 plans them.) "At least N rows" needs no count: the lateral subquery reads the customer's N-th
        row (`OFFSET N-1 LIMIT 1`), and stops there."""
        rows, customer_path = self._rows()
        aggregate = self.aggregate("")
        at_least = _at_least(aggregate, self.operator, self.value)
        if at_least is not None:
            if at_least <= 0:
                return customers  # everyone has at least no rows
            nth_row = (
                rows.filter(**{customer_path: OuterRef("pk")})
                .order_by()
                .values(segment_n=Value(1))[at_least - 1 : at_least]
            )
            customers, alias = _with_lateral_join(customers, nth_row)
            value = LateralColumn(alias, "segment_n", output_field=IntegerField())
            return customers.alias(**{JOINED_VALUE: value}).filter(**{f"{JOINED_VALUE}__isnull": False})
        customers, alias = _with_lateral_join(customers, per_customer(rows, customer_path, aggregate))
        value = LateralColumn(alias, "segment_n", output_field=aggregate.output_field)
        if self.default is not None:
            value = Coalesce(value, self.default, output_field=aggregate.output_field)
        return customers.alias(**{JOINED_VALUE: value}).filter(
            number_q(JOINED_VALUE, self.operator, self.value)
        )

    def as_correlated_q(self, *, in_or: bool) -> Q:
        """The same condition as a correlated sub-select (`aggregate_q`), for anywhere else in a rule."""
        rows, customer_path = self._rows()
        return aggregate_q(
            rows,
            customer_path,
            self.aggregate(""),
            self.operator,
            self.value,
            default=self.default,
            in_or=in_or,
        )

    def _rows(self) -> tuple[QuerySet, str]:
        """The relation's selected rows, and the path from them to their customer."""
        from crm.models import Customer

        remote = Customer._meta.get_field(self.relation)
        return remote.related_model.objects.filter(self.rows("")), remote.field.name


def _at_least(aggregate, operator: str, value: Any) -> int | None:
    """N when the condition is "count of rows >= N" (or "> N-1"), else None."""
    if not isinstance(aggregate, Count) or aggregate.distinct or not isinstance(value, int):
        return None
    return {"gte": value, "gt": value + 1}.get(operator)


def _with_lateral_join(customers: QuerySet, per_customer: QuerySet) -> tuple[QuerySet, str]:
    """`customers` with `per_customer` (a queryset correlated to the customer by OuterRef("pk")) joined
    laterally, and the join's alias."""
    customers = customers.all()
    query = customers.query
    parent = query.get_initial_alias()
    subquery = Subquery(per_customer).resolve_expression(query=query)
    alias = LateralJoin.TABLE
    if alias in query.alias_map:  # never two in one rule (see compiler.py), but stay correct
        alias = f"{alias}_{len(query.alias_map)}"
    query.alias_map[alias] = LateralJoin(subquery, table_alias=alias, parent_alias=parent)
    query.alias_refcount[alias] = 1
    # A new list: a clone's table_map shares its lists with the original's.
    query.table_map[LateralJoin.TABLE] = [*query.table_map.get(LateralJoin.TABLE, []), alias]
    return customers, alias


class LateralJoin:
    """`LEFT JOIN LATERAL (<correlated subquery>) <alias> ON TRUE` as an entry of a query's join map
    (Django has no lateral joins). It carries what Django's query machinery reads from a join: its
    aliases, so the query can be relabelled when it becomes a subquery, and a join type that promotion
    and demotion leave alone."""

    TABLE = "segment_lateral"
    join_type = "LEFT OUTER JOIN"
    nullable = True
    filtered_relation = None
    join_field = None
    table_name = TABLE

    def __init__(self, subquery: Subquery, *, table_alias: str, parent_alias: str):
        self.subquery = subquery
        self.table_alias = table_alias
        self.parent_alias = parent_alias

    @property
    def identity(self) -> tuple:
        return (self.__class__, self.table_alias, self.parent_alias, id(self.subquery))

    def equals(self, other) -> bool:
        return self is other  # never reused for a join Django adds later

    def as_sql(self, compiler, connection):
        sql, params = compiler.compile(self.subquery)
        return f"LEFT JOIN LATERAL {sql} {compiler.quote_name_unless_alias(self.table_alias)} ON TRUE", params

    def relabeled_clone(self, change_map: dict[str, str]) -> LateralJoin:
        return LateralJoin(
            self.subquery.relabeled_clone(change_map),
            table_alias=change_map.get(self.table_alias, self.table_alias),
            parent_alias=change_map.get(self.parent_alias, self.parent_alias),
        )

    def promote(self) -> LateralJoin:
        return self

    def demote(self) -> LateralJoin:
        return self


class LateralColumn(Expression):
    """A column of a `LateralJoin`, relabelled with it."""

    def __init__(self, alias: str, column: str, output_field):
        super().__init__(output_field=output_field)
        self.alias, self.column = alias, column

    def as_sql(self, compiler, connection):
        return f"{compiler.quote_name_unless_alias(self.alias)}.{connection.ops.quote_name(self.column)}", []

    def relabeled_clone(self, change_map: dict[str, str]) -> LateralColumn:
        return LateralColumn(change_map.get(self.alias, self.alias), self.column, self.output_field)

    def get_group_by_cols(self):
        return [self]


def _rows_are_customers(customers: QuerySet) -> bool:
    """True when every join of the query is to-one, so each row is one customer."""
    for join in customers.query.alias_map.values():
        field = getattr(join, "join_field", None)
        if field is not None and (
            getattr(field, "one_to_many", False) or getattr(field, "many_to_many", False)
        ):
            return False
    return True


SEGMENT_SETTINGS_SQL = "SET LOCAL jit = off; SET LOCAL work_mem = '64MB'"


@contextmanager
def segment_query_settings() -> Iterator[None]:
    """Run a segment query (count, preview, snapshot) in a transaction with PostgreSQL's JIT off.

    The deferred per-customer sub-selects make the planner's cost estimates large (it counts every
    sub-select once per customer it might reach), which pushes them over jit_inline_above_cost and
    jit_optimize_above_cost: compiling the expressions with LLVM then took longer than the query itself
    runs (see BENCHMARKS.md, segment counts). These queries are index probes and joins, not long
    expression evaluation, so JIT buys nothing. work_mem is raised (from PostgreSQL's default of 4 MB) so
    that grouping the customers of a joined aggregate (`JoinedAggregate`) stays in memory: at 1M customers
    it spilled to disk.
    SET LOCAL lasts until the end of the outermost transaction."""
    if connection.vendor != "postgresql":
        yield
        return
    # Inside a transaction already, no savepoint is needed: SET LOCAL outlives it anyway.
    with nullcontext() if connection.in_atomic_block else transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(SEGMENT_SETTINGS_SQL)
        yield
