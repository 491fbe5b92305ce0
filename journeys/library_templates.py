"""The message templates the ready-made journeys (journeys/library.py) send, in Chinese and English.

The birthday wish, the 你还记得吗? win-back (its template issues the exclusive coupon) and the points
reminder are campaigns' demo templates (campaigns/demo_templates.py); the ones only journeys send are
here, seeded the same way (through template_save, like any staff edit, so a second run makes no version).
"""

from __future__ import annotations

from django.db import transaction

from campaigns.demo_templates import CHANNEL_NAMES, NAME_EN, NAME_ZH, SITE, UNSUB_EN, UNSUB_ZH, _email
from campaigns.models import MessageTemplate
from campaigns.services.templates import template_save

SIGN = "【母婴优选】"


def _wechat(template_id: str, url: str, zh: tuple[str, str, str], en: tuple[str, str, str]) -> dict:
    def one(first, keyword, remark):
        return {
            "template_id": template_id,
            "kind": "template",
            "url": url,
            "data": {"first": first, "keyword1": keyword, "remark": remark},
        }

    return {"zh-hans": one(*zh), "en": one(*en)}


def _sms(zh: str, en: str) -> dict:
    return {"zh-hans": {"text": f"{SIGN}{zh}"}, "en": {"text": en}}


RECOMMENDED_ZH = (
    "{% for p in recommendations[:3] %}{{ p.name }}{% if not loop.last %}、{% endif %}"
    "{% else %}本季新品{% endfor %}"
)
RECOMMENDED_EN = (
    "{% for p in recommendations[:3] %}{{ p.name }}{% if not loop.last %}, {% endif %}"
    "{% else %}this season's new arrivals{% endfor %}"
)

# code -> (name, purpose, {channel: {language: fields}}); the code is `<subject>.<channel>`.
LIBRARY_TEMPLATES: dict[str, tuple[str, str, dict]] = {
    "welcome.wechat": (
        "欢迎加入 Welcome",
        "marketing",
        _wechat(
            "DEMO_WELCOME",
            f"{SITE}/member/",
            (f"{NAME_ZH}，欢迎加入母婴优选会员！", "新会员礼", "首单即享积分翻倍，点击查看会员权益"),
            (
                f"Welcome, {NAME_EN}!",
                "New member gift",
                "Double points on your first order: see your benefits",
            ),
        ),
    ),
    "welcome_first_order.sms": (
        "首单提醒 First order nudge",
        "marketing",
        _sms(
            f"{NAME_ZH}，您的新会员礼还在等您：首单积分翻倍，快来挑选吧！退订回T",
            f"{NAME_EN}, your new-member gift is waiting: double points on your first order. Reply T to opt out",
        ),
    ),
    "cart_reminder.wechat": (
        "购物车提醒 Cart reminder",
        "marketing",
        _wechat(
            "DEMO_CART",
            f"{SITE}/cart/",
            (f"{NAME_ZH}，您的购物车里还有宝贝", "购物车商品", "库存有限，点击完成下单"),
            (
                f"{NAME_EN}, you left something in your cart",
                "Your cart",
                "Stock is limited: tap to check out",
            ),
        ),
    ),
    "cart_reminder.sms": (
        "购物车提醒 Cart reminder",
        "marketing",
        _sms(
            f"{NAME_ZH}，您加入购物车的商品即将售罄，点击 {SITE}/cart/ 完成下单。退订回T",
            f"{NAME_EN}, the items in your cart are selling out: {SITE}/cart/ Reply T to opt out",
        ),
    ),
    "review_request.wechat": (
        "邀请评价 Review request",
        "marketing",
        _wechat(
            "DEMO_REVIEW",
            f"{SITE}/member/",
            (f"{NAME_ZH}，宝贝用得还满意吗？", "邀请评价", "写下评价可得积分奖励"),
            (f"{NAME_EN}, how do you like your order?", "Review request", "Write a review and earn points"),
        ),
    ),
    "cross_sell.email": (
        "为您推荐 Recommended for you",
        "marketing",
        {
            "zh-hans": _email(
                "为您挑选的好物",
                [f"{NAME_ZH}，您好：", f"根据您的购买记录，我们为您推荐：{RECOMMENDED_ZH}。"],
                f"{SITE}/",
                "去看看",
                UNSUB_ZH,
            ),
            "en": _email(
                "Picked for you",
                [f"Hello {NAME_EN},", f"From what you bought, you may like: {RECOMMENDED_EN}."],
                f"{SITE}/",
                "Have a look",
                UNSUB_EN,
            ),
        },
    ),
    "revisit.sms": (
        "半年回访 Six-month revisit",
        "marketing",
        _sms(
            f"{NAME_ZH}，距您第一次购物已半年，宝宝又长大了！新阶段好物已为您备好：{SITE}/ 退订回T",
            f"{NAME_EN}, it has been six months since your first order: see what fits the next stage {SITE}/ "
            "Reply T to opt out",
        ),
    ),
    "tier_upgrade.wechat": (
        "升级祝贺 Tier upgrade",
        "marketing",
        _wechat(
            "DEMO_TIER_UP",
            f"{SITE}/member/",
            (
                f"恭喜{NAME_ZH}升级为{{{{ loyalty.tier | default('新等级') }}}}会员！",
                "会员升级",
                "更多专属权益已解锁，点击查看",
            ),
            (
                f"Congratulations {NAME_EN}: you are now {{{{ loyalty.tier | default('a higher tier') }}}}!",
                "Tier upgrade",
                "New benefits are unlocked: tap to see them",
            ),
        ),
    ),
}


@transaction.atomic
def library_templates_seed() -> tuple[int, int]:
    """Create or update the ready-made journeys' own templates; (templates, new versions). Idempotent."""
    templates = versions = 0
    for code, (name, purpose, content) in LIBRARY_TEMPLATES.items():
        channel = code.rsplit(".", 1)[1]
        template = MessageTemplate.objects.filter(code=code).first() or MessageTemplate(
            code=code, channel=channel
        )
        template.name = f"{name} · {CHANNEL_NAMES[channel]}"
        template.purpose = purpose
        saved = template_save(template=template, content=content)
        templates += 1
        versions += saved.created_version
    return templates, versions
