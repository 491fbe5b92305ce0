"""Dormant customers with metrics and consent, made in bulk for the win-back tests."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from crm.models import Consent, Customer, CustomerIdentity, CustomerMetrics
from journeys.models import BudgetKind, WinbackOffer, WinbackProgramme


def morning() -> datetime:
    """Today at 10:00 in Asia/Shanghai (02:00 UTC): an hour later is still the same business night, and
    day 0's message is outside quiet hours."""
    from django.utils import timezone

    return timezone.now().replace(hour=2, minute=0, second=0, microsecond=0)


def dormant_customers(rows: list[dict], *, now: datetime, channel: str = "sms") -> list[Customer]:
    """One customer per row: {"spend": order value, "p_alive", "cycle", "days", "tier", "channel"}; each
    has an opted-in address on its channel ("none": no consent at all)."""
    customers = Customer.objects.bulk_create(
        [
            Customer(
                name=f"沉睡客户{i}",
                phone=f"+86138{i:08d}",
                email=f"dormant{i}@example.com",
                created_at=now,
            )
            for i, _row in enumerate(rows)
        ]
    )
    metrics, consents, identities = [], [], []
    for customer, row in zip(customers, rows, strict=True):
        metrics.append(
            CustomerMetrics(
                customer=customer,
                as_of=now.date(),
                computed_at=now,
                order_count=row.get("orders", 1),
                total_value=Decimal(str(row.get("spend", 100))),
                average_order_value=Decimal(str(row.get("spend", 100))),
                purchase_cycle_days=row.get("cycle", 30.0),
                days_since_last_order=row.get("days", 200),
                lifecycle_stage=row.get("stage", "dormant"),
                stage_since=now.date(),
                p_alive=row.get("p_alive", 0.3),
                value_tier=row.get("tier", "high"),
            )
        )
        wanted = row.get("channel", channel)
        if wanted != "none":
            consents.append(Consent(customer=customer, channel=wanted, status="opted_in", changed_at=now))
            if wanted == "wechat":
                identities.append(
                    CustomerIdentity(customer=customer, kind="wechat_openid", value=f"openid-{customer.pk}")
                )
    CustomerMetrics.objects.bulk_create(metrics, batch_size=5000)
    Consent.objects.bulk_create(consents, batch_size=5000)
    CustomerIdentity.objects.bulk_create(identities, batch_size=5000)
    return customers


def programme_make(**fields) -> WinbackProgramme:
    offers = fields.pop("offers", None)
    defaults = {
        "name": "沉睡客户唤醒 Win-back",
        "value_tiers": [],
        "budget_kind": BudgetKind.OFFERS,
        "budget_offers": 1000,
        "holdout_percent": 10,
        "cycles_without_order": Decimal("2.5"),
        "max_p_alive": 0.9,
        "reactivation_days": 30,
    }
    defaults.update(fields)
    programme = WinbackProgramme.objects.create(**defaults)
    for tier, offer in (offers or {}).items():
        WinbackOffer.objects.create(programme=programme, value_tier=tier, **offer)
    return programme


def coupon_programme_make():
    from loyalty.models import CouponProgramme

    return CouponProgramme.objects.create(
        name="回归礼券 ¥30",
        discount_kind=CouponProgramme.DiscountKind.AMOUNT,
        discount_value=Decimal("30.00"),
        min_spend=Decimal("99.00"),
        uses_per_code=1,
        valid_days_after_issue=30,
    )
