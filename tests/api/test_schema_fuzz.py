"""Schemathesis against the live server: every operation of the published schema (/api/schema/), with
valid credentials, answers as the schema says (status code documented, body and content type as declared)
and never with a 5xx.

Two tests, one per half of the schema: the store/integration operations (API key with every scope) and
the member operations (bearer token of a member). Each loads the schema from the live server and runs a
bounded, derandomized number of examples per operation (positive and negative data), so a failure
reproduces run after run. The data the operations need is seeded by the fixtures; an operation that would
spoil it for the next examples (signing the member's token out) gets its own credentials per example.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal

import hypothesis
import pytest
import schemathesis
from django.core.cache import cache
from django.utils import timezone
from hypothesis import HealthCheck, Phase, given
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from crm.api.authentication import api_key_create
from crm.models import ApiKey
from loyalty.services.coupons import coupon_issue
from loyalty.services.members import member_token_create, ruleset_cache_clear
from loyalty.services.rewards import reward_redeem
from tests.campaigns.tracking_support import message_make, opted_in, template_make
from tests.factories import CustomerFactory, OrderFactory
from tests.loyalty.test_member_support import (
    PASSWORD,
    member_make,
    programme_make,
    reward_make,
    tiers_make,
)

EXAMPLES_PER_OPERATION = 30

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]

# The schema's own settings for what it generates; how many examples and the seed are Hypothesis's
# (schemathesis' pytest plugin would apply them, but its lazy fixture-loaded schemas do not run on pytest 9).
CONFIG = schemathesis.Config.from_dict({"generation": {"database": "none"}})
HYPOTHESIS_SETTINGS = hypothesis.settings(
    max_examples=EXAMPLES_PER_OPERATION,
    derandomize=True,
    database=None,
    deadline=None,
    phases=[Phase.generate, Phase.shrink],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
)


@pytest.fixture
def fuzz_settings(settings):
    # Fast password hashing for the seeded member, and limits out of the way: the fuzz is to reach the
    # views, not the throttle (whose 429 is documented and tested in tests/loyalty/test_member_api.py).
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {
            "loyalty_member": "100000/min",
            "loyalty_member_write": "100000/min",
            "loyalty_member_sign_in": "100000/min",
            "loyalty_coupon_store": "100000/min",
        },
    }
    cache.clear()
    ruleset_cache_clear()
    yield settings
    cache.clear()
    ruleset_cache_clear()


@dataclass
class FuzzTarget:
    """One half of the schema, the credentials its operations need, and values that reach seeded rows."""

    schema: object
    authorization: Callable[[object], str]
    # operation label -> path parameters and body fields that name a seeded row (a third of the positive
    # examples use them; the rest is generated, and mostly finds nothing).
    pinned: dict[str, dict] = field(default_factory=dict)


def _schema(live_server):
    return schemathesis.openapi.from_url(f"{live_server.url}/api/schema/?format=json", config=CONFIG)


def _recently() -> str:
    return (timezone.now() - timedelta(minutes=1)).isoformat()


@pytest.fixture
def api_key_half(live_server, fuzz_settings):
    customer = CustomerFactory(external_id="C-FUZZ")
    # A total no generated refund amount runs out of quickly, so refunds keep being accepted.
    OrderFactory(
        external_id="TM-FUZZ",
        customer=customer,
        placed_at=timezone.now() - timedelta(days=1),
        total=Decimal("999999999.00"),
    )
    coupon = coupon_issue(programme=programme_make(uses_per_code=None), customer=None)
    opted_in(customer, "sms")
    template_make(code="fuzz_notice", channel="sms", purpose="transactional")
    message = message_make(customer=customer, channel="sms")
    _key, token = api_key_create(name="fuzz", scopes=ApiKey.Scope.values)
    return FuzzTarget(
        schema=_schema(live_server).include(path_regex=r"^/api/v1/(?!me\b)"),
        authorization=lambda case: f"Api-Key {token}",
        pinned={
            "GET /api/v1/customers/{id}/": {"path": {"id": customer.pk}},
            # A time in the sane range, a known customer and currency: generated ones seldom are.
            "POST /api/v1/orders/": {
                "body": {"placed_at": _recently(), "customer": {"external_id": "C-FUZZ"}, "currency": "CNY"}
            },
            "POST /api/v1/orders/{order_external_id}/refunds/": {
                "path": {"order_external_id": "TM-FUZZ"},
                "body": {"refunded_at": _recently(), "amount": "1.00"},
            },
            "POST /api/v1/coupons/validate": {"body": {"code": coupon.code}},
            "POST /api/v1/coupons/redeem": {
                "body": {"code": coupon.code, "order_total": "150.00", "currency": "CNY"}
            },
            "POST /api/v1/messages/": {
                "body": {"customer": {"external_id": "C-FUZZ"}, "template": "fuzz_notice", "channel": "best"}
            },
            "GET /api/v1/messages/{id}/": {"path": {"id": message.pk}},
        },
    )


@pytest.fixture
def member_half(live_server, fuzz_settings):
    tiers_make()
    login = member_make(points=1_000_000)
    reward = reward_make(points_price=10)
    redemption = reward_redeem(customer=login.customer, reward_id=reward.pk, idempotency_key="fuzz-seed-01")
    coupon_issue(programme=programme_make(), customer=login.customer)
    shared = f"Bearer {member_token_create(customer=login.customer, name='fuzz')[1]}"

    def authorization(case) -> str:
        if case.method == "DELETE":  # signing out revokes the token it is sent with: give it its own
            return f"Bearer {member_token_create(customer=login.customer, name='fuzz')[1]}"
        return shared

    return FuzzTarget(
        schema=_schema(live_server).include(path_regex=r"^/api/v1/me\b"),
        authorization=authorization,
        pinned={
            "POST /api/v1/me/token": {"body": {"email": login.email, "password": PASSWORD}},
            "POST /api/v1/me/rewards/{id}/redeem": {"path": {"id": reward.pk}},
            "GET /api/v1/me/redemptions/{id}": {"path": {"id": redemption.redemption.pk}},
        },
    )


def _pin(case, pinned: dict):
    case.path_parameters = {**(case.path_parameters or {}), **pinned.get("path", {})}
    if isinstance(case.body, dict):
        case.body = {**case.body, **pinned.get("body", {})}
    return case


def _operation_test(operation, *, target: FuzzTarget, statuses: dict[str, Counter]):
    """A Hypothesis test of one operation: positive and negative data, every answer checked."""
    positive = operation.as_strategy(GenerationMode.POSITIVE)
    strategies = [positive, operation.as_strategy(GenerationMode.NEGATIVE)]
    pinned = target.pinned.get(operation.label)
    if pinned:
        strategies.append(positive.map(lambda case: _pin(case, pinned)))

    @HYPOTHESIS_SETTINGS
    @given(case=st.one_of(strategies))
    def run(case):
        response = case.call_and_validate(
            headers={"Authorization": target.authorization(case)}, checks=CHECKS
        )
        statuses[operation.label][response.status_code] += 1

    return run


def _details(exc) -> str:
    return "\n".join(f"  - {type(e).__name__}: {e}" for e in getattr(exc, "exceptions", ()))


def _fuzz(target: FuzzTarget) -> dict[str, Counter]:
    """Run every operation of the target and raise once with every failure; the statuses answered per
    operation (how many examples of each)."""
    statuses: dict[str, Counter] = {}
    failures: list[str] = []
    for result in target.schema.get_all_operations():
        operation = result.ok()
        statuses[operation.label] = Counter()
        try:
            _operation_test(operation, target=target, statuses=statuses)()
        # Schemathesis raises a FailureGroup (a BaseExceptionGroup) listing the distinct failures it found.
        except (Exception, BaseExceptionGroup) as exc:  # every operation runs; all failures reported below
            failures.append(f"{operation.label}: {exc}\n{_details(exc)}")
    for label, counts in statuses.items():  # shown with -rP
        print(f"{label}: {sum(counts.values())} examples, statuses {dict(sorted(counts.items()))}")
    assert not failures, "\n\n".join(failures)
    return statuses


def _assert_reached(statuses: dict[str, Counter], target: FuzzTarget, *, operations: int):
    assert len(statuses) == operations, sorted(statuses)
    # The seeded rows are reached: each pinned operation succeeded at least once, so its success answer
    # was checked against the schema too, not only its errors.
    unreached = [label for label in target.pinned if not any(200 <= c < 300 for c in statuses[label])]
    assert not unreached, {label: statuses[label] for label in unreached}


def test_api_key_operations_answer_as_the_schema_says(api_key_half):
    statuses = _fuzz(api_key_half)
    # customers 3, events 1, orders 3, coupons 2, messages 2
    _assert_reached(statuses, api_key_half, operations=11)


def test_member_operations_answer_as_the_schema_says(member_half):
    statuses = _fuzz(member_half)
    _assert_reached(statuses, member_half, operations=10)  # me/...: 8 reads and writes, token 2
