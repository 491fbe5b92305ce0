import os
from datetime import datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

from django.core.management.base import BaseCommand
from django.db import transaction
from django.db.models import Min
from django.utils import timezone
from django.utils.translation import gettext as _

from crm.models import Customer, Order
from loyalty.models import (
    CouponProgramme,
    EarnRule,
    MemberLogin,
    ProgrammeSettings,
    Promotion,
    Reward,
    Tier,
)
from loyalty.services.accrual import accrual_sweep, events_process_all
from loyalty.services.lifecycle import points_expire_due, points_release_due
from loyalty.services.members import member_login_create

SHANGHAI = ZoneInfo("Asia/Shanghai")

TIERS = [
    # code, name, rank, spend threshold (CNY, rolling 12 months), earn multiplier, birthday gift, free shipping, exclusive
    ("member", "会员 Member", 0, "0", "1.00", 0, False, False),
    ("silver", "银卡 Silver", 1, "2000", "1.20", 100, False, False),
    ("gold", "金卡 Gold", 2, "8000", "1.50", 300, True, False),
    ("platinum", "铂金 Platinum", 3, "20000", "2.00", 800, True, True),
]

BONUSES = [
    # name, event, points, cap per day, cap per member
    ("注册礼 Sign-up bonus", "signup", 100, None, 100),
    ("生日礼 Birthday bonus", "birthday", 200, None, None),
    ("首单礼 First order bonus", "first_order", 50, None, 50),
    ("评价奖励 Review bonus", "review", 20, 60, None),
    ("分享奖励 Social share bonus", "social_share", 10, 30, None),
    ("推荐人奖励 Referral (referrer)", "referral_referrer", 300, None, 3000),
    ("被推荐人奖励 Referral (referee)", "referral_referee", 100, None, 100),
]

REWARDS = [
    # name, points price, discount (CNY off), minimum spend, stock, per-member limit, lowest tier
    ("满199减20元券 CNY 20 off 199", 500, "20", "199", None, None, None),
    ("满399减50元券 CNY 50 off 399", 1200, "50", "399", 5000, 3, None),
    ("你还记得吗? 回归专享 CNY 100 off 599 (welcome back)", 2000, "100", "599", 1000, 1, "silver"),
    ("金卡专享 CNY 300 off 1,299 (Gold and above)", 5000, "300", "1299", 200, 1, "gold"),
]

# The demo member whose portal login make run prints: the customer with an email and the most points.
DEMO_MEMBER_PASSWORD = "member-demo-2026"


class Command(BaseCommand):
    help = _(
        "Demo loyalty programme (tiers, 1 point per CNY, Double 11, bonuses) and points for the demo orders. Idempotent."
    )

    def handle(self, *args, **options):
        now = timezone.now()
        with transaction.atomic():
            ProgrammeSettings.objects.update_or_create(
                pk=1,
                defaults={
                    "name": "会员积分 Loyalty",
                    "currency": "CNY",
                    "time_zone": "Asia/Shanghai",
                    "return_window_days": 15,
                    "expiry_policy": "end_of_following_year",
                    "tier_basis": "spend",
                    "tier_window_months": 12,
                    "tier_review_months": 12,
                    "downgrade_grace_days": 30,
                },
            )
            for code, name, rank, spend, mult, gift, shipping, exclusive in TIERS:
                Tier.objects.update_or_create(
                    code=code,
                    defaults={
                        "name": name,
                        "rank": rank,
                        "threshold_spend": Decimal(spend),
                        "threshold_points": int(Decimal(spend)),
                        "earn_multiplier": Decimal(mult),
                        "birthday_gift_points": gift,
                        "free_shipping": shipping,
                        "exclusive_rewards": exclusive,
                    },
                )
            EarnRule.objects.get_or_create(
                name="每消费1元得1分 1 point per CNY",
                defaults={"kind": "base", "points_per_unit": Decimal("1"), "currency": "CNY"},
            )
            EarnRule.objects.get_or_create(
                name="母婴奶粉双倍 Infant formula ×2",
                defaults={"kind": "category", "category": "formula", "multiplier": Decimal("2")},
            )
            for name, event, points, cap_day, cap_member in BONUSES:
                EarnRule.objects.get_or_create(
                    name=name,
                    defaults={
                        "kind": "event",
                        "event": event,
                        "bonus_points": points,
                        "cap_per_day": cap_day,
                        "cap_per_customer": cap_member,
                    },
                )
            for year in (now.year - 1, now.year):
                Promotion.objects.get_or_create(
                    name=f"双11 Double 11 {year}",
                    defaults={
                        "multiplier": Decimal("2"),
                        "starts_at": datetime(year, 11, 11, tzinfo=SHANGHAI),
                        "ends_at": datetime(year, 11, 12, tzinfo=SHANGHAI),
                    },
                )
            self._rewards()
        events = events_process_all(now=now)
        first = Order.objects.aggregate(first=Min("placed_at"))["first"]
        swept = accrual_sweep(since=first, now=now) if first else None
        released = points_release_due(now=now)
        expired = points_expire_due(now=now)
        self.stdout.write(
            _(
                "Loyalty demo ready: %(events)d events read, %(orders)d orders swept, %(released)d points released, %(expired)d expired."
            )
            % {
                "events": events,
                "orders": swept.orders if swept else 0,
                "released": released,
                "expired": expired,
            }
        )
        login = self._demo_member()
        if login is not None:
            self.stdout.write(
                _(
                    "Member portal: http://127.0.0.1:%(port)s/member/  email: %(email)s  password: %(password)s"
                )
                % {
                    "port": os.environ.get("PORT", "8000"),
                    "email": login.email,
                    "password": DEMO_MEMBER_PASSWORD,
                }
            )

    def _rewards(self) -> None:
        tiers = {t.code: t for t in Tier.objects.all()}
        for order, (name, price, off, min_spend, stock, limit, tier) in enumerate(REWARDS):
            programme, _created = CouponProgramme.objects.get_or_create(
                name=name,
                defaults={
                    "discount_kind": CouponProgramme.DiscountKind.AMOUNT,
                    "discount_value": Decimal(off),
                    "min_spend": Decimal(min_spend),
                    "valid_days_after_issue": 30,
                },
            )
            Reward.objects.get_or_create(
                name=name,
                defaults={
                    "points_price": price,
                    "coupon_programme": programme,
                    "stock": stock,
                    "per_member_limit": limit,
                    "min_tier": tiers.get(tier) if tier else None,
                    "sort_order": order,
                },
            )

    def _demo_member(self) -> MemberLogin | None:
        existing = MemberLogin.objects.select_related("customer").order_by("id").first()
        if existing is not None:
            return existing
        customer = (
            Customer.objects.filter(erased_at__isnull=True, loyalty_account__isnull=False)
            .exclude(email="")
            .order_by("-loyalty_account__available", "id")
            .first()
        )
        if customer is None:
            return None
        return member_login_create(customer=customer, email=customer.email, password=DEMO_MEMBER_PASSWORD)
