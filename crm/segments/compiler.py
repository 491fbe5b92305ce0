"""Rule JSON -> one queryset of customers.

The tree of groups becomes one `Q` on `crm_customer`; each condition type compiles itself (see
the condition families in `fields/` and `sql.py` for the SQL shapes). The result is a single SELECT with EXISTS / IN sub-selects:
nothing is evaluated per customer in Python, and callers can count it, page it, stream it or feed it to
`INSERT ... SELECT`. Per-customer aggregates and OR groups of sub-selects below an AND are deferred
(`sql.deferred_q`): PostgreSQL then runs them only for the customers the cheaper conditions leave. One
order aggregate of the top-level AND is joined instead (`sql.JoinedAggregate`: laterally on PostgreSQL,
joined and grouped on SQLite), which PostgreSQL plans with less overhead than a deferred sub-select.

Erased customers are excluded here, once, so no caller can forget it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db.models import Q, QuerySet
from django.utils import timezone

from crm.models import Customer
from crm.segments import sql
from crm.segments.fields import CompileContext, Condition, Group, validate_rule


def compile_tree(tree: Group, *, now: datetime, joined: list | None = None) -> Q:
    """The rule as one Q. With `joined` (a list), one order aggregate directly below the top-level AND
    may be left out of the Q and put there instead, as a sql.JoinedAggregate the caller must apply."""
    return _compile(tree, CompileContext(now=now), joined=joined)


def _compile(
    node: Group | Condition, ctx: CompileContext, *, root: bool = True, joined: list | None = None
) -> Q:
    if isinstance(node, Condition):
        return node.type.to_q(node, CompileContext(now=ctx.now, in_or=ctx.in_or, joined=joined))
    # Below an OR, PostgreSQL cannot turn sub-selects into joins; aggregate conditions are not deferred
    # there (see sql.aggregate_q): the OR group as a whole is.
    starts_or = not ctx.in_or and node.op == "or" and len(node.children) > 1
    child_ctx = CompileContext(now=ctx.now, in_or=ctx.in_or or starts_or)
    # Only the top-level AND's own conditions may be joined (see sql.JoinedAggregate): there a customer
    # must pass every one of them, so filtering on the grouped rows is the same as filtering the customer.
    child_joined = joined if root and (node.op == "and" or len(node.children) == 1) else None
    # Empty groups (a group the builder has just added) constrain nothing and are left out.
    parts = [
        q
        for q in (_compile(child, child_ctx, root=False, joined=child_joined) for child in node.children)
        if q
    ]
    if not parts:
        return Q()
    combined = parts[0]
    for q in parts[1:]:
        combined = (combined | q) if node.op == "or" else (combined & q)
    if starts_or and not root and not _only_customer_rows(node):
        # An OR of sub-selects is one filter expression that PostgreSQL evaluates where the customer
        # table is scanned, before the AND's other conditions have narrowed anything; deferred, it runs
        # for the customers they leave (see sql.deferred_q). At the root there is nothing to wait for.
        return sql.deferred_q(combined)
    return combined


def _only_customer_rows(node: Group | Condition) -> bool:
    if isinstance(node, Condition):
        return node.type.on_customer_row
    return all(_only_customer_rows(child) for child in node.children)


def compile_rule(rule: Any, *, now: datetime | None = None) -> Q:
    """Validate `rule` and compile it; raises fields.RuleInvalid naming every condition at fault."""
    return compile_tree(validate_rule(rule), now=now or timezone.now())


def rule_queryset(rule: Any, *, now: datetime | None = None) -> QuerySet[Customer]:
    """The customers (never erased ones) matching `rule`, as one lazy queryset."""
    joined: list[sql.JoinedAggregate] = []
    q = compile_tree(validate_rule(rule), now=now or timezone.now(), joined=joined)
    customers = Customer.objects.filter(erased_at__isnull=True).filter(q)
    for aggregate in joined:
        customers = aggregate.apply(customers)
    return customers
