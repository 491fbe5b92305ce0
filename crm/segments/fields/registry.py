"""The registry of condition types: the built-in families, and those other apps add with `register()`
from their AppConfig.ready(), so crm never imports them."""

from __future__ import annotations

from typing import Any

from django.utils.translation import gettext as _

from crm.segments.fields.base import GROUPS, ConditionError, ConditionType, _show
from crm.segments.fields.consent import ConsentCondition
from crm.segments.fields.events import EventCondition
from crm.segments.fields.lists import StaticListCondition, TagCondition
from crm.segments.fields.metrics import _metric_conditions
from crm.segments.fields.orders import _order_conditions
from crm.segments.fields.profile import IdentityCondition, _profile_conditions

_REGISTRY: dict[str, ConditionType] = {}
_BUILT = False


def register(condition_type: ConditionType) -> ConditionType:
    """Add (or replace) a condition type. Other apps call this from their AppConfig.ready()."""
    _REGISTRY[condition_type.key] = condition_type
    return condition_type


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
