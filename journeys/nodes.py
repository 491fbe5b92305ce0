"""The node types a journey graph may use, and the validation of a whole graph.

A graph is a versioned JSON document written by the designer and never trusted:

    {"schema": 1,
     "nodes": [{"id": "n1", "type": "entry", "config": {...}, "position": {"x": 0, "y": 0}}, ...],
     "edges": [{"id": "e1", "source": "n1", "source_handle": "next", "target": "n2"}]}

Each node type (`NodeType`, registered with `register()` like the segment conditions) knows its config's
shape (`clean`, which names the field at fault), its exits (source handles; a random split's are its
branch ids) and whether it waits (a wait, or a wait-for-event) or is instant. The engine
(journeys/services/engine.py) runs the types; this module only describes and checks them.

`graph_validate` returns every problem it finds, each naming the node, edge and field, so the canvas can
mark the offending node; the services refuse to save or publish a graph that has any.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.utils.functional import Promise
from django.utils.translation import gettext_lazy as _

from crm.event_types import TYPE_CODE_RE
from crm.segments.fields import RuleInvalid, validate_rule

GRAPH_SCHEMA = 1
MAX_NODES = 200
NODE_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
TIME_UNITS = ("minutes", "hours", "days")
FILTER_OPS = ("eq", "neq", "in", "not_in", "contains", "gt", "gte", "lt", "lte", "exists")
LOCAL_TIME_RE = re.compile(r"([01]\d|2[0-3]):[0-5]\d")
# How long a duration may be, in each unit: about two years (a wait longer than that is a mistake).
MAX_DURATION = {"minutes": 1_051_200, "hours": 17_520, "days": 730}


@dataclass(frozen=True)
class GraphProblem:
    node_id: str | None
    edge_id: str | None
    field: str | None
    code: str
    message: str | Promise

    def as_dict(self) -> dict:
        return {
            "node_id": self.node_id,
            "edge_id": self.edge_id,
            "field": self.field,
            "code": self.code,
            "message": str(self.message),
        }

    def __str__(self) -> str:
        where = self.node_id or self.edge_id or ""
        if self.field:
            where = f"{where}.{self.field}" if where else self.field
        return f"{where}: {self.message}" if where else str(self.message)


class GraphInvalid(ValueError):
    """A graph (or its settings) that may not be saved or published; `problems` name each place at fault."""

    def __init__(self, problems: list[GraphProblem]):
        self.problems = problems
        super().__init__("; ".join(str(p) for p in problems))


@dataclass(frozen=True)
class Ref:
    """Something a node's config names that must exist: a template, a coupon programme, a tag, a segment."""

    kind: str  # "template" | "programme" | "tag" | "segment"
    value: Any
    field: str


@dataclass
class Checked:
    """What a config check found: problems (field, code, message) and references to look up."""

    problems: list[tuple[str, str, str | Promise]] = field(default_factory=list)
    refs: list[Ref] = field(default_factory=list)

    def add(self, field_name: str, code: str, message: str | Promise) -> None:
        self.problems.append((field_name, code, message))


@dataclass(frozen=True)
class NodeType:
    key: str
    label: str | Promise
    waits: bool  # a wait or a wait-for-event: the only nodes a cycle may go through
    clean: Callable[[dict, Checked], None]
    exits: Callable[[dict], list[str]]
    icon: str = "circle"

    def exits_for(self, config: Any) -> list[str]:
        try:
            return self.exits(config if isinstance(config, dict) else {})
        except (TypeError, KeyError, AttributeError):
            return []


_REGISTRY: dict[str, NodeType] = {}


def register(node_type: NodeType) -> NodeType:
    _REGISTRY[node_type.key] = node_type
    return node_type


def node_type_get(key: str) -> NodeType | None:
    return _REGISTRY.get(key)


def node_types() -> list[NodeType]:
    return list(_REGISTRY.values())


# --- Config pieces -------------------------------------------------------------------------------------


def _next(_config: dict) -> list[str]:
    return ["next"]


def _none(_config: dict) -> list[str]:
    return []


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_duration(value: Any, name: str, out: Checked) -> None:
    if not isinstance(value, dict):
        out.add(name, "required", _('a duration is required: {"value": 2, "unit": "hours"}'))
        return
    unit, amount = value.get("unit"), value.get("value")
    if unit not in TIME_UNITS:
        out.add(f"{name}.unit", "choice", _("the unit must be minutes, hours or days"))
        return
    if not _is_int(amount) or amount <= 0:
        out.add(f"{name}.value", "positive", _("the duration must be a whole number above 0"))
    elif amount > MAX_DURATION[unit]:
        out.add(f"{name}.value", "too_long", _("a duration may be at most two years"))


def _check_local_time(value: Any, name: str, out: Checked, *, required: bool = True) -> None:
    if value is None and not required:
        return
    if not isinstance(value, str) or not LOCAL_TIME_RE.fullmatch(value):
        out.add(name, "time", _("a local time of day is required, as HH:MM (09:00)"))


def _check_event_type(value: Any, name: str, out: Checked) -> None:
    if not isinstance(value, str) or not TYPE_CODE_RE.fullmatch(value):
        out.add(name, "event_type", _("an event type is required (lower-case letters, digits, _ and -)"))


def _check_filters(value: Any, name: str, out: Checked) -> None:
    if value is None:
        return
    if not isinstance(value, list):
        out.add(name, "list", _("filters must be a list"))
        return
    for i, item in enumerate(value):
        where = f"{name}.{i}"
        if not isinstance(item, dict) or not isinstance(item.get("property"), str) or not item["property"]:
            out.add(where, "property", _("each filter names a property"))
            continue
        op = item.get("op", "eq")
        if op not in FILTER_OPS:
            out.add(f"{where}.op", "choice", _("unknown filter operator %(op)s") % {"op": op})
        elif op in ("in", "not_in") and not isinstance(item.get("value"), list):
            out.add(f"{where}.value", "list", _("this operator takes a list of values"))
        elif op in ("gt", "gte", "lt", "lte") and (
            isinstance(item.get("value"), bool) or not isinstance(item.get("value"), int | float)
        ):
            out.add(f"{where}.value", "number", _("this operator takes a number"))
        elif op not in ("exists",) and "value" not in item:
            out.add(f"{where}.value", "required", _("this filter needs a value"))


def _check_text(config: dict, key: str, out: Checked, *, max_length: int = 200) -> str | None:
    value = config.get(key)
    if not isinstance(value, str) or not value.strip():
        out.add(key, "required", _("this field is required"))
        return None
    if len(value) > max_length:
        out.add(key, "too_long", _("at most %(n)s characters") % {"n": max_length})
        return None
    return value.strip()


# --- Entry triggers ------------------------------------------------------------------------------------

TRIGGER_KINDS = (
    "event",
    "event_not_followed",
    "stage_changed",
    "tier_changed",
    "points_expiring",
    "date_attribute",
    "days_after",
    "calendar",
    "segment",
    "at",
    "manual",
)
# The triggers that read the event log, and so enter one customer per event (occurrence: the event id).
EVENT_TRIGGERS = ("event", "event_not_followed", "stage_changed", "tier_changed", "points_expiring")
# The triggers journeys/services/time_triggers.py computes ("event_not_followed" too: it is due when
# the time to follow has passed, which no event says).
TIME_TRIGGERS = ("date_attribute", "days_after", "calendar", "segment", "at", "event_not_followed")
# days_after counts from one of these dates, or from an event (its first, or each of them).
DAYS_AFTER_ATTRIBUTES = ("signed_up_at", "first_order_at", "last_order_at")
DAYS_AFTER_WHICH = ("first", "each")
DAYS_AFTER_DEFAULT_TIME = "09:00"


def _clean_entry(config: dict, out: Checked) -> None:
    trigger = config.get("trigger")
    if not isinstance(trigger, dict) or trigger.get("kind") not in TRIGGER_KINDS:
        out.add("trigger.kind", "choice", _("choose what makes customers enter the journey"))
        return
    kind = trigger["kind"]
    if kind in ("event", "event_not_followed"):
        _check_event_type(trigger.get("event_type"), "trigger.event_type", out)
        _check_filters(trigger.get("filters"), "trigger.filters", out)
    if kind == "event_not_followed":
        _check_event_type(trigger.get("not_followed_by"), "trigger.not_followed_by", out)
        _check_duration(trigger.get("within"), "trigger.within", out)
    elif kind == "stage_changed":
        if not isinstance(trigger.get("to"), str) or not trigger["to"]:
            out.add("trigger.to", "required", _("choose the lifecycle stage customers move into"))
    elif kind == "date_attribute":
        if trigger.get("attribute") not in ("birthday", "signed_up_at"):
            out.add("trigger.attribute", "choice", _("the date must be the birthday or the sign-up date"))
        _check_local_time(trigger.get("local_time"), "trigger.local_time", out)
    elif kind == "days_after":
        if not trigger.get("event_type") and not trigger.get("attribute"):
            out.add("trigger.event_type", "required", _("name an event type or a date attribute"))
        elif trigger.get("event_type"):
            _check_event_type(trigger.get("event_type"), "trigger.event_type", out)
            if trigger.get("which", "first") not in DAYS_AFTER_WHICH:
                out.add("trigger.which", "choice", _("count from the first such event or from each one"))
        elif trigger.get("attribute") not in DAYS_AFTER_ATTRIBUTES:
            out.add(
                "trigger.attribute",
                "choice",
                _("the date must be the sign-up, the first order or the last order"),
            )
        days = trigger.get("days")
        if not _is_int(days) or not 0 < days <= 3650:
            out.add("trigger.days", "positive", _("the number of days must be between 1 and 3650"))
        # Optional for graphs saved before it existed: they enter at DAYS_AFTER_DEFAULT_TIME.
        _check_local_time(trigger.get("local_time"), "trigger.local_time", out, required=False)
    elif kind == "calendar":
        if not isinstance(trigger.get("code"), str) or not trigger["code"]:
            out.add("trigger.code", "required", _("choose a date from the calendar"))
        offset = trigger.get("offset_days", 0)
        if not _is_int(offset) or abs(offset) > 365:
            out.add(
                "trigger.offset_days", "range", _("the offset must be a whole number of days, at most 365")
            )
        _check_local_time(trigger.get("local_time"), "trigger.local_time", out)
    elif kind == "segment":
        segment = trigger.get("segment")
        if not _is_int(segment):
            out.add("trigger.segment", "required", _("choose a segment"))
        else:
            out.refs.append(Ref("segment", segment, "trigger.segment"))
        _check_duration(trigger.get("every"), "trigger.every", out)
    elif kind == "at":
        at = trigger.get("at")
        try:
            parsed = datetime.fromisoformat(at) if isinstance(at, str) else None
        except ValueError:
            parsed = None
        if parsed is None or parsed.tzinfo is None:
            out.add("trigger.at", "datetime", _("a date and time with its time zone is required"))


# --- The node types ------------------------------------------------------------------------------------


def _clean_wait(config: dict, out: Checked) -> None:
    mode = config.get("mode")
    if mode == "duration":
        _check_duration(config.get("duration"), "duration", out)
    elif mode == "until":
        _check_local_time(config.get("local_time"), "local_time", out)
        weekdays = config.get("weekdays")
        if weekdays is not None and (
            not isinstance(weekdays, list)
            or not weekdays
            or any(not _is_int(d) or not 0 <= d <= 6 for d in weekdays)
        ):
            out.add("weekdays", "weekdays", _("weekdays are numbers from 0 (Monday) to 6 (Sunday)"))
    else:
        out.add("mode", "choice", _("wait for a duration or until a local time of day"))


def _clean_wait_for_event(config: dict, out: Checked) -> None:
    _check_event_type(config.get("event_type"), "event_type", out)
    _check_filters(config.get("filters"), "filters", out)
    _check_duration(config.get("timeout"), "timeout", out)


def _clean_condition(config: dict, out: Checked) -> None:
    rule = config.get("rule")
    try:
        validate_rule(rule)
    except RuleInvalid as exc:
        for problem in exc.problems:
            out.add("rule", "rule", str(problem))


def _split_branches(config: dict) -> list[str]:
    return [
        b["id"] for b in config.get("branches", []) if isinstance(b, dict) and isinstance(b.get("id"), str)
    ]


def _clean_random_split(config: dict, out: Checked) -> None:
    branches = config.get("branches")
    if not isinstance(branches, list) or len(branches) < 2:
        out.add("branches", "branches", _("a random split needs at least two branches"))
        return
    seen: set[str] = set()
    total = 0
    for i, branch in enumerate(branches):
        if (
            not isinstance(branch, dict)
            or not isinstance(branch.get("id"), str)
            or not NODE_ID_RE.fullmatch(branch["id"])
        ):
            out.add(f"branches.{i}.id", "id", _("each branch needs an id (letters, digits, _ and -)"))
            continue
        if branch["id"] in seen:
            out.add(
                f"branches.{i}.id", "duplicate", _("two branches have the id %(id)s") % {"id": branch["id"]}
            )
        seen.add(branch["id"])
        percent = branch.get("percent")
        if not _is_int(percent) or not 0 < percent <= 100:
            out.add(
                f"branches.{i}.percent", "percent", _("a branch's share is a whole percentage from 1 to 100")
            )
        else:
            total += percent
    if total != 100 and not any(p[0].endswith(".percent") for p in out.problems):
        out.add(
            "branches", "sum", _("the branches' shares add up to %(total)s%%, not 100%%") % {"total": total}
        )


CHANNEL_CHOICES = ("email", "sms", "wechat", "push", "best")


def _clean_send_message(config: dict, out: Checked) -> None:
    if config.get("channel", "best") not in CHANNEL_CHOICES:
        out.add("channel", "choice", _("choose a channel, or the customer's best channel"))
    template = _check_text(config, "template", out, max_length=64)
    if template:
        out.refs.append(Ref("template", template, "template"))
    if config.get("on_cap", "defer") not in ("defer", "drop"):
        out.add("on_cap", "choice", _("when capped, a message is deferred or dropped"))


def _clean_award_points(config: dict, out: Checked) -> None:
    points = config.get("points")
    if not _is_int(points) or not 0 < points <= 1_000_000:
        out.add("points", "positive", _("points must be a whole number from 1 to 1,000,000"))
    _check_text(config, "reason", out, max_length=200)


def _clean_issue_coupon(config: dict, out: Checked) -> None:
    programme = config.get("programme")
    if not _is_int(programme):
        out.add("programme", "required", _("choose a coupon programme"))
    else:
        out.refs.append(Ref("programme", programme, "programme"))


def _clean_tag(config: dict, out: Checked) -> None:
    tag = _check_text(config, "tag", out, max_length=64)
    if tag:
        out.refs.append(Ref("tag", tag, "tag"))


# The customer attributes a journey may set: plain profile columns, never identifiers, consent or
# anything another service owns (the email address is the customer's, the stage is computed).
UPDATABLE_ATTRIBUTES = {"preferred_channel": "choice", "city": "text", "region": "text"}


def _clean_update_attribute(config: dict, out: Checked) -> None:
    attribute = config.get("attribute")
    if attribute not in UPDATABLE_ATTRIBUTES:
        out.add("attribute", "choice", _("choose an attribute a journey may change"))
        return
    value = config.get("value")
    if not isinstance(value, str) or len(value) > 100:
        out.add("value", "text", _("the value must be text of at most 100 characters"))
    elif attribute == "preferred_channel" and value not in ("", "email", "sms", "wechat", "push"):
        out.add("value", "choice", _("the preferred channel must be email, SMS, WeChat or push"))


def _plain_http_allowed(url: str) -> bool:
    # Plain http only to hosts settings name (a receiver on the same machine in tests and demos).
    from urllib.parse import urlsplit

    from django.conf import settings

    allowed = getattr(settings, "JOURNEYS_WEBHOOK_HTTP_HOSTS", ())
    return url.startswith("http://") and (urlsplit(url).hostname or "") in allowed


def _clean_webhook(config: dict, out: Checked) -> None:
    url = config.get("url")
    if (
        not isinstance(url, str)
        or len(url) > 500
        or not (re.fullmatch(r"https://[^\s/?#]+[^\s]*", url) or _plain_http_allowed(url))
    ):
        out.add("url", "https", _("the webhook address must be an https:// URL"))


def _clean_nothing(config: dict, out: Checked) -> None:
    pass


for _node_type in (
    NodeType("entry", _("Entry"), False, _clean_entry, _next, "login"),
    NodeType("wait", _("Wait"), True, _clean_wait, _next, "hourglass"),
    NodeType(
        "wait_for_event",
        _("Wait for an event"),
        True,
        _clean_wait_for_event,
        lambda config: ["event", "timeout"],
        "pending_actions",
    ),
    NodeType(
        "condition", _("Condition"), False, _clean_condition, lambda config: ["yes", "no"], "call_split"
    ),
    NodeType("random_split", _("Random split"), False, _clean_random_split, _split_branches, "shuffle"),
    NodeType("send_message", _("Send a message"), False, _clean_send_message, _next, "send"),
    NodeType("award_points", _("Award points"), False, _clean_award_points, _next, "stars"),
    NodeType("issue_coupon", _("Issue a coupon"), False, _clean_issue_coupon, _next, "confirmation_number"),
    NodeType("add_tag", _("Add a tag"), False, _clean_tag, _next, "sell"),
    NodeType("remove_tag", _("Remove a tag"), False, _clean_tag, _next, "label_off"),
    NodeType("update_attribute", _("Update an attribute"), False, _clean_update_attribute, _next, "edit"),
    NodeType("webhook", _("Webhook"), False, _clean_webhook, _next, "webhook"),
    NodeType("exit", _("Exit"), False, _clean_nothing, _none, "logout"),
):
    register(_node_type)


# --- Journey settings ----------------------------------------------------------------------------------

RE_ENTRY_MODES = ("never", "after_days", "always")
DEFAULT_SETTINGS = {
    "re_entry": {"mode": "never"},
    "goal": None,
    "holdout_percent": 0,
    "priority": 0,
    "ends_at": None,
}


def settings_problems(journey_settings: Any) -> list[GraphProblem]:
    def problem(field_name: str, code: str, message) -> GraphProblem:
        return GraphProblem(None, None, f"settings.{field_name}", code, message)

    if journey_settings is None:
        return []
    if not isinstance(journey_settings, dict):
        return [problem("", "object", _("the settings must be an object"))]
    problems: list[GraphProblem] = []
    re_entry = journey_settings.get("re_entry", {"mode": "never"})
    if not isinstance(re_entry, dict) or re_entry.get("mode") not in RE_ENTRY_MODES:
        problems.append(
            problem("re_entry.mode", "choice", _("re-entry is never, after some days, or always"))
        )
    elif re_entry["mode"] == "after_days":
        days = re_entry.get("days")
        if not _is_int(days) or not 0 < days <= 3650:
            problems.append(
                problem("re_entry.days", "positive", _("the number of days must be between 1 and 3650"))
            )
    goal = journey_settings.get("goal")
    if goal is not None:
        out = Checked()
        if not isinstance(goal, dict):
            out.add("goal", "object", _("the goal names an event type"))
        else:
            _check_event_type(goal.get("event_type"), "goal.event_type", out)
            _check_filters(goal.get("filters"), "goal.filters", out)
        problems += [problem(f, c, m) for f, c, m in out.problems]
    holdout = journey_settings.get("holdout_percent", 0)
    if not _is_int(holdout) or not 0 <= holdout <= 50:
        problems.append(
            problem("holdout_percent", "range", _("the holdout is a whole percentage from 0 to 50"))
        )
    priority = journey_settings.get("priority", 0)
    if not _is_int(priority) or not -100 <= priority <= 100:
        problems.append(problem("priority", "range", _("the priority is a whole number from -100 to 100")))
    ends_at = journey_settings.get("ends_at")
    if ends_at is not None:
        try:
            parsed = datetime.fromisoformat(ends_at) if isinstance(ends_at, str) else None
        except ValueError:
            parsed = None
        if parsed is None or parsed.tzinfo is None:
            problems.append(
                problem("ends_at", "datetime", _("a date and time with its time zone is required"))
            )
    return problems


def settings_normalised(journey_settings: dict | None) -> dict:
    """The settings with every default filled in (what the engine reads)."""
    merged = dict(DEFAULT_SETTINGS)
    merged.update(journey_settings or {})
    return merged


# --- The graph -----------------------------------------------------------------------------------------


def graph_document_problems(graph: Any) -> list[GraphProblem]:
    """Problems that make the document unreadable (not the shape the designer writes): with any of these
    nothing else can be checked, and even a draft is not saved."""
    if not isinstance(graph, dict):
        return [GraphProblem(None, None, None, "document", _("the graph must be a JSON object"))]
    problems: list[GraphProblem] = []
    if graph.get("schema") != GRAPH_SCHEMA:
        problems.append(
            GraphProblem(
                None,
                None,
                "schema",
                "schema",
                _("unknown graph schema; expected %(n)s") % {"n": GRAPH_SCHEMA},
            )
        )
    nodes, edges = graph.get("nodes"), graph.get("edges")
    if not isinstance(nodes, list):
        problems.append(GraphProblem(None, None, "nodes", "list", _("nodes must be a list")))
        nodes = []
    if not isinstance(edges, list):
        problems.append(GraphProblem(None, None, "edges", "list", _("edges must be a list")))
        edges = []
    if len(nodes) > MAX_NODES:
        problems.append(
            GraphProblem(
                None,
                None,
                "nodes",
                "too_many",
                _("a journey may have at most %(n)s nodes") % {"n": MAX_NODES},
            )
        )
    seen: set[str] = set()
    for i, node in enumerate(nodes):
        node_id = node.get("id") if isinstance(node, dict) else None
        if not isinstance(node_id, str) or not NODE_ID_RE.fullmatch(node_id):
            problems.append(
                GraphProblem(
                    None, None, f"nodes.{i}.id", "id", _("node %(n)s has no valid id") % {"n": i + 1}
                )
            )
            continue
        if node_id in seen:
            problems.append(GraphProblem(node_id, None, "id", "duplicate", _("two nodes have this id")))
        seen.add(node_id)
        if "config" in node and not isinstance(node["config"], dict):
            problems.append(
                GraphProblem(node_id, None, "config", "object", _("the node's config must be an object"))
            )
    seen_edges: set[str] = set()
    for i, edge in enumerate(edges):
        edge_id = edge.get("id") if isinstance(edge, dict) else None
        if not isinstance(edge_id, str) or not NODE_ID_RE.fullmatch(edge_id):
            problems.append(
                GraphProblem(
                    None, None, f"edges.{i}.id", "id", _("edge %(n)s has no valid id") % {"n": i + 1}
                )
            )
            continue
        if edge_id in seen_edges:
            problems.append(GraphProblem(None, edge_id, "id", "duplicate", _("two edges have this id")))
        seen_edges.add(edge_id)
        for key in ("source", "target"):
            if not isinstance(edge.get(key), str):
                problems.append(
                    GraphProblem(None, edge_id, key, "required", _("the edge has no %(end)s") % {"end": key})
                )
    return problems


def graph_validate(graph: Any, *, settings: Any = None, check_refs: bool = True) -> list[GraphProblem]:
    """Every problem of `graph` (and the journey `settings`), each naming its node, edge and field.

    An empty list means the graph may be published. `check_refs=False` skips the database look-ups of
    templates, programmes, tags and segments (for callers with no database at hand)."""
    problems = graph_document_problems(graph)
    problems += settings_problems(settings)
    if any(p.code in ("document", "list", "id", "duplicate", "required") for p in problems):
        return problems
    nodes: dict[str, dict] = {n["id"]: n for n in graph["nodes"]}
    edges: list[dict] = graph["edges"]

    refs: list[tuple[str, Ref]] = []
    entries = []
    for node_id, node in nodes.items():
        node_type = _REGISTRY.get(node.get("type"))
        if node_type is None:
            problems.append(
                GraphProblem(
                    node_id,
                    None,
                    "type",
                    "unknown_type",
                    _("unknown node type %(type)s") % {"type": node.get("type")},
                )
            )
            continue
        if node_type.key == "entry":
            entries.append(node_id)
        checked = Checked()
        node_type.clean(node.get("config") or {}, checked)
        problems += [GraphProblem(node_id, None, f"config.{f}", c, m) for f, c, m in checked.problems]
        refs += [(node_id, ref) for ref in checked.refs]

    if not entries:
        problems.append(GraphProblem(None, None, "nodes", "no_entry", _("the journey needs an entry node")))
    for node_id in entries[1:]:
        problems.append(
            GraphProblem(node_id, None, "type", "two_entries", _("a journey has exactly one entry node"))
        )

    # Edges: both ends exist, leave from a handle the source has, and each exit has exactly one edge.
    out_edges: dict[str, list[str]] = {node_id: [] for node_id in nodes}
    in_degree: dict[str, int] = dict.fromkeys(nodes, 0)
    by_handle: dict[tuple[str, str], list[str]] = {}
    for edge in edges:
        source, target, handle = edge["source"], edge["target"], edge.get("source_handle") or "next"
        if source not in nodes:
            problems.append(
                GraphProblem(None, edge["id"], "source", "dangling", _("the edge starts at no node"))
            )
            continue
        if target not in nodes:
            problems.append(
                GraphProblem(
                    source, edge["id"], "target", "dangling", _("an edge from this node leads nowhere")
                )
            )
            continue
        node_type = _REGISTRY.get(nodes[source].get("type"))
        if node_type is None:
            continue
        if handle not in node_type.exits_for(nodes[source].get("config")):
            problems.append(
                GraphProblem(
                    source,
                    edge["id"],
                    "source_handle",
                    "bad_handle",
                    _("this node has no exit %(handle)s") % {"handle": handle},
                )
            )
            continue
        if nodes[target].get("type") == "entry":
            problems.append(
                GraphProblem(target, edge["id"], "target", "into_entry", _("no edge may lead into the entry"))
            )
        by_handle.setdefault((source, handle), []).append(edge["id"])
        out_edges[source].append(target)
        in_degree[target] += 1
    for node_id, node in nodes.items():
        node_type = _REGISTRY.get(node.get("type"))
        if node_type is None:
            continue
        for handle in node_type.exits_for(node.get("config")):
            linked = by_handle.get((node_id, handle), [])
            if not linked:
                problems.append(
                    GraphProblem(
                        node_id,
                        None,
                        f"exits.{handle}",
                        "unconnected",
                        _("the exit %(handle)s leads nowhere: connect it") % {"handle": handle},
                    )
                )
            for edge_id in linked[1:]:
                problems.append(
                    GraphProblem(
                        node_id,
                        edge_id,
                        f"exits.{handle}",
                        "two_edges",
                        _("the exit %(handle)s has more than one edge") % {"handle": handle},
                    )
                )

    if len(entries) == 1:
        reached = _reachable(entries[0], out_edges)
        for node_id in nodes:
            if node_id not in reached:
                problems.append(
                    GraphProblem(
                        node_id, None, None, "unreachable", _("no path from the entry reaches this node")
                    )
                )

    waits = {
        node_id for node_id, node in nodes.items() if getattr(_REGISTRY.get(node.get("type")), "waits", False)
    }
    for component in _instant_cycles(out_edges, waits):
        first = min(component)
        problems.append(
            GraphProblem(
                first,
                None,
                None,
                "cycle",
                _("a loop through %(nodes)s has no wait: customers would go round it forever")
                % {"nodes": ", ".join(sorted(component))},
            )
        )

    if refs and check_refs:
        problems += _missing_refs(refs)
    return problems


def _reachable(start: str, out_edges: dict[str, list[str]]) -> set[str]:
    seen = {start}
    stack = [start]
    while stack:
        for target in out_edges[stack.pop()]:
            if target not in seen:
                seen.add(target)
                stack.append(target)
    return seen


def _instant_cycles(out_edges: dict[str, list[str]], waits: set[str]) -> list[set[str]]:
    """Strongly connected components (Tarjan, iterative) of the graph without its waiting nodes that hold
    a cycle: a loop that passes a wait is allowed (it advances once per wait), one that does not spins."""
    graph = {n: [t for t in targets if t not in waits] for n, targets in out_edges.items() if n not in waits}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[set[str]] = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(graph[root]))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            advanced = False
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(graph[child])))
                    advanced = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1 or node in graph[node]:
                    found.append(component)
    return found


def _missing_refs(refs: list[tuple[str, Ref]]) -> list[GraphProblem]:
    # One query per kind of reference, whatever the number of nodes.
    from campaigns.models import MessageTemplate
    from crm.models import Segment, Tag
    from loyalty.models import CouponProgramme

    wanted: dict[str, set] = {}
    for _node_id, ref in refs:
        wanted.setdefault(ref.kind, set()).add(ref.value)
    found: dict[str, set] = {}
    if "template" in wanted:
        found["template"] = set(
            MessageTemplate.objects.filter(code__in=wanted["template"]).values_list("code", flat=True)
        )
    if "tag" in wanted:
        found["tag"] = set(Tag.objects.filter(name__in=wanted["tag"]).values_list("name", flat=True))
    if "programme" in wanted:
        found["programme"] = set(
            CouponProgramme.objects.filter(pk__in=wanted["programme"], is_active=True).values_list(
                "pk", flat=True
            )
        )
    if "segment" in wanted:
        found["segment"] = set(Segment.objects.filter(pk__in=wanted["segment"]).values_list("pk", flat=True))
    messages = {
        "template": _("no message template has the code %(value)s"),
        "tag": _("no tag is named %(value)s"),
        "programme": _("no active coupon programme has the id %(value)s"),
        "segment": _("no segment has the id %(value)s"),
    }
    return [
        GraphProblem(
            node_id,
            None,
            f"config.{ref.field}",
            f"missing_{ref.kind}",
            messages[ref.kind] % {"value": ref.value},
        )
        for node_id, ref in refs
        if ref.value not in found[ref.kind]
    ]


def graph_nodes(graph: dict) -> dict[str, dict]:
    """The nodes of a valid graph by id."""
    return {n["id"]: n for n in graph.get("nodes", [])}


def graph_next(graph: dict) -> dict[tuple[str, str], str]:
    """(node id, exit) -> the node that exit leads to, for a valid graph."""
    return {(e["source"], e.get("source_handle") or "next"): e["target"] for e in graph.get("edges", [])}


def graph_entry(graph: dict) -> str | None:
    return next((n["id"] for n in graph.get("nodes", []) if n.get("type") == "entry"), None)


def default_graph() -> dict:
    """A new journey's graph: an entry staff start by hand, straight to the exit."""
    return {
        "schema": GRAPH_SCHEMA,
        "nodes": [
            {
                "id": "entry",
                "type": "entry",
                "config": {"trigger": {"kind": "manual"}},
                "position": {"x": 0, "y": 0},
            },
            {"id": "exit", "type": "exit", "config": {}, "position": {"x": 0, "y": 160}},
        ],
        "edges": [{"id": "e-entry-exit", "source": "entry", "source_handle": "next", "target": "exit"}],
    }
