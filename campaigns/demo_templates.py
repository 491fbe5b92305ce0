"""The demo's message templates: every channel in Chinese and English for order shipped, points earned,
birthday wish, the 你还记得吗? win-back with a coupon, and points expiring. Seeded by
`manage.py campaigns_seed_templates` (make run calls it), through template_save like any staff edit."""

from __future__ import annotations

from decimal import Decimal

from django.db import transaction

from campaigns.models import MessageTemplate
from campaigns.services.templates import template_save
from loyalty.models import CouponProgramme

NAME_ZH = "{{ customer.name | default('亲爱的会员') }}"
NAME_EN = "{{ customer.name | default('dear member') }}"
SITE = "{{ links.site }}"
UNSUB_ZH = (
    '<p style="color:#888;font-size:12px">不想再收到此类邮件？<a href="{{ links.unsubscribe }}">退订</a></p>'
)
UNSUB_EN = '<p style="color:#888;font-size:12px">Don\'t want these emails? <a href="{{ links.unsubscribe }}">Unsubscribe</a></p>'


def _email(subject, lines, cta_url, cta, unsubscribe):
    html = "\n".join(f"<p>{line}</p>" for line in lines)
    html = f'<div style="font-family:sans-serif;max-width:560px">\n{html}\n<p><a href="{cta_url}">{cta}</a></p>\n{unsubscribe}\n</div>'
    text = "\n".join(lines) + f"\n\n{cta}: {cta_url}"
    return {"subject": subject, "html": html, "text": text}


# code -> (name, purpose, coupon, {channel: {language: fields}})
DEMO = {
    "order_shipped": (
        "订单已发货 Order shipped",
        "transactional",
        False,
        {
            "email": {
                "zh-hans": _email(
                    "您的订单 {{ data.order_id }} 已发货",
                    [
                        f"{NAME_ZH}，您好：",
                        "您的订单 {{ data.order_id }} 已由 {{ data.carrier | default('快递') }} 发出，"
                        "运单号 {{ data.tracking_no | default('—') }}。",
                        "{% if loyalty.member %}本单完成后可获得积分，当前积分 {{ loyalty.balance }}。{% endif %}",
                    ],
                    f"{SITE}/member/",
                    "查看订单",
                    "",
                ),
                "en": _email(
                    "Your order {{ data.order_id }} is on its way",
                    [
                        f"Hello {NAME_EN},",
                        "Your order {{ data.order_id }} has shipped with {{ data.carrier | default('our courier') }}, "
                        "tracking number {{ data.tracking_no | default('—') }}.",
                        "{% if loyalty.member %}Your points balance: {{ loyalty.balance }}.{% endif %}",
                    ],
                    f"{SITE}/member/",
                    "See your order",
                    "",
                ),
            },
            "sms": {
                "zh-hans": {
                    "text": f"【母婴优选】{NAME_ZH}，您的订单{{{{ data.order_id }}}}已发货，运单号{{{{ data.tracking_no | default('—') }}}}。"
                },
                "en": {
                    "text": "Your order {{ data.order_id }} has shipped. Tracking: {{ data.tracking_no | default('—') }}."
                },
            },
            "wechat": {
                "zh-hans": {
                    "template_id": "DEMO_ORDER_SHIPPED",
                    "kind": "subscribe",
                    "page": "pages/order/detail?id={{ data.order_id }}",
                    "data": {
                        "character_string1": "{{ data.order_id }}",
                        "thing2": "{{ data.carrier | default('快递') }}",
                        "character_string3": "{{ data.tracking_no | default('—') }}",
                    },
                },
                "en": {
                    "template_id": "DEMO_ORDER_SHIPPED",
                    "kind": "subscribe",
                    "page": "pages/order/detail?id={{ data.order_id }}",
                    "data": {
                        "character_string1": "{{ data.order_id }}",
                        "thing2": "{{ data.carrier | default('Courier') }}",
                        "character_string3": "{{ data.tracking_no | default('—') }}",
                    },
                },
            },
            "push": {
                "zh-hans": {"title": "订单已发货", "body": "订单 {{ data.order_id }} 已发出，点击查看物流。"},
                "en": {
                    "title": "Order shipped",
                    "body": "Order {{ data.order_id }} is on its way. Tap to track it.",
                },
            },
        },
    ),
    "points_earned": (
        "积分到账 Points earned",
        "transactional",
        False,
        {
            "email": {
                "zh-hans": _email(
                    "{{ data.points | default('') }} 积分已到账",
                    [
                        f"{NAME_ZH}，您好：",
                        "您获得了 {{ data.points | default('新的') }} 积分，当前可用积分 {{ loyalty.balance | default(0) }}。",
                        "{% if loyalty.tier %}您的会员等级：{{ loyalty.tier }}。{% endif %}",
                    ],
                    f"{SITE}/member/",
                    "查看积分",
                    "",
                ),
                "en": _email(
                    "{{ data.points | default('New') }} points added",
                    [
                        f"Hello {NAME_EN},",
                        "You earned {{ data.points | default('new') }} points; your balance is {{ loyalty.balance | default(0) }}.",
                        "{% if loyalty.tier %}Your tier: {{ loyalty.tier }}.{% endif %}",
                    ],
                    f"{SITE}/member/",
                    "See your points",
                    "",
                ),
            },
            "sms": {
                "zh-hans": {
                    "text": f"【母婴优选】{NAME_ZH}，{{{{ data.points | default('新') }}}}积分已到账，当前积分{{{{ loyalty.balance | default(0) }}}}。"
                },
                "en": {
                    "text": "{{ data.points | default('New') }} points added. Balance: {{ loyalty.balance | default(0) }}."
                },
            },
            "wechat": {
                "zh-hans": {
                    "template_id": "DEMO_POINTS_EARNED",
                    "kind": "subscribe",
                    "page": "pages/member/points",
                    "data": {
                        "number1": "{{ data.points | default(0) }}",
                        "number2": "{{ loyalty.balance | default(0) }}",
                        "thing3": "感谢您的支持",
                    },
                },
                "en": {
                    "template_id": "DEMO_POINTS_EARNED",
                    "kind": "subscribe",
                    "page": "pages/member/points",
                    "data": {
                        "number1": "{{ data.points | default(0) }}",
                        "number2": "{{ loyalty.balance | default(0) }}",
                        "thing3": "Thank you",
                    },
                },
            },
            "push": {
                "zh-hans": {
                    "title": "积分到账",
                    "body": "{{ data.points | default('新') }} 积分已到账，当前 {{ loyalty.balance | default(0) }} 积分。",
                },
                "en": {
                    "title": "Points added",
                    "body": "{{ data.points | default('New') }} points added; balance {{ loyalty.balance | default(0) }}.",
                },
            },
        },
    ),
    "birthday_wish": (
        "生日快乐 Birthday wish",
        "marketing",
        False,
        {
            "email": {
                "zh-hans": _email(
                    f"生日快乐，{NAME_ZH}！",
                    [
                        f"{NAME_ZH}，生日快乐！🎂",
                        "感谢一路相伴。{% if loyalty.tier %}作为{{ loyalty.tier }}会员，{% endif %}生日礼已放入您的账户。",
                    ],
                    f"{SITE}/member/",
                    "去看看",
                    UNSUB_ZH,
                ),
                "en": _email(
                    f"Happy birthday, {NAME_EN}!",
                    [
                        f"Happy birthday, {NAME_EN}! 🎂",
                        "Thank you for being with us.{% if loyalty.tier %} As a {{ loyalty.tier }} member,{% endif %} your birthday gift is in your account.",
                    ],
                    f"{SITE}/member/",
                    "Have a look",
                    UNSUB_EN,
                ),
            },
            "sms": {
                "zh-hans": {
                    "text": f"【母婴优选】{NAME_ZH}，生日快乐！生日礼已放入您的账户，祝您和宝宝幸福安康。"
                },
                "en": {"text": f"Happy birthday, {NAME_EN}! Your birthday gift is waiting in your account."},
            },
            "wechat": {
                "zh-hans": {
                    "template_id": "DEMO_BIRTHDAY",
                    "kind": "template",
                    "url": f"{SITE}/member/",
                    "data": {
                        "first": f"{NAME_ZH}，生日快乐！",
                        "keyword1": "生日礼",
                        "remark": "祝您和宝宝幸福安康",
                    },
                },
                "en": {
                    "template_id": "DEMO_BIRTHDAY",
                    "kind": "template",
                    "url": f"{SITE}/member/",
                    "data": {
                        "first": f"Happy birthday, {NAME_EN}!",
                        "keyword1": "Birthday gift",
                        "remark": "Best wishes",
                    },
                },
            },
            "push": {
                "zh-hans": {"title": "生日快乐 🎂", "body": f"{NAME_ZH}，生日礼已放入您的账户。"},
                "en": {
                    "title": "Happy birthday 🎂",
                    "body": f"{NAME_EN}, your birthday gift is in your account.",
                },
            },
        },
    ),
    "winback_miss_you": (
        "你还记得吗? Win-back with a coupon",
        "marketing",
        True,
        {
            "email": {
                "zh-hans": _email(
                    f"你还记得吗？{NAME_ZH}，送您一张 {{{{ coupon.discount }}}} 元券",
                    [
                        f"{NAME_ZH}，好久不见！你还记得吗？",
                        "为欢迎您回来，送您一张优惠券：<strong>{{ coupon.code_display }}</strong>，"
                        "{% if coupon.valid_until %}{{ coupon.valid_until | date('%Y年%m月%d日') }}前有效。{% endif %}",
                        "{% if recommendations %}为您挑选：{% for p in recommendations %}{{ p.name }}{% if not loop.last %}、{% endif %}{% endfor %}{% endif %}",
                    ],
                    f"{SITE}/member/",
                    "回来逛逛",
                    UNSUB_ZH,
                ),
                "en": _email(
                    f"Do you remember us, {NAME_EN}? A {{{{ coupon.discount }}}} coupon for you",
                    [
                        f"{NAME_EN}, it has been a while!",
                        "To welcome you back, here is a coupon: <strong>{{ coupon.code_display }}</strong>"
                        "{% if coupon.valid_until %}, valid until {{ coupon.valid_until }}{% endif %}.",
                        "{% if recommendations %}Picked for you: {{ recommendations | map(attribute='name') | join(', ') }}{% endif %}",
                    ],
                    f"{SITE}/member/",
                    "Come back and shop",
                    UNSUB_EN,
                ),
            },
            "sms": {
                "zh-hans": {
                    "text": f"【母婴优选】你还记得吗？{NAME_ZH}，送您{{{{ coupon.discount }}}}元券{{{{ coupon.code }}}}，欢迎回来！"
                },
                "en": {
                    "text": "Do you remember us? Here is a {{ coupon.discount }} coupon: {{ coupon.code }}. Welcome back!"
                },
            },
            "wechat": {
                "zh-hans": {
                    "template_id": "DEMO_WINBACK",
                    "kind": "subscribe",
                    "page": "pages/coupons/index",
                    "data": {
                        "thing1": "你还记得吗？送您回归礼券",
                        "character_string2": "{{ coupon.code }}",
                        "date3": "{{ coupon.valid_until }}",
                    },
                },
                "en": {
                    "template_id": "DEMO_WINBACK",
                    "kind": "subscribe",
                    "page": "pages/coupons/index",
                    "data": {
                        "thing1": "Welcome-back coupon",
                        "character_string2": "{{ coupon.code }}",
                        "date3": "{{ coupon.valid_until }}",
                    },
                },
            },
            "push": {
                "zh-hans": {
                    "title": "你还记得吗？",
                    "body": "送您 {{ coupon.discount }} 元回归礼券：{{ coupon.code_display }}",
                },
                "en": {
                    "title": "Do you remember us?",
                    "body": "A {{ coupon.discount }} welcome-back coupon: {{ coupon.code_display }}",
                },
            },
        },
    ),
    "points_expiring": (
        "积分即将过期 Points expiring",
        "transactional",
        False,
        {
            "email": {
                "zh-hans": _email(
                    "您有 {{ loyalty.expiring_points | default(0) }} 积分即将过期",
                    [
                        f"{NAME_ZH}，您好：",
                        "您有 {{ loyalty.expiring_points | default(0) }} 积分将于 "
                        "{{ loyalty.expiring_last_day | date('%Y年%m月%d日') }} 后过期，当前共 {{ loyalty.balance | default(0) }} 积分。",
                        "快去兑换心仪的礼品吧。",
                    ],
                    f"{SITE}/member/",
                    "去兑换",
                    "",
                ),
                "en": _email(
                    "{{ loyalty.expiring_points | default(0) }} of your points expire soon",
                    [
                        f"Hello {NAME_EN},",
                        "{{ loyalty.expiring_points | default(0) }} points can be spent until {{ loyalty.expiring_last_day }}; "
                        "your balance is {{ loyalty.balance | default(0) }}.",
                        "Treat yourself to a reward before they go.",
                    ],
                    f"{SITE}/member/",
                    "Redeem now",
                    "",
                ),
            },
            "sms": {
                "zh-hans": {
                    "text": f"【母婴优选】{NAME_ZH}，您有{{{{ loyalty.expiring_points | default(0) }}}}积分将于{{{{ loyalty.expiring_last_day | date('%m月%d日') }}}}后过期，请尽快使用。"
                },
                "en": {
                    "text": "{{ loyalty.expiring_points | default(0) }} points expire after {{ loyalty.expiring_last_day }}. Use them soon!"
                },
            },
            "wechat": {
                "zh-hans": {
                    "template_id": "DEMO_POINTS_EXPIRING",
                    "kind": "subscribe",
                    "page": "pages/member/points",
                    "data": {
                        "number1": "{{ loyalty.expiring_points | default(0) }}",
                        "date2": "{{ loyalty.expiring_last_day }}",
                        "thing3": "积分即将过期，快去兑换",
                    },
                },
                "en": {
                    "template_id": "DEMO_POINTS_EXPIRING",
                    "kind": "subscribe",
                    "page": "pages/member/points",
                    "data": {
                        "number1": "{{ loyalty.expiring_points | default(0) }}",
                        "date2": "{{ loyalty.expiring_last_day }}",
                        "thing3": "Points expire soon",
                    },
                },
            },
            "push": {
                "zh-hans": {
                    "title": "积分即将过期",
                    "body": "{{ loyalty.expiring_points | default(0) }} 积分将于 {{ loyalty.expiring_last_day }} 后过期。",
                },
                "en": {
                    "title": "Points expiring",
                    "body": "{{ loyalty.expiring_points | default(0) }} points expire after {{ loyalty.expiring_last_day }}.",
                },
            },
        },
    ),
}
CHANNEL_NAMES = {"email": "邮件 Email", "sms": "短信 SMS", "wechat": "微信 WeChat", "push": "推送 Push"}
WINBACK_PROGRAMME = "回归礼券 ¥30 Win-back"


def winback_programme() -> CouponProgramme:
    programme = CouponProgramme.objects.filter(name=WINBACK_PROGRAMME).first()
    return programme or CouponProgramme.objects.create(
        name=WINBACK_PROGRAMME,
        description="你还记得吗? 回归礼券，发给沉睡客户 / the win-back coupon for dormant customers",
        discount_kind=CouponProgramme.DiscountKind.AMOUNT,
        discount_value=Decimal("30.00"),
        min_spend=Decimal("99.00"),
        uses_per_code=1,
        valid_days_after_issue=30,
    )


@transaction.atomic
def demo_templates_seed() -> tuple[int, int]:
    """Create or update the demo templates (codes `<subject>.<channel>`); (templates, new versions).
    Idempotent: a second run finds the same content and makes no version."""
    programme = None
    templates = versions = 0
    for subject, (name, purpose, coupon, channels) in DEMO.items():
        for channel, content in channels.items():
            code = f"{subject}.{channel}"
            template = MessageTemplate.objects.filter(code=code).first() or MessageTemplate(
                code=code, channel=channel
            )
            template.name = f"{name} · {CHANNEL_NAMES[channel]}"
            template.purpose = purpose
            if coupon:
                programme = programme or winback_programme()
                template.coupon_programme = programme
            saved = template_save(template=template, content=content)
            templates += 1
            versions += saved.created_version
    return templates, versions
