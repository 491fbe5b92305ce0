"""What the designer's structured editors are given (journeys/designer.py): the condition split edits its
rule with crm's segment vocabulary, and every property-filter field names the event type whose properties
it offers."""

from __future__ import annotations

import pytest
from django.utils import translation

from crm.segments.fields import builder_schema
from journeys import designer
from journeys.nodes import FILTER_OPS

pytestmark = pytest.mark.django_db


def fields_of(catalogue, node_type):
    return {f["name"]: f for f in next(t for t in catalogue["types"] if t["type"] == node_type)["fields"]}


def test_the_condition_split_edits_its_rule_with_the_segment_builders_vocabulary():
    catalogue = designer.designer_catalogue()
    assert fields_of(catalogue, "condition")["rule"]["kind"] == "rule"
    assert catalogue["rule_builder"]["schema"] == builder_schema()
    keys = {f["key"] for f in catalogue["rule_builder"]["schema"]["fields"]}
    assert {"orders.count", "profile.city", "events.performed", "metrics.lifecycle_stage"} <= keys
    assert catalogue["rule_builder"]["labels"]["add_condition"] == "Add condition"


def test_every_filter_field_is_an_editor_tied_to_its_event_type():
    catalogue = designer.designer_catalogue()
    filters = [
        (fields_of(catalogue, "entry")["trigger.filters"], "trigger.event_type"),
        (fields_of(catalogue, "wait_for_event")["filters"], "event_type"),
        (next(f for f in catalogue["settings_fields"] if f["name"] == "goal.filters"), "goal.event_type"),
    ]
    for field, event_type_path in filters:
        assert (field["kind"], field["event_type_from"]) == ("filters", event_type_path)
    assert not any(f.get("kind") == "json" for t in catalogue["types"] for f in t["fields"]), (
        "no JSON text box is left in the side panel"
    )
    # Each operator says what its value is, in the shapes the engine's filters_match reads.
    takes = {o["value"]: o["takes"] for o in catalogue["filter_operators"]}
    assert list(takes) == list(FILTER_OPS)
    assert (takes["in"], takes["gte"], takes["exists"], takes["eq"]) == ("list", "number", "none", "text")
    assert (
        "product_id" in catalogue["event_properties"]["add_to_cart"]
        or catalogue["event_properties"]["add_to_cart"]
    )


def test_the_editors_words_are_chinese_when_the_admin_is():
    with translation.override("zh-hans"):
        catalogue = designer.designer_catalogue()
        labels = designer.designer_labels()
    operators = {o["value"]: o["label"] for o in catalogue["filter_operators"]}
    # The project catalogue (locale/) says "is one of" first, as the segment builder words it.
    assert operators["in"] == "属于" and operators["exists"] == "存在"
    assert labels["filter_add"] == "添加属性筛选"
    assert catalogue["rule_builder"]["labels"]["add_condition"] == "添加条件"
