"""Ready-made journeys staff copy into a draft and then adapt: the welcome series, cart abandonment
(WeChat, then SMS), the post-purchase review request and cross-sell, the birthday gift with points, the
six-month revisit, the tier-upgrade congratulations, the points-expiring reminder and the dormant
win-back (你还记得吗? with an exclusive coupon).

Each one is a graph in the designer's document format (journeys/nodes.py) with its settings, under a
stable code other code may name (the win-back programme copies "dormant_winback"). Copying
(`library_journey_copy`) makes sure the message templates and tags the graph names exist, then creates
an ordinary journey in draft through journey_create: nothing is published, the marketer edits and
publishes it in the designer. Names and descriptions are translated (English msgids, Chinese in the
catalogue); a copy is named in the language of the person who copies it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from datetime import datetime

from django.db import transaction
from django.utils.functional import Promise
from django.utils.translation import gettext_lazy as _

from journeys.models import Journey
from journeys.nodes import GRAPH_SCHEMA, graph_validate
from journeys.services.journeys import journey_create

COLUMN = 240
ROW = 150


@dataclass(frozen=True)
class LibraryJourney:
    code: str
    name: str | Promise
    summary: str | Promise  # what it does, one or two sentences on the card
    kind: str  # "time" or "behaviour": the card's badge
    nodes: tuple  # (id, type, config, (column, row))
    edges: tuple  # (source, exit, target)
    settings: dict
    tags: tuple[str, ...] = ()

    def graph(self) -> dict:
        return {
            "schema": GRAPH_SCHEMA,
            "nodes": [
                {
                    "id": node_id,
                    "type": node_type,
                    "config": copy.deepcopy(config),
                    "position": {"x": column * COLUMN, "y": row * ROW},
                }
                for node_id, node_type, config, (column, row) in self.nodes
            ],
            "edges": [
                {"id": f"e-{source}-{handle}", "source": source, "source_handle": handle, "target": target}
                for source, handle, target in self.edges
            ],
        }

    def templates(self) -> set[str]:
        return {
            config["template"] for _id, node_type, config, _pos in self.nodes if node_type == "send_message"
        }


def _send(channel: str, template: str) -> dict:
    return {"channel": channel, "template": template, "on_cap": "defer"}


def _wait_days(days: int) -> dict:
    return {"mode": "duration", "duration": {"value": days, "unit": "days"}}


def _rule(*conditions: dict) -> dict:
    return {"rule": {"op": "and", "conditions": list(conditions)}}


ORDER_GOAL = {"event_type": "order_placed", "filters": []}

LIBRARY: tuple[LibraryJourney, ...] = (
    LibraryJourney(
        code="welcome_series",
        name=_("Welcome series"),
        summary=_(
            "Welcomes a new sign-up on WeChat; two days later, if they have not ordered yet, an SMS "
            "reminds them of the first-order gift."
        ),
        kind="behaviour",
        nodes=(
            ("entry", "entry", {"trigger": {"kind": "event", "event_type": "signup", "filters": []}}, (0, 0)),
            ("welcome", "send_message", _send("wechat", "welcome.wechat"), (1, 0)),
            ("wait", "wait", _wait_days(2), (2, 0)),
            ("ordered", "condition", _rule({"field": "orders.count", "operator": "gte", "value": 1}), (3, 0)),
            ("nudge", "send_message", _send("sms", "welcome_first_order.sms"), (4, 1)),
            ("done", "exit", {}, (5, 0)),
        ),
        edges=(
            ("entry", "next", "welcome"),
            ("welcome", "next", "wait"),
            ("wait", "next", "ordered"),
            ("ordered", "yes", "done"),
            ("ordered", "no", "nudge"),
            ("nudge", "next", "done"),
        ),
        settings={"re_entry": {"mode": "never"}, "goal": ORDER_GOAL, "holdout_percent": 5, "priority": 0},
    ),
    LibraryJourney(
        code="cart_abandonment",
        name=_("Cart abandonment"),
        summary=_(
            "Two hours after an add-to-cart with no order, a WeChat reminder; if there is still no order a "
            "day later, an SMS. An order ends the journey."
        ),
        kind="behaviour",
        nodes=(
            (
                "entry",
                "entry",
                {
                    "trigger": {
                        "kind": "event_not_followed",
                        "event_type": "add_to_cart",
                        "filters": [],
                        "not_followed_by": "order_placed",
                        "within": {"value": 2, "unit": "hours"},
                    }
                },
                (0, 0),
            ),
            ("wechat", "send_message", _send("wechat", "cart_reminder.wechat"), (1, 0)),
            (
                "order",
                "wait_for_event",
                {"event_type": "order_placed", "filters": [], "timeout": {"value": 1, "unit": "days"}},
                (2, 0),
            ),
            ("sms", "send_message", _send("sms", "cart_reminder.sms"), (3, 1)),
            ("done", "exit", {}, (4, 0)),
        ),
        edges=(
            ("entry", "next", "wechat"),
            ("wechat", "next", "order"),
            ("order", "event", "done"),
            ("order", "timeout", "sms"),
            ("sms", "next", "done"),
        ),
        settings={
            "re_entry": {"mode": "after_days", "days": 7},
            "goal": ORDER_GOAL,
            "holdout_percent": 10,
            "priority": 20,
        },
    ),
    LibraryJourney(
        code="post_purchase",
        name=_("Post-purchase review and cross-sell"),
        summary=_(
            "A week after each order, asks for a review on WeChat; three days later, emails products "
            "recommended for the customer."
        ),
        kind="behaviour",
        nodes=(
            (
                "entry",
                "entry",
                {"trigger": {"kind": "event", "event_type": "order_placed", "filters": []}},
                (0, 0),
            ),
            ("wait_review", "wait", _wait_days(7), (1, 0)),
            ("review", "send_message", _send("wechat", "review_request.wechat"), (2, 0)),
            ("wait_offer", "wait", _wait_days(3), (3, 0)),
            ("cross_sell", "send_message", _send("email", "cross_sell.email"), (4, 0)),
            ("done", "exit", {}, (5, 0)),
        ),
        edges=(
            ("entry", "next", "wait_review"),
            ("wait_review", "next", "review"),
            ("review", "next", "wait_offer"),
            ("wait_offer", "next", "cross_sell"),
            ("cross_sell", "next", "done"),
        ),
        settings={
            "re_entry": {"mode": "after_days", "days": 30},
            "goal": None,
            "holdout_percent": 0,
            "priority": 0,
        },
    ),
    LibraryJourney(
        code="birthday_gift",
        name=_("Birthday gift with points"),
        summary=_(
            "On the customer's birthday at 09:00 their time, adds 200 gift points and sends the birthday "
            "wish. A 29 February birthday is celebrated on 28 February in other years."
        ),
        kind="time",
        nodes=(
            (
                "entry",
                "entry",
                {"trigger": {"kind": "date_attribute", "attribute": "birthday", "local_time": "09:00"}},
                (0, 0),
            ),
            ("points", "award_points", {"points": 200, "reason": "生日礼 Birthday gift"}, (1, 0)),
            ("wish", "send_message", _send("wechat", "birthday_wish.wechat"), (2, 0)),
            ("done", "exit", {}, (3, 0)),
        ),
        edges=(("entry", "next", "points"), ("points", "next", "wish"), ("wish", "next", "done")),
        settings={"re_entry": {"mode": "always"}, "goal": None, "holdout_percent": 0, "priority": 10},
    ),
    LibraryJourney(
        code="six_month_revisit",
        name=_("Six-month revisit"),
        summary=_(
            "180 days after a customer's first order, if they have not ordered in the last 60 days, an SMS "
            "invites them back for the next stage."
        ),
        kind="time",
        nodes=(
            (
                "entry",
                "entry",
                {"trigger": {"kind": "days_after", "event_type": "order_placed", "days": 180}},
                (0, 0),
            ),
            (
                "recent",
                "condition",
                _rule({"field": "orders.last_order_at", "operator": "in_last_days", "value": 60}),
                (1, 0),
            ),
            ("revisit", "send_message", _send("sms", "revisit.sms"), (2, 1)),
            ("done", "exit", {}, (3, 0)),
        ),
        edges=(
            ("entry", "next", "recent"),
            ("recent", "yes", "done"),
            ("recent", "no", "revisit"),
            ("revisit", "next", "done"),
        ),
        settings={"re_entry": {"mode": "never"}, "goal": ORDER_GOAL, "holdout_percent": 10, "priority": 0},
    ),
    LibraryJourney(
        code="tier_upgrade",
        name=_("Tier-upgrade congratulations"),
        summary=_("When a member moves up a tier, congratulates them on WeChat and tags them as upgraded."),
        kind="behaviour",
        nodes=(
            (
                "entry",
                "entry",
                {
                    "trigger": {
                        "kind": "event",
                        "event_type": "tier_changed",
                        "filters": [{"property": "direction", "op": "eq", "value": "up"}],
                    }
                },
                (0, 0),
            ),
            ("congratulate", "send_message", _send("wechat", "tier_upgrade.wechat"), (1, 0)),
            ("tag", "add_tag", {"tag": "tier_upgraded"}, (2, 0)),
            ("done", "exit", {}, (3, 0)),
        ),
        edges=(("entry", "next", "congratulate"), ("congratulate", "next", "tag"), ("tag", "next", "done")),
        settings={"re_entry": {"mode": "always"}, "goal": None, "holdout_percent": 0, "priority": 0},
        tags=("tier_upgraded",),
    ),
    LibraryJourney(
        code="points_expiring",
        name=_("Points-expiring reminder"),
        summary=_(
            "When a member's points are about to expire, a WeChat reminder at 10:00 their time; five days "
            "later, an SMS if the points are still there."
        ),
        kind="behaviour",
        nodes=(
            ("entry", "entry", {"trigger": {"kind": "points_expiring"}}, (0, 0)),
            ("morning", "wait", {"mode": "until", "local_time": "10:00"}, (1, 0)),
            ("wechat", "send_message", _send("wechat", "points_expiring.wechat"), (2, 0)),
            ("later", "wait", _wait_days(5), (3, 0)),
            ("sms", "send_message", _send("sms", "points_expiring.sms"), (4, 0)),
            ("done", "exit", {}, (5, 0)),
        ),
        edges=(
            ("entry", "next", "morning"),
            ("morning", "next", "wechat"),
            ("wechat", "next", "later"),
            ("later", "next", "sms"),
            ("sms", "next", "done"),
        ),
        settings={
            "re_entry": {"mode": "after_days", "days": 25},
            "goal": None,
            "holdout_percent": 0,
            "priority": 5,
        },
    ),
    LibraryJourney(
        code="dormant_winback",
        name=_("Dormant win-back"),
        summary=_(
            "When a customer becomes dormant, sends 你还记得吗? with an exclusive coupon on WeChat; with no "
            "order in 7 days, again by SMS. An order ends it and tags the customer as won back."
        ),
        kind="behaviour",
        nodes=(
            ("entry", "entry", {"trigger": {"kind": "stage_changed", "to": "dormant"}}, (0, 0)),
            ("wechat", "send_message", _send("wechat", "winback_miss_you.wechat"), (1, 0)),
            (
                "order",
                "wait_for_event",
                {"event_type": "order_placed", "filters": [], "timeout": {"value": 7, "unit": "days"}},
                (2, 0),
            ),
            ("sms", "send_message", _send("sms", "winback_miss_you.sms"), (3, 1)),
            (
                "order_again",
                "wait_for_event",
                {"event_type": "order_placed", "filters": [], "timeout": {"value": 14, "unit": "days"}},
                (4, 1),
            ),
            ("won_back", "add_tag", {"tag": "won_back"}, (5, 0)),
            ("done", "exit", {}, (6, 0)),
        ),
        edges=(
            ("entry", "next", "wechat"),
            ("wechat", "next", "order"),
            ("order", "event", "won_back"),
            ("order", "timeout", "sms"),
            ("sms", "next", "order_again"),
            ("order_again", "event", "won_back"),
            ("order_again", "timeout", "done"),
            ("won_back", "next", "done"),
        ),
        # No goal: the wait-for-event nodes see the order (and tag the customer); a goal would end the
        # enrollment first. Conversions on the canvas count orders either way.
        settings={
            "re_entry": {"mode": "after_days", "days": 90},
            "goal": None,
            "holdout_percent": 10,
            "priority": 30,
        },
        tags=("won_back",),
    ),
)

_BY_CODE = {item.code: item for item in LIBRARY}


def library_journeys() -> tuple[LibraryJourney, ...]:
    return LIBRARY


def library_journey_get(code: str) -> LibraryJourney | None:
    return _BY_CODE.get(code)


def _references_ensure(item: LibraryJourney) -> None:
    """The templates and tags the graph names, created when missing (a fresh database, or staff deleted
    them): a copy must open without "no message template has the code ..."."""
    from campaigns.demo_templates import demo_templates_seed
    from campaigns.models import MessageTemplate
    from crm.models import Tag
    from journeys.library_templates import LIBRARY_TEMPLATES, library_templates_seed

    wanted = item.templates()
    found = set(MessageTemplate.objects.filter(code__in=wanted).values_list("code", flat=True))
    missing = wanted - found
    if missing & set(LIBRARY_TEMPLATES):
        library_templates_seed()
    if missing - set(LIBRARY_TEMPLATES):
        demo_templates_seed()
    for tag in item.tags:
        Tag.objects.get_or_create(name=tag)


class LibraryUnknown(ValueError):
    pass


def library_journey_copy(
    *, code: str, name: str | None = None, created_by=None, now: datetime | None = None
) -> Journey:
    """A new draft journey from the ready-made one `code` (LibraryUnknown if there is none)."""
    item = library_journey_get(code)
    if item is None:
        raise LibraryUnknown(code)
    with transaction.atomic():
        _references_ensure(item)
        return journey_create(
            name=name or str(item.name),
            description=str(item.summary),
            graph=item.graph(),
            settings=copy.deepcopy(item.settings),
            created_by=created_by,
            now=now,
        )


def library_problems() -> dict[str, list]:
    """Each ready-made journey's problems against this database (empty lists: all valid)."""
    return {item.code: graph_validate(item.graph(), settings=item.settings) for item in LIBRARY}


# The demo's journeys (make run): copies of these, as drafts, unless a journey of that name exists.
DEMO_CODES = ("welcome_series", "cart_abandonment", "birthday_gift", "dormant_winback")


def library_demo_seed() -> int:
    """Copy the demo's ready-made journeys once; returns how many were copied this time."""
    created = 0
    for code in DEMO_CODES:
        item = _BY_CODE[code]
        if not Journey.objects.filter(name=str(item.name)).exists():
            library_journey_copy(code=code)
            created += 1
    return created
