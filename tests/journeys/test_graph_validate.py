"""Graph validation: every rejection names the node (or edge) and the field at fault."""

from __future__ import annotations

import pytest

from crm.models import Segment, Tag
from journeys.nodes import graph_validate, node_types
from tests.campaigns.helpers import template_make
from tests.journeys.graphs import chain, edge, entry, graph, node


def codes(problems):
    return {(p.node_id, p.code) for p in problems}


def test_a_complete_graph_has_no_problems(db):
    template_make(code="welcome")
    Tag.objects.create(name="vip")
    g = graph(
        [
            entry(),
            node("w", "wait", mode="duration", duration={"value": 2, "unit": "hours"}),
            node(
                "c",
                "condition",
                rule={
                    "op": "and",
                    "conditions": [{"field": "profile.city", "operator": "eq", "value": "上海"}],
                },
            ),
            node("s", "send_message", channel="best", template="welcome"),
            node("t", "add_tag", tag="vip"),
            node("x", "exit"),
        ],
        [
            edge("entry", "w"),
            edge("w", "c"),
            edge("c", "s", "yes"),
            edge("c", "x", "no"),
            edge("s", "t"),
            edge("t", "x"),
        ],
    )
    assert graph_validate(g, settings={"re_entry": {"mode": "never"}, "holdout_percent": 10}) == []


def test_unknown_node_type_names_the_node():
    problems = graph_validate(chain(entry(), node("n2", "teleport"), node("x", "exit")), check_refs=False)
    assert ("n2", "unknown_type") in codes(problems)


def test_bad_config_names_the_node_and_the_field():
    g = chain(
        entry(),
        node("w", "wait", mode="duration", duration={"value": -1, "unit": "hours"}),
        node("x", "exit"),
    )
    [problem] = graph_validate(g, check_refs=False)
    assert (problem.node_id, problem.field, problem.code) == ("w", "config.duration.value", "positive")
    assert "w.config.duration.value" in str(problem)


def test_dangling_edge_names_the_source_node():
    g = chain(entry(), node("x", "exit"))
    g["edges"].append(edge("entry", "ghost", edge_id="e9"))
    problems = graph_validate(g, check_refs=False)
    assert any(p.node_id == "entry" and p.edge_id == "e9" and p.code == "dangling" for p in problems)


def test_an_exit_with_no_edge_or_two_edges_is_rejected():
    g = graph(
        [
            entry(),
            node("c", "condition", rule={"op": "and", "conditions": []}),
            node("x", "exit"),
            node("y", "exit"),
        ],
        [edge("entry", "c"), edge("c", "x", "yes"), edge("c", "y", "yes", edge_id="e-dup")],
    )
    problems = graph_validate(g, check_refs=False)
    assert ("c", "unconnected") in codes(problems)  # "no" leads nowhere
    assert any(p.node_id == "c" and p.code == "two_edges" and p.edge_id == "e-dup" for p in problems)


def test_an_edge_from_a_handle_the_type_does_not_have():
    g = chain(entry(), node("x", "exit"))
    g["edges"].append(edge("entry", "x", "yes", edge_id="e-yes"))
    problems = graph_validate(g, check_refs=False)
    assert any(p.node_id == "entry" and p.code == "bad_handle" and p.edge_id == "e-yes" for p in problems)


def test_a_split_without_all_its_exits_connected():
    g = graph(
        [
            entry(),
            node("r", "random_split", branches=[{"id": "a", "percent": 50}, {"id": "b", "percent": 50}]),
            node("x", "exit"),
        ],
        [edge("entry", "r"), edge("r", "x", "a")],
    )
    problems = graph_validate(g, check_refs=False)
    assert [(p.node_id, p.field, p.code) for p in problems] == [("r", "exits.b", "unconnected")]


def test_split_percentages_must_add_up_to_100():
    g = graph(
        [
            entry(),
            node("r", "random_split", branches=[{"id": "a", "percent": 50}, {"id": "b", "percent": 40}]),
            node("x", "exit"),
        ],
        [edge("entry", "r"), edge("r", "x", "a"), edge("r", "x", "b")],
    )
    assert ("r", "sum") in codes(graph_validate(g, check_refs=False))


def test_a_cycle_without_a_wait_is_rejected_and_one_through_a_wait_is_not():
    spin = graph(
        [
            entry(),
            node("a", "add_tag", tag="t"),
            node("c", "condition", rule={"op": "and", "conditions": []}),
            node("x", "exit"),
        ],
        [edge("entry", "a"), edge("a", "c"), edge("c", "a", "yes"), edge("c", "x", "no")],
    )
    problems = graph_validate(spin, check_refs=False)
    [cycle] = [p for p in problems if p.code == "cycle"]
    assert cycle.node_id == "a" and "a, c" in str(cycle.message)

    paced = graph(
        [
            entry(),
            node("w", "wait", mode="duration", duration={"value": 1, "unit": "days"}),
            node("c", "condition", rule={"op": "and", "conditions": []}),
            node("x", "exit"),
        ],
        [edge("entry", "w"), edge("w", "c"), edge("c", "w", "yes"), edge("c", "x", "no")],
    )
    assert graph_validate(paced, check_refs=False) == []


def test_an_unreachable_node_is_named():
    g = chain(entry(), node("x", "exit"))
    g["nodes"].append(node("lonely", "exit"))
    assert [(p.node_id, p.code) for p in graph_validate(g, check_refs=False)] == [("lonely", "unreachable")]


def test_exactly_one_entry():
    assert ("entry2", "two_entries") in codes(
        graph_validate(
            graph([entry(), entry("entry2"), node("x", "exit")], [edge("entry", "x"), edge("entry2", "x")]),
            check_refs=False,
        )
    )
    assert (None, "no_entry") in codes(graph_validate(graph([node("x", "exit")], []), check_refs=False))


@pytest.mark.django_db
def test_missing_template_programme_tag_and_segment_are_named():
    g = chain(
        entry(kind="segment", segment=987654, every={"value": 1, "unit": "days"}),
        node("s", "send_message", template="nope"),
        node("p", "issue_coupon", programme=123456),
        node("t", "remove_tag", tag="gone"),
        node("x", "exit"),
    )
    problems = graph_validate(g)
    assert {(p.node_id, p.field, p.code) for p in problems} == {
        ("entry", "config.trigger.segment", "missing_segment"),
        ("s", "config.template", "missing_template"),
        ("p", "config.programme", "missing_programme"),
        ("t", "config.tag", "missing_tag"),
    }


@pytest.mark.django_db
def test_an_existing_segment_is_accepted():
    segment = Segment.objects.create(name="s", rule={"op": "and", "conditions": []})
    g = chain(
        entry(kind="segment", segment=segment.pk, every={"value": 1, "unit": "days"}), node("x", "exit")
    )
    assert graph_validate(g) == []


def test_a_condition_with_a_bad_rule_names_the_node():
    g = graph(
        [
            entry(),
            node(
                "c", "condition", rule={"op": "and", "conditions": [{"field": "no.such", "operator": "eq"}]}
            ),
            node("x", "exit"),
        ],
        [edge("entry", "c"), edge("c", "x", "yes"), edge("c", "x", "no")],
    )
    assert ("c", "rule") in codes(graph_validate(g, check_refs=False))


@pytest.mark.parametrize(
    "trigger, field",
    [
        ({"kind": "bogus"}, "config.trigger.kind"),
        ({"kind": "event", "event_type": "Add To Cart"}, "config.trigger.event_type"),
        (
            {"kind": "event_not_followed", "event_type": "add_to_cart", "not_followed_by": "order_placed"},
            "config.trigger.within",
        ),
        (
            {"kind": "date_attribute", "attribute": "birthday", "local_time": "25:00"},
            "config.trigger.local_time",
        ),
        ({"kind": "at", "at": "2027-01-01T09:00"}, "config.trigger.at"),
        ({"kind": "days_after", "attribute": "birthday", "days": 7}, "config.trigger.attribute"),
        (
            {"kind": "days_after", "event_type": "signup", "which": "last", "days": 7},
            "config.trigger.which",
        ),
        (
            {"kind": "days_after", "attribute": "first_order_at", "days": 180, "local_time": "9am"},
            "config.trigger.local_time",
        ),
        (
            {
                "kind": "event",
                "event_type": "add_to_cart",
                "filters": [{"property": "channel", "op": "like", "value": 1}],
            },
            "config.trigger.filters.0.op",
        ),
    ],
)
def test_bad_entry_triggers_name_the_field(trigger, field):
    g = chain(node("entry", "entry", trigger=trigger), node("x", "exit"))
    assert [(p.node_id, p.field) for p in graph_validate(g, check_refs=False)] == [("entry", field)]


@pytest.mark.parametrize(
    "settings, field",
    [
        ({"re_entry": {"mode": "sometimes"}}, "settings.re_entry.mode"),
        ({"re_entry": {"mode": "after_days"}}, "settings.re_entry.days"),
        ({"holdout_percent": 90}, "settings.holdout_percent"),
        ({"goal": {"event_type": ""}}, "settings.goal.event_type"),
        ({"ends_at": "tomorrow"}, "settings.ends_at"),
    ],
)
def test_bad_settings_name_the_field(settings, field):
    problems = graph_validate(chain(entry(), node("x", "exit")), settings=settings, check_refs=False)
    assert [(p.node_id, p.field) for p in problems] == [(None, field)]


@pytest.mark.parametrize(
    "document", [None, [], {"schema": 1, "nodes": "x", "edges": []}, {"schema": 2, "nodes": [], "edges": []}]
)
def test_an_unreadable_document_is_refused_without_a_crash(document):
    assert graph_validate(document, check_refs=False)


def test_every_node_type_rejects_an_empty_config_or_accepts_it_on_purpose():
    accepted = {
        nt.key
        for nt in node_types()
        if not graph_validate(
            chain(entry(), node("n", nt.key), node("x", "exit"))
            if nt.key not in ("entry", "exit")
            else chain(entry(), node("x", "exit")),
            check_refs=False,
        )
    }
    # Only the exit (and the entry, in the chain itself) need no config.
    assert accepted == {"entry", "exit"}
