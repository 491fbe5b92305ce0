"""Validating a rule tree, with errors that name where they are the way the builder numbers things."""

from __future__ import annotations

from typing import Any

from django.utils.translation import gettext as _

from crm.segments.fields.base import (
    MAX_CONDITIONS,
    MAX_DEPTH,
    Condition,
    ConditionError,
    Group,
    RuleInvalid,
    RuleProblem,
    _show,
)
from crm.segments.fields.registry import get_condition_type


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
