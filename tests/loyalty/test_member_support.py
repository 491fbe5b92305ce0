"""Builders and a URL configuration shared by the rewards, coupons and member tests (no tests in here).

`urlpatterns` is the project's plus the member portal and API, for as long as config/urls.py does not
include them itself: test modules use it with `pytest.mark.urls(MEMBER_URLS)`.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.urls import include, path
from django.utils import timezone

from config.urls import urlpatterns as project_urlpatterns
from crm.api.authentication import hash_secret
from crm.models import ApiKey
from loyalty.models import ProgrammeSettings, Tier
from loyalty.models.rewards import CouponProgramme, Reward
from loyalty.services.ledger import account_for_customer, points_adjust
from loyalty.services.members import member_login_create, member_token_create, ruleset_cache_clear
from tests.factories import CustomerFactory

MEMBER_URLS = "tests.loyalty.test_member_support"
PASSWORD = "plum-blossom-2026"


def _included(module: str) -> bool:
    return any(
        getattr(getattr(p, "urlconf_name", None), "__name__", None) == module for p in project_urlpatterns
    )


urlpatterns = [
    *([] if _included("loyalty.urls") else [path("member/", include("loyalty.urls"))]),
    *([] if _included("loyalty.api.urls") else [path("api/v1/", include("loyalty.api.urls"))]),
    *project_urlpatterns,
]


def tiers_make() -> dict[str, Tier]:
    ProgrammeSettings.objects.update_or_create(pk=1, defaults={"tier_basis": "spend"})
    tiers = {}
    for rank, (code, name, spend) in enumerate(
        [("member", "会员 Member", "0"), ("silver", "银卡 Silver", "1000"), ("gold", "金卡 Gold", "5000")]
    ):
        tiers[code] = Tier.objects.create(code=code, name=name, rank=rank, threshold_spend=Decimal(spend))
    return tiers


def member_make(*, points: int = 0, tier: Tier | None = None, email: str | None = None, password=PASSWORD):
    """A customer with a member login, a loyalty account holding `points` available, at `tier`."""
    customer = CustomerFactory()
    login = member_login_create(customer=customer, email=email or customer.email, password=password)
    account = account_for_customer(customer=customer)
    if tier is not None:
        account.tier = tier
        account.save(update_fields=["tier"])
    if points:
        points_adjust(
            account=account, points=points, idempotency_key=f"test-grant-{customer.pk}", reason="test grant"
        )
    return login


def programme_make(**overrides) -> CouponProgramme:
    fields = {
        "name": "¥20 off 满100减20",
        "discount_kind": "amount",
        "discount_value": Decimal("20.00"),
        "min_spend": Decimal("100.00"),
        "uses_per_code": 1,
        "valid_days_after_issue": 30,
    }
    fields.update(overrides)
    return CouponProgramme.objects.create(**fields)


def reward_make(**overrides) -> Reward:
    fields = {"name": "满100减20券 ¥20 voucher", "points_price": 500}
    fields.update(overrides)
    if "coupon_programme" not in fields:
        fields["coupon_programme"] = programme_make()
    return Reward.objects.create(**fields)


def store_key_make(scopes=("coupons:redeem",)) -> str:
    """An API key with `scopes`, made directly: crm's api_key_create only knows crm's scopes."""
    secret = "s3cret-" + timezone.now().strftime("%f")
    key = ApiKey.objects.create(
        name="POS", prefix=f"pos{ApiKey.objects.count()}", key_hash=hash_secret(secret), scopes=list(scopes)
    )
    return f"Api-Key {key.prefix}.{secret}"


def member_token(login) -> str:
    return "Bearer " + member_token_create(customer=login.customer, name="test")[1]


def an_hour_ago():
    return timezone.now() - timedelta(hours=1)


@pytest.fixture(autouse=True)
def member_test_setup(settings):
    """Fast password hashing (PBKDF2 at Django's cost makes each member a few hundred ms) and no programme
    rules cached from an earlier test (tiers are made per test)."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    ruleset_cache_clear()
    yield
    ruleset_cache_clear()
