"""What the journey designer (static/journeys/designer.jsx) is told about the graph it edits: the node-type
catalogue (each type's exits, the fields of its side panel, the choices those fields offer) and every label
the canvas shows, translated here so the browser carries no text of its own.

The registry in journeys/nodes.py says what a valid config is; this module only says how to edit one. A
field's `name` is its dotted path inside the node's config ("trigger.kind", "duration.value"), the same
path `graph_validate` names in its problems ("config.duration.value"), so the canvas puts each problem
next to its field. `show_if` hides fields that do not apply ({"trigger.kind": ["event"]}; "*" for any
value but none). Choices that
come from the database (templates, coupon programmes, tags, segments) are read with one query each.
"""

from __future__ import annotations

from typing import Any

from django.utils.translation import gettext as _
from django.utils.translation import pgettext

from journeys import nodes as journey_nodes

# Enough choices for any real brand's lists; a longer list would make the page, not the choice, slow.
MAX_CHOICES = 500


def _choices(pairs) -> list[dict]:
    return [{"value": value, "label": str(label)} for value, label in pairs]


def _units() -> list[dict]:
    return _choices([("minutes", _("minutes")), ("hours", _("hours")), ("days", _("days"))])


def _duration(path: str, label: str, show_if: dict | None = None) -> list[dict]:
    return [
        {"name": f"{path}.value", "label": label, "kind": "number", "required": True, "show_if": show_if},
        {
            "name": f"{path}.unit",
            "label": _("unit"),
            "kind": "select",
            "choices": _units(),
            "show_if": show_if,
        },
    ]


def _event_type_suggestions() -> list[str]:
    from crm.event_types import event_types

    return [t.code for t in event_types()]


def _db_choices() -> dict[str, list[dict]]:
    """The choices staff pick from, one query each (templates, active coupon programmes, tags,
    segments)."""
    from campaigns.models import MessageTemplate
    from crm.models import Segment, Tag
    from loyalty.models import CouponProgramme

    templates = MessageTemplate.objects.order_by("code").values_list("code", "name", "channel")[:MAX_CHOICES]
    programmes = (
        CouponProgramme.objects.filter(is_active=True)
        .order_by("name")
        .values_list("pk", "name")[:MAX_CHOICES]
    )
    return {
        "templates": [
            {"value": code, "label": f"{code} · {name} ({channel})"} for code, name, channel in templates
        ],
        "programmes": [{"value": pk, "label": name} for pk, name in programmes],
        "tags": list(Tag.objects.order_by("name").values_list("name", flat=True)[:MAX_CHOICES]),
        "segments": [
            {"value": pk, "label": name}
            for pk, name in Segment.objects.order_by("name").values_list("pk", "name")[:MAX_CHOICES]
        ],
    }


def _exit_label(exit_id: str) -> str:
    labels = {
        "next": pgettext("journey exit", "next"),
        "yes": pgettext("journey exit", "yes"),
        "no": pgettext("journey exit", "no"),
        "event": pgettext("journey exit", "event arrived"),
        "timeout": pgettext("journey exit", "timed out"),
    }
    return labels.get(exit_id, exit_id)


def trigger_kind_choices() -> list[dict]:
    """What makes customers enter a journey, as the entry's first field offers it."""
    return _choices(
        [
            ("event", _("A behaviour event")),
            ("event_not_followed", _("An event not followed by another in time")),
            ("stage_changed", _("A lifecycle stage change")),
            ("tier_changed", _("A tier change")),
            ("points_expiring", _("Points expiring soon")),
            ("date_attribute", _("Every year on a date (birthday, sign-up)")),
            ("days_after", _("Some days after an event or a date")),
            ("calendar", _("A holiday or shopping date")),
            ("segment", _("Newly matching a segment")),
            ("at", _("At a fixed date and time")),
            ("manual", _("Started by hand")),
        ]
    )


def _entry_fields(events: list[str], choices: dict) -> list[dict]:
    from crm.models import LifecycleStage

    def when(*kinds: str) -> dict:
        return {"trigger.kind": list(kinds)}

    kinds = trigger_kind_choices()
    return [
        {
            "name": "trigger.kind",
            "label": _("customers enter on"),
            "kind": "select",
            "choices": kinds,
            "required": True,
        },
        {
            "name": "trigger.event_type",
            "label": _("event type"),
            "kind": "text",
            "suggestions": events,
            "required": True,
            "show_if": when("event", "event_not_followed", "days_after"),
        },
        {
            "name": "trigger.filters",
            "label": _("only events whose properties match"),
            "kind": "filters",
            "event_type_from": "trigger.event_type",
            "show_if": when("event", "event_not_followed"),
        },
        {
            "name": "trigger.not_followed_by",
            "label": _("and no event of type"),
            "kind": "text",
            "suggestions": events,
            "required": True,
            "show_if": when("event_not_followed"),
        },
        *_duration("trigger.within", _("within"), when("event_not_followed")),
        {
            "name": "trigger.to",
            "label": _("into the stage"),
            "kind": "select",
            "choices": _choices(LifecycleStage.choices),
            "required": True,
            "show_if": when("stage_changed"),
        },
        {
            # One field for both kinds (the canvas finds a field's problems by its name); the server says
            # which dates each kind takes.
            "name": "trigger.attribute",
            "label": _("date"),
            "kind": "select",
            "choices": _choices(
                [
                    ("birthday", _("birthday")),
                    ("signed_up_at", _("sign-up anniversary")),
                    ("first_order_at", _("first order")),
                    ("last_order_at", _("last order")),
                ]
            ),
            "required": True,
            "help": _(
                "Every year: the birthday or the sign-up anniversary, in each customer's time zone; a 29 "
                "February birthday is celebrated on 28 February in other years. Some days after: the "
                "sign-up, the first order or the last order, or leave it empty and name an event."
            ),
            "show_if": when("date_attribute", "days_after"),
        },
        {
            "name": "trigger.which",
            "label": _("count from"),
            "kind": "select",
            "choices": _choices([("first", _("the first such event")), ("each", _("each such event"))]),
            "show_if": when("days_after"),
        },
        {
            "name": "trigger.days",
            "label": _("days after"),
            "kind": "number",
            "required": True,
            "show_if": when("days_after"),
        },
        {
            "name": "trigger.code",
            "label": _("calendar date"),
            "kind": "text",
            "suggestions": ["spring_festival", "valentines_day", "618", "mid_autumn", "double11", "double12"],
            "required": True,
            "show_if": when("calendar"),
        },
        {
            "name": "trigger.offset_days",
            "label": _("days before (−) or after (+)"),
            "kind": "number",
            "show_if": when("calendar"),
        },
        {
            "name": "trigger.local_time",
            "label": _("at the customer's local time"),
            "kind": "time",
            "required": True,
            "show_if": when("date_attribute", "days_after", "calendar"),
        },
        {
            "name": "trigger.segment",
            "label": _("segment"),
            "kind": "select",
            "coerce": "int",
            "choices": choices["segments"],
            "required": True,
            "help": _(
                "Customers enter when they newly match. The first evaluation after publishing only notes "
                "who matches already."
            ),
            "show_if": when("segment"),
        },
        *_duration("trigger.every", _("evaluated every"), when("segment")),
        {
            "name": "trigger.at",
            "label": _("date and time"),
            "kind": "text",
            "help": _("With its time zone, e.g. 2027-01-28T09:00+08:00."),
            "required": True,
            "show_if": when("at"),
        },
    ]


def _fields(node_type: str, events: list[str], choices: dict) -> list[dict]:
    if node_type == "entry":
        return _entry_fields(events, choices)
    if node_type == "wait":
        duration = {"mode": ["duration"]}
        until = {"mode": ["until"]}
        weekdays = [
            (0, _("Mon")),
            (1, _("Tue")),
            (2, _("Wed")),
            (3, _("Thu")),
            (4, _("Fri")),
            (5, _("Sat")),
            (6, _("Sun")),
        ]
        return [
            {
                "name": "mode",
                "label": _("wait"),
                "kind": "select",
                "choices": _choices([("duration", _("for a duration")), ("until", _("until a local time"))]),
                "required": True,
            },
            *_duration("duration", _("how long"), duration),
            {
                "name": "local_time",
                "label": _("local time"),
                "kind": "time",
                "required": True,
                "show_if": until,
            },
            {
                "name": "weekdays",
                "label": _("on these weekdays (none: any day)"),
                "kind": "weekdays",
                "choices": _choices(weekdays),
                "show_if": until,
            },
        ]
    if node_type == "wait_for_event":
        return [
            {
                "name": "event_type",
                "label": _("event type"),
                "kind": "text",
                "suggestions": events,
                "required": True,
            },
            {
                "name": "filters",
                "label": _("only events whose properties match"),
                "kind": "filters",
                "event_type_from": "event_type",
            },
            *_duration("timeout", _("give up after")),
        ]
    if node_type == "condition":
        return [
            {
                "name": "rule",
                "label": _("customers who match this rule go to “yes”, the others to “no”"),
                "kind": "rule",
                "required": True,
                "help": _(
                    "The segment builder's conditions, checked for the customer when they arrive here."
                ),
            }
        ]
    if node_type == "random_split":
        return [{"name": "branches", "label": _("branches (their shares add up to 100)"), "kind": "branches"}]
    if node_type == "send_message":
        channels = [
            ("best", _("the customer's best channel")),
            ("wechat", _("WeChat")),
            ("sms", _("SMS")),
            ("email", _("Email")),
            ("push", _("Push")),
        ]
        return [
            {"name": "channel", "label": _("channel"), "kind": "select", "choices": _choices(channels)},
            {
                "name": "template",
                "label": _("message template"),
                "kind": "select",
                "choices": choices["templates"],
                "required": True,
            },
            {
                "name": "on_cap",
                "label": _("when a frequency cap is reached"),
                "kind": "select",
                "choices": _choices([("defer", _("send it later")), ("drop", _("drop it"))]),
            },
        ]
    if node_type == "award_points":
        return [
            {"name": "points", "label": _("points"), "kind": "number", "required": True},
            {"name": "reason", "label": _("reason (shown to the member)"), "kind": "text", "required": True},
        ]
    if node_type == "issue_coupon":
        return [
            {
                "name": "programme",
                "label": _("coupon programme"),
                "kind": "select",
                "coerce": "int",
                "choices": choices["programmes"],
                "required": True,
            }
        ]
    if node_type in ("add_tag", "remove_tag"):
        return [
            {
                "name": "tag",
                "label": _("tag"),
                "kind": "text",
                "suggestions": choices["tags"],
                "required": True,
            }
        ]
    if node_type == "update_attribute":
        attributes = [
            ("preferred_channel", _("preferred channel")),
            ("city", _("city")),
            ("region", _("region")),
        ]
        return [
            {"name": "attribute", "label": _("attribute"), "kind": "select", "choices": _choices(attributes)},
            {"name": "value", "label": _("new value"), "kind": "text"},
        ]
    if node_type == "webhook":
        return [
            {
                "name": "url",
                "label": _("address (https://)"),
                "kind": "text",
                "required": True,
                "help": _("Called with a signed POST; retried when it fails."),
            }
        ]
    return []


_HELP = {
    "entry": lambda: _("What makes a customer start the journey. A journey has exactly one entry."),
    "wait": lambda: _("Holds the customer for a while, or until a time of day."),
    "wait_for_event": lambda: _("Waits for the customer to do something, or gives up after a time."),
    "condition": lambda: _("Checks a segment rule for this customer now: yes or no."),
    "random_split": lambda: _("Sends customers down branches at random, by share."),
    "send_message": lambda: _("Sends a message through the pipeline (consent, caps, quiet hours)."),
    "award_points": lambda: _("Adds points to the member's balance, once per visit."),
    "issue_coupon": lambda: _("Issues the customer a coupon of a programme."),
    "add_tag": lambda: _("Adds a tag to the customer."),
    "remove_tag": lambda: _("Removes a tag from the customer."),
    "update_attribute": lambda: _("Changes a profile attribute."),
    "webhook": lambda: _("Calls another system."),
    "exit": lambda: _("The end of the journey."),
}

_DEFAULT_CONFIG: dict[str, dict] = {
    "entry": {"trigger": {"kind": "event", "filters": []}},
    "wait": {"mode": "duration", "duration": {"value": 1, "unit": "days"}},
    "wait_for_event": {"timeout": {"value": 2, "unit": "hours"}},
    "condition": {"rule": {"op": "and", "conditions": []}},
    "random_split": {
        "branches": [{"id": "a", "label": "A", "percent": 50}, {"id": "b", "label": "B", "percent": 50}]
    },
    "send_message": {"channel": "best", "on_cap": "defer"},
    "update_attribute": {"value": ""},
}

_SUMMARY: dict[str, list[str]] = {
    "entry": ["trigger.kind", "trigger.event_type"],
    "wait": ["duration.value", "duration.unit", "local_time"],
    "wait_for_event": ["event_type"],
    "send_message": ["channel", "template"],
    "award_points": ["points"],
    "issue_coupon": ["programme"],
    "add_tag": ["tag"],
    "remove_tag": ["tag"],
    "update_attribute": ["attribute", "value"],
    "webhook": ["url"],
}


def _settings_fields() -> list[dict]:
    return [
        {
            "name": "re_entry.mode",
            "label": _("re-entry"),
            "kind": "select",
            "choices": _choices(
                [("never", _("never")), ("after_days", _("after some days")), ("always", _("always"))]
            ),
        },
        {
            "name": "re_entry.days",
            "label": _("days before re-entry"),
            "kind": "number",
            "show_if": {"re_entry.mode": ["after_days"]},
        },
        {
            "name": "goal.event_type",
            "label": _("goal event (exits and counts as a conversion)"),
            "kind": "text",
            "suggestions": _event_type_suggestions(),
        },
        {
            "name": "goal.filters",
            "label": _("only goal events whose properties match"),
            "kind": "filters",
            "event_type_from": "goal.event_type",
            "show_if": {"goal.event_type": "*"},
        },
        {
            "name": "holdout_percent",
            "label": _("holdout: the share of customers who get nothing, in percent"),
            "kind": "number",
        },
        {"name": "priority", "label": _("priority for the shared caps (−100 to 100)"), "kind": "number"},
        {
            "name": "ends_at",
            "label": _("ends at"),
            "kind": "text",
            "help": _("With its time zone, e.g. 2027-02-28T23:59+08:00; empty: no end."),
        },
    ]


def _filter_operators() -> list[dict]:
    labels = {
        "eq": _("is"),
        "neq": _("is not"),
        "in": _("is one of"),
        "not_in": _("is not one of"),
        "contains": _("contains"),
        "gt": _("is greater than"),
        "gte": _("is at least"),
        "lt": _("is less than"),
        "lte": _("is at most"),
        "exists": _("is present"),
    }
    # The value each operator takes: the engine's filters_match reads exactly these shapes.
    takes = {"in": "list", "not_in": "list", "gt": "number", "gte": "number", "lt": "number", "lte": "number"}
    return [
        {"value": op, "label": str(labels[op]), "takes": "none" if op == "exists" else takes.get(op, "text")}
        for op in journey_nodes.FILTER_OPS
    ]


def _event_properties() -> dict[str, list[str]]:
    """Each catalogued event type's property names, offered in the filter rows of that type."""
    from crm.event_types import event_types

    return {t.code: sorted(t.properties) for t in event_types()}


def designer_rule_builder() -> dict[str, Any]:
    """The segment builder's vocabulary (crm's rule schema: fields, operators, value inputs) and its
    words, for the condition split's rule editor: the same rules, worded the same way, as segments."""
    from crm.segments.fields import builder_schema
    from crm.segments.forms import builder_labels

    return {"schema": builder_schema(), "labels": builder_labels()}


def designer_catalogue() -> dict[str, Any]:
    """Every node type the registry knows, in the palette's order, with its panel's fields."""
    events = _event_type_suggestions()
    choices = _db_choices()
    types = []
    for node_type in journey_nodes.node_types():
        key = node_type.key
        default_config = _DEFAULT_CONFIG.get(key, {})
        dynamic = key == "random_split"
        types.append(
            {
                "type": key,
                "label": str(node_type.label),
                "help": str(_HELP[key]()) if key in _HELP else "",
                "waits": node_type.waits,
                "exits": []
                if dynamic
                else [{"id": e, "label": _exit_label(e)} for e in node_type.exits_for(default_config)],
                "dynamic_exits": "branches" if dynamic else None,
                "fields": [
                    {k: v for k, v in f.items() if v is not None} for f in _fields(key, events, choices)
                ],
                "default_config": default_config,
                "summary": _SUMMARY.get(key, []),
            }
        )
    return {
        "types": types,
        "settings_fields": [{k: v for k, v in f.items() if v is not None} for f in _settings_fields()],
        "filter_operators": _filter_operators(),
        "event_properties": _event_properties(),
        "rule_builder": designer_rule_builder(),
    }


def designer_labels() -> dict[str, str]:
    """The canvas's own words (buttons, headings, messages); {name} is filled in by the canvas."""
    return {
        "toolbar": _("Journey designer tools"),
        "palette": _("Nodes"),
        "palette_help": _("Drag a node onto the canvas, or press Enter on it to add it in the middle."),
        "version_label": _("Version {number}"),
        "undo": _("Undo"),
        "redo": _("Redo"),
        "save": _("Save draft"),
        "publish": _("Publish"),
        "saving": _("Saving…"),
        "saved": _("Saved."),
        "saved_with_problems": _("Saved, with {count} problem(s) to fix before publishing."),
        "publishing": _("Publishing…"),
        "published": _("Published: customers now enter this version."),
        "publish_refused": _("Not published: fix the {count} problem(s) listed."),
        "request_failed": _("The server refused the request ({status})."),
        "network_error": _("The server could not be reached: nothing was saved."),
        "unsaved_changes": _("Unsaved changes"),
        "journey_settings": _("Journey settings"),
        "settings_help": _(
            "Select a node to configure it; with none selected, these are the journey's settings."
        ),
        "exits": _("Exits"),
        "exit_goes_to": _("“{exit}” goes to"),
        "not_connected": _("(not connected)"),
        "delete_node": _("Delete this node"),
        "choose": _("— choose —"),
        "json_invalid": _("Not valid JSON yet: the last valid value is kept."),
        "branch_id": _("branch id"),
        "branch_label": _("branch label"),
        "branch_percent": _("share in percent"),
        "add_branch": _("Add a branch"),
        "remove": _("Remove"),
        "problems_title": _("Problems ({count})"),
        "problem_at": _("{where}: {message}"),
        "no_problems": _("No problems found at the last save."),
        "handle_in": _("Entrance"),
        "handle_exit": _("Exit “{exit}”: drag to the next node"),
        "count_entered": _("entered"),
        "count_waiting": _("waiting"),
        "count_passed": _("passed"),
        "count_exited": _("exited"),
        "new_draft": _("Edit: make a new draft"),
        "readonly_note": _("This version is published and frozen: make a new draft to change it."),
        "filter_property": _("property"),
        "filter_operator": _("comparison"),
        "filter_value": _("value"),
        "filter_values_hint": _("comma-separated"),
        "filter_add": _("Add a property filter"),
        "filter_row": _("filter {n}"),
        "filter_none": _("No filter: every event of this type counts."),
        "results_title": _("Results"),
    }


def designer_aria_labels() -> dict[str, str]:
    """React Flow's own screen-reader texts (its ariaLabelConfig), translated."""
    return {
        "node.a11yDescription.default": _(
            "Press Enter or Space to select a node. Press Delete to remove it and Escape to cancel."
        ),
        "node.a11yDescription.keyboardDisabled": _(
            "Press Enter or Space to select a node. You can then use the arrow keys to move it. Press Delete "
            "to remove it and Escape to cancel."
        ),
        "edge.a11yDescription.default": _(
            "Press Enter or Space to select an edge. You can then press Delete to remove it or Escape to cancel."
        ),
        "controls.ariaLabel": _("Canvas controls"),
        "controls.zoomIn.ariaLabel": _("Zoom in"),
        "controls.zoomOut.ariaLabel": _("Zoom out"),
        "controls.fitView.ariaLabel": _("Fit the journey in view"),
        "controls.interactive.ariaLabel": _("Lock or unlock the canvas"),
        "minimap.ariaLabel": _("Overview map"),
        "handle.ariaLabel": _("Connection point"),
    }
