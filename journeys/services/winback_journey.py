"""The ready-made win-back journey and its message templates, built the first time a programme runs
without a journey of its own.

    entry (manual: the nightly selection enters the treated)
      -> day 0: "你还记得吗?" with the customer's exclusive coupon code, on their best open channel
      -> wait 7 days -> day 7: a reminder (WeChat, or email, or SMS)
      -> wait 7 days -> day 14: last chance
      -> exit
    goal: order_placed (a customer who orders leaves the journey at once)

The coupon is issued by the selection through loyalty (one unique, single-use code with an expiry per
customer) and reaches the templates as `data.winback.coupon_code` (journeys.services.winback
.winback_message_data), so the code in the message is the code the report attributes a returning order to.
"""

from __future__ import annotations

from datetime import datetime

from django.db import transaction

from journeys.models import Journey, JourneyStatus, JourneyVersion, WinbackProgramme
from journeys.services.journeys import journey_create, journey_publish

JOURNEY_NAME = "你还记得吗? Win-back"
TEMPLATE_CODES = ("winback_day0", "winback_day7", "winback_day14")
NAME_ZH = "{{ customer.name | default('亲爱的会员') }}"
NAME_EN = "{{ customer.name | default('dear member') }}"
CODE = "{{ data.winback.coupon_code | default('') }}"
# What the customer was given: their coupon code, or (an offer of points only) their bonus points.
OFFER_ZH = (
    "{% if data.winback.coupon_code %}专属回归券 {{ data.winback.coupon_code }}"
    "{% else %}{{ data.winback.points | default(0) }} 回归积分{% endif %}"
)
OFFER_EN = (
    "{% if data.winback.coupon_code %}your own coupon {{ data.winback.coupon_code }}"
    "{% else %}{{ data.winback.points | default(0) }} welcome-back points{% endif %}"
)
UNTIL = "{{ data.winback.valid_until | default('') }}"
UNSUB_ZH = '<p style="color:#888;font-size:12px"><a href="{{ links.unsubscribe }}">退订</a></p>'
UNSUB_EN = '<p style="color:#888;font-size:12px"><a href="{{ links.unsubscribe }}">Unsubscribe</a></p>'

# code -> (name, own channel, {channel: {language: (short text, email subject)}})
TEXTS = {
    "winback_day0": (
        "你还记得吗? 回归礼 Win-back day 0",
        "sms",
        {
            "zh-hans": (
                f"【母婴优选】你还记得吗？{NAME_ZH}，送您{OFFER_ZH}，欢迎回来！",
                f"你还记得吗？{NAME_ZH}，送您一张专属回归券",
            ),
            "en": (
                f"Do you remember us, {NAME_EN}? Here is {OFFER_EN}. Welcome back!",
                f"Do you remember us, {NAME_EN}? A coupon just for you",
            ),
        },
    ),
    "winback_day7": (
        "回归礼提醒 Win-back reminder day 7",
        "wechat",
        {
            "zh-hans": (f"{NAME_ZH}，您的{OFFER_ZH}还在等您。", "您的回归礼还在等您"),
            "en": (f"{NAME_EN}, {OFFER_EN} is still waiting for you.", "Your welcome-back gift is waiting"),
        },
    ),
    "winback_day14": (
        "最后机会 Win-back last chance day 14",
        "sms",
        {
            "zh-hans": (f"【母婴优选】最后机会：{OFFER_ZH}即将过期。", "最后机会：回归礼即将过期"),
            "en": (f"Last chance: {OFFER_EN} expires soon.", "Last chance: your gift expires soon"),
        },
    ),
}

WECHAT_TITLE = {"zh-hans": "你还记得吗？送您回归礼券", "en": "Welcome-back coupon"}


def _content(channel: str, texts: dict) -> dict:
    content = {}
    for language, (text, subject) in texts.items():
        if channel == "sms":
            content[language] = {"text": text}
        elif channel == "email":
            unsubscribe = UNSUB_ZH if language == "zh-hans" else UNSUB_EN
            content[language] = {"subject": subject, "html": f"<p>{text}</p>{unsubscribe}", "text": text}
        elif channel == "wechat":
            content[language] = {
                "template_id": "DEMO_WINBACK",
                "kind": "subscribe",
                "page": "pages/coupons/index",
                "data": {"thing1": WECHAT_TITLE[language], "character_string2": CODE, "date3": UNTIL},
            }
    return content


def winback_templates_ensure() -> None:
    """The three templates (each code on its own channel, with `<code>.<channel>` variants for the others),
    through template_save like any staff edit; idempotent."""
    from campaigns.models import MessageTemplate
    from campaigns.services.templates import template_save

    for code, (name, own, texts) in TEXTS.items():
        for channel in ("sms", "wechat", "email"):
            template_code = code if channel == own else f"{code}.{channel}"
            template = MessageTemplate.objects.filter(code=template_code).first() or MessageTemplate(
                code=template_code, channel=channel
            )
            template.name = f"{name} · {channel}"
            template.purpose = "marketing"
            template_save(template=template, content=_content(channel, texts))


def _node(node_id: str, node_type: str, x: int, **config) -> dict:
    return {"id": node_id, "type": node_type, "config": config, "position": {"x": x, "y": 0}}


def winback_graph() -> dict:
    nodes = [
        _node("entry", "entry", 0, trigger={"kind": "manual"}),
        _node("day0", "send_message", 200, template="winback_day0", channel="best", on_cap="defer"),
        _node("wait7", "wait", 400, mode="duration", duration={"value": 7, "unit": "days"}),
        _node("day7", "send_message", 600, template="winback_day7", channel="best", on_cap="drop"),
        _node("wait14", "wait", 800, mode="duration", duration={"value": 7, "unit": "days"}),
        _node("day14", "send_message", 1000, template="winback_day14", channel="best", on_cap="drop"),
        _node("exit", "exit", 1200),
    ]
    order = [n["id"] for n in nodes]
    edges = [
        {"id": f"e-{a}-{b}", "source": a, "source_handle": "next", "target": b}
        for a, b in zip(order, order[1:], strict=False)
    ]
    return {"schema": 1, "nodes": nodes, "edges": edges}


WINBACK_SETTINGS = {
    # The programme's cooldown decides when a customer may be selected again; the journey only keeps a
    # customer from being in it twice at once.
    "re_entry": {"mode": "always"},
    "goal": {"event_type": "order_placed"},
    # The programme draws its own holdout (by run and customer); the journey must not draw a second.
    "holdout_percent": 0,
    "priority": 10,
    "ends_at": None,
}


def winback_journey_version(*, programme: WinbackProgramme, now: datetime) -> JourneyVersion:
    """The published version the programme's treated enter: its own journey's, or the ready-made
    journey's, built and published the first time and then set on the programme."""
    if programme.journey_id:
        journey = Journey.objects.select_related("current_version").get(pk=programme.journey_id)
        if journey.status != JourneyStatus.PUBLISHED or journey.current_version is None:
            raise ValueError(f"the win-back journey {journey.pk} is not published")
        return journey.current_version
    with transaction.atomic():
        winback_templates_ensure()
        journey = Journey.objects.filter(name=JOURNEY_NAME, status=JourneyStatus.PUBLISHED).first()
        if journey is None:
            journey = journey_create(
                name=JOURNEY_NAME,
                description="你还记得吗? day 0 coupon, day 7 reminder, day 14 last chance; leaves on an order.",
                graph=winback_graph(),
                settings=WINBACK_SETTINGS,
                now=now,
            )
            journey_publish(journey=journey, now=now)
            journey.refresh_from_db()
        WinbackProgramme.objects.filter(pk=programme.pk).update(journey=journey)
        programme.journey = journey
    return journey.current_version
