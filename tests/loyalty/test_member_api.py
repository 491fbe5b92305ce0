"""The member API: a token per member, the member's own data only, per-member rate limits; and the store's
coupon API behind an API key with the coupons:redeem scope."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.cache import cache
from django.db import connection, transaction
from django.utils import timezone

from loyalty.models import LedgerEntry, LoyaltyAccount, PointLot, ProgrammeSettings
from loyalty.models.rewards import Coupon, CouponRedemption, MemberApiToken, RewardRedemption
from loyalty.selectors import account_summary
from loyalty.services.coupons import coupon_issue
from loyalty.services.ledger import account_for_customer, points_adjust
from loyalty.services.members import (
    _summary_one_statement,
    member_token_check,
    member_token_create,
    ruleset_cached,
)
from loyalty.services.rewards import reward_redeem
from tests.factories import OrderFactory
from tests.loyalty.test_member_support import (
    MEMBER_URLS,
    PASSWORD,
    member_make,
    member_test_setup,  # noqa: F401
    member_token,
    programme_make,
    reward_make,
    store_key_make,
    tiers_make,
)

pytestmark = [pytest.mark.django_db, pytest.mark.urls(MEMBER_URLS)]


@pytest.fixture(autouse=True)
def _fresh_throttles():
    cache.clear()
    yield
    cache.clear()


def test_a_member_exchanges_email_and_password_for_a_token_that_reads_their_points(client):
    tiers_make()
    login = member_make(points=1500)

    response = client.post(
        "/api/v1/me/token",
        {"email": login.email.upper(), "password": PASSWORD},
        content_type="application/json",
    )
    assert response.status_code == 201, response.content
    token = response.json()["token"]

    points = client.get("/api/v1/me/points", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert points.status_code == 200
    body = points.json()
    assert (body["available"], body["pending"], body["tier"]["code"]) == (1500, 0, "member")
    assert body["next_tier"]["code"] == "silver"
    assert body["expiring_soon"]["points"] == 0


def test_wrong_password_gets_401_and_no_token(client):
    login = member_make()

    response = client.post(
        "/api/v1/me/token", {"email": login.email, "password": "nope-nope"}, content_type="application/json"
    )

    assert response.status_code == 401
    assert response.json()["errors"][0]["code"] == "invalid_credentials"


def test_no_token_a_bad_token_and_a_revoked_token_are_all_401(client):
    login = member_make()
    token = member_token(login)

    assert client.get("/api/v1/me/points").status_code == 401
    assert client.get("/api/v1/me/points", HTTP_AUTHORIZATION="Bearer abc.def").status_code == 401
    assert client.delete("/api/v1/me/token", HTTP_AUTHORIZATION=token).status_code == 204
    assert client.get("/api/v1/me/points", HTTP_AUTHORIZATION=token).status_code == 401


def test_a_store_api_key_is_not_a_member_token(client):
    key = store_key_make()

    assert client.get("/api/v1/me/points", HTTP_AUTHORIZATION=key).status_code == 401


def test_a_member_cannot_read_another_members_redemption(client):
    alice, bob = member_make(points=1000), member_make(points=1000)
    reward = reward_make(points_price=100)
    bobs = reward_redeem(customer=bob.customer, reward_id=reward.pk, idempotency_key="bob-1").redemption

    as_alice = client.get(f"/api/v1/me/redemptions/{bobs.pk}", HTTP_AUTHORIZATION=member_token(alice))
    as_bob = client.get(f"/api/v1/me/redemptions/{bobs.pk}", HTTP_AUTHORIZATION=member_token(bob))

    assert as_alice.status_code == 404
    assert as_bob.status_code == 200 and as_bob.json()["coupon"]["code"] == bobs.coupon.code
    alice_coupons = client.get("/api/v1/me/coupons", HTTP_AUTHORIZATION=member_token(alice)).json()["results"]
    assert alice_coupons == []


def test_redeeming_through_the_api_is_idempotent_per_key(client):
    login = member_make(points=1000)
    reward = reward_make(points_price=300, stock=5)
    token = member_token(login)
    url = f"/api/v1/me/rewards/{reward.pk}/redeem"

    first = client.post(
        url, {"idempotency_key": "app-uuid-0001"}, content_type="application/json", HTTP_AUTHORIZATION=token
    )
    again = client.post(
        url, {"idempotency_key": "app-uuid-0001"}, content_type="application/json", HTTP_AUTHORIZATION=token
    )

    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["id"] == again.json()["id"]
    assert RewardRedemption.objects.count() == 1
    assert client.get("/api/v1/me/points", HTTP_AUTHORIZATION=token).json()["available"] == 700


def test_refused_redemptions_name_the_reason(client):
    login = member_make(points=100)
    reward = reward_make(points_price=300)
    token = member_token(login)

    response = client.post(
        f"/api/v1/me/rewards/{reward.pk}/redeem",
        {"idempotency_key": "app-uuid-0002"},
        content_type="application/json",
        HTTP_AUTHORIZATION=token,
    )
    bad_key = client.post(
        f"/api/v1/me/rewards/{reward.pk}/redeem",
        {"idempotency_key": "x"},
        content_type="application/json",
        HTTP_AUTHORIZATION=token,
    )

    assert response.status_code == 409 and response.json()["errors"][0]["code"] == "insufficient_points"
    assert bad_key.status_code == 400 and bad_key.json()["errors"][0]["field"] == "idempotency_key"


def test_rewards_history_and_referral_endpoints(client):
    login = member_make(points=1000)
    reward_make(name="A", points_price=100)
    reward_make(name="B", points_price=5000)
    token = member_token(login)

    rewards = client.get("/api/v1/me/rewards", HTTP_AUTHORIZATION=token).json()
    history = client.get("/api/v1/me/history", HTTP_AUTHORIZATION=token).json()
    referral = client.get("/api/v1/me/referral", HTTP_AUTHORIZATION=token).json()
    me = client.get("/api/v1/me", HTTP_AUTHORIZATION=token).json()

    assert [(r["name"], r["affordable"]) for r in rewards["results"]] == [("A", True), ("B", False)]
    assert [e["points"] for e in history["results"]] == [1000]
    assert referral["link"].endswith(f"/member/join/?ref={referral['code']}") and referral["referred"] == 0
    assert me["id"] == login.customer_id


def test_history_is_cursor_paginated(client):
    login = member_make(points=10)
    account = account_for_customer(customer=login.customer)
    for n in range(25):
        points_adjust(account=account, points=1, idempotency_key=f"h-{n}", reason=f"gift {n}")
    token = member_token(login)

    first = client.get("/api/v1/me/history", HTTP_AUTHORIZATION=token).json()
    second = client.get(first["next"], HTTP_AUTHORIZATION=token).json()

    assert len(first["results"]) == 20 and len(second["results"]) == 6 and second["next"] is None


def test_each_member_is_rate_limited_on_their_own(client, settings):
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"loyalty_member": "3/min"},
    }
    alice, bob = member_make(), member_make()
    alice_token, bob_token = member_token(alice), member_token(bob)

    codes = [client.get("/api/v1/me/points", HTTP_AUTHORIZATION=alice_token).status_code for _ in range(4)]
    bob_code = client.get("/api/v1/me/points", HTTP_AUTHORIZATION=bob_token).status_code

    assert codes == [200, 200, 200, 429]
    assert bob_code == 200


def test_points_endpoint_makes_one_query_once_the_programme_rules_are_cached(
    client, django_assert_num_queries
):
    tiers_make()
    login = member_make(points=500)
    token = member_token(login)
    first = client.get("/api/v1/me/points", HTTP_AUTHORIZATION=token)  # loads the programme rules once

    # token + customer + account, and in the same statement qualifying spend, expiring points, next dates
    with django_assert_num_queries(1):
        again = client.get("/api/v1/me/points", HTTP_AUTHORIZATION=token)
    assert again.status_code == 200
    first_body, again_body = first.json(), again.json()
    for body in (first_body, again_body):  # "until" is 30 days from each request's own now
        body["expiring_soon"].pop("until")
    assert again_body == first_body
    assert again_body["available"] == 500


def test_points_for_a_member_without_an_account_yet_are_made_on_first_read(client):
    """The token's query finds no account: the view falls back to member_summary, which opens one."""
    tiers_make()
    login = member_make()
    token = member_token(login)
    LoyaltyAccount.objects.filter(customer=login.customer).delete()

    response = client.get("/api/v1/me/points", HTTP_AUTHORIZATION=token)

    assert response.status_code == 200, response.content
    assert response.json()["available"] == 0
    assert LoyaltyAccount.objects.filter(customer=login.customer).exists()


# --- Store coupon API ------------------------------------------------------------------------------


def test_store_validates_then_redeems_a_code_once(client):
    coupon = coupon_issue(programme=programme_make(), customer=None)
    key = store_key_make()
    body = {
        "code": coupon.code.lower(),
        "order_total": "150.00",
        "currency": "CNY",
        "order_reference": "POS-9",
    }

    valid = client.post(
        "/api/v1/coupons/validate", body, content_type="application/json", HTTP_AUTHORIZATION=key
    )
    redeemed = client.post(
        "/api/v1/coupons/redeem", body, content_type="application/json", HTTP_AUTHORIZATION=key
    )
    replay = client.post(
        "/api/v1/coupons/redeem", body, content_type="application/json", HTTP_AUTHORIZATION=key
    )
    other = client.post(
        "/api/v1/coupons/redeem",
        {**body, "order_reference": "POS-10"},
        content_type="application/json",
        HTTP_AUTHORIZATION=key,
    )
    after = client.post(
        "/api/v1/coupons/validate", body, content_type="application/json", HTTP_AUTHORIZATION=key
    )

    assert valid.json() == {
        "valid": True,
        "code": coupon.code,
        "discount": "20.00",
        "currency": "CNY",
        "programme": coupon.programme.name,
        "uses_left": 1,
    }
    assert redeemed.status_code == 201 and redeemed.json()["discount"] == "20.00"
    assert replay.status_code == 200 and replay.json()["replayed"] is True
    assert other.status_code == 409 and other.json()["errors"][0]["code"] == "used_up"
    assert after.json()["valid"] is False and after.json()["reason"] == "used_up"
    assert Coupon.objects.get(pk=coupon.pk).uses_count == 1


def test_store_api_needs_the_coupons_scope_and_checks_input(client):
    coupon = coupon_issue(programme=programme_make(), customer=None)
    body = {"code": coupon.code, "order_total": "150.00", "order_reference": "POS-1"}

    no_scope = client.post(
        "/api/v1/coupons/redeem",
        body,
        content_type="application/json",
        HTTP_AUTHORIZATION=store_key_make(scopes=["orders:write"]),
    )
    anonymous = client.post("/api/v1/coupons/redeem", body, content_type="application/json")
    bad = client.post(
        "/api/v1/coupons/redeem",
        {"code": coupon.code, "order_total": "-1", "order_reference": ""},
        content_type="application/json",
        HTTP_AUTHORIZATION=store_key_make(),
    )
    unknown = client.post(
        "/api/v1/coupons/redeem",
        {**body, "code": "ZZZZZZZZZZZZ"},
        content_type="application/json",
        HTTP_AUTHORIZATION=store_key_make(),
    )

    assert no_scope.status_code == 403
    assert anonymous.status_code == 401
    assert bad.status_code == 400
    assert {e["field"] for e in bad.json()["errors"]} == {"order_total", "order_reference"}
    assert unknown.status_code == 404 and unknown.json()["errors"][0]["code"] == "not_found"
    assert Coupon.objects.get(pk=coupon.pk).uses_count == 0


def test_store_can_pin_a_personal_coupon_to_its_owner(client):
    owner = member_make()
    stranger = member_make()
    coupon = coupon_issue(programme=programme_make(), customer=owner.customer)
    key = store_key_make()
    body = {"code": coupon.code, "order_total": "150.00", "order_reference": "POS-1"}

    wrong = client.post(
        "/api/v1/coupons/redeem",
        {**body, "customer_external_id": stranger.customer.external_id},
        content_type="application/json",
        HTTP_AUTHORIZATION=key,
    )
    missing = client.post(
        "/api/v1/coupons/redeem",
        {**body, "customer_external_id": "NOBODY"},
        content_type="application/json",
        HTTP_AUTHORIZATION=key,
    )
    right = client.post(
        "/api/v1/coupons/redeem",
        {**body, "customer_external_id": owner.customer.external_id},
        content_type="application/json",
        HTTP_AUTHORIZATION=key,
    )

    assert wrong.status_code == 409 and wrong.json()["errors"][0]["code"] == "wrong_customer"
    assert missing.status_code == 400 and missing.json()["errors"][0]["field"] == "customer_external_id"
    assert right.status_code == 201
    assert Decimal(right.json()["discount"]) == Decimal("20.00")


def test_a_personal_coupon_needs_its_owner_named_to_be_validated_or_redeemed(client):
    owner = member_make()
    coupon = coupon_issue(programme=programme_make(), customer=owner.customer)
    key = store_key_make()
    body = {"code": coupon.code, "order_total": "150.00", "currency": "CNY", "order_reference": "POS-1"}

    validate = client.post(
        "/api/v1/coupons/validate", body, content_type="application/json", HTTP_AUTHORIZATION=key
    )
    anonymous = client.post(
        "/api/v1/coupons/redeem", body, content_type="application/json", HTTP_AUTHORIZATION=key
    )
    blank = client.post(
        "/api/v1/coupons/redeem",
        {**body, "customer_external_id": ""},
        content_type="application/json",
        HTTP_AUTHORIZATION=key,
    )

    assert validate.status_code == 200
    assert (validate.json()["valid"], validate.json()["reason"]) == (False, "customer_required")
    for refused in (anonymous, blank):
        assert refused.status_code == 400, refused.content
        error = refused.json()["errors"][0]
        assert (error["field"], error["code"]) == ("customer_external_id", "customer_required")
        assert "customer_external_id" in error["message"]
    assert Coupon.objects.get(pk=coupon.pk).uses_count == 0
    assert not CouponRedemption.objects.exists()


def test_a_replay_of_an_order_with_another_store_customer_or_amount_is_refused(client):
    alice, bob = member_make(), member_make()
    coupon = coupon_issue(programme=programme_make(uses_per_code=5), customer=None)
    key = store_key_make()
    body = {
        "code": coupon.code,
        "order_total": "150.00",
        "currency": "CNY",
        "order_reference": "POS-1",
        "store": "SH-01",
        "customer_external_id": alice.customer.external_id,
    }

    def redeem(payload):
        return client.post(
            "/api/v1/coupons/redeem", payload, content_type="application/json", HTTP_AUTHORIZATION=key
        )

    first = redeem(body)
    replay = redeem({**body, "code": coupon.code.lower(), "order_total": "150"})
    changed = {
        "store": redeem({**body, "store": "BJ-02"}),
        "customer_external_id": redeem({**body, "customer_external_id": bob.customer.external_id}),
        "order_total": redeem({**body, "order_total": "151.00"}),
        "currency": redeem({**body, "currency": "USD"}),
    }
    no_customer = redeem({k: v for k, v in body.items() if k != "customer_external_id"})

    assert first.status_code == 201
    assert replay.status_code == 200 and replay.json()["replayed"] is True
    assert replay.json()["id"] == first.json()["id"]
    for field, response in [*changed.items(), ("customer_external_id", no_customer)]:
        assert response.status_code == 409, (field, response.content)
        error = response.json()["errors"][0]
        assert (error["code"], error["field"]) == ("order_conflict", field)
        assert "POS-1" in error["message"] and field in error["message"]
    assert Coupon.objects.get(pk=coupon.pk).uses_count == 1
    redemption = CouponRedemption.objects.get()
    assert (redemption.store, redemption.customer_id) == ("SH-01", alice.customer_id)


def test_the_openapi_schema_describes_the_member_and_coupon_endpoints(admin_client):
    response = admin_client.get("/api/schema/", HTTP_ACCEPT="application/json")

    assert response.status_code == 200
    paths = response.json()["paths"]
    assert {"/api/v1/me/points", "/api/v1/me/rewards/{id}/redeem", "/api/v1/coupons/redeem"} <= set(paths)


@pytest.mark.parametrize("basis", ["spend", "points"])
def test_the_one_statement_summary_agrees_with_the_ledger_selector(basis):
    """members._summary_one_statement re-states loyalty.selectors.account_summary in SQL for speed."""
    tiers_make()
    ProgrammeSettings.objects.filter(pk=1).update(tier_basis=basis)
    now = timezone.now()
    login = member_make()
    other = member_make(points=999)  # must not leak into the first member's figures
    account = account_for_customer(customer=login.customer)
    lots = [  # (state, points, remaining, expires in days, available in days, earned days ago, kind)
        ("available", 100, 100, 10, -50, 50, "earn"),
        ("available", 200, 150, 29, -40, 40, "earn"),
        ("available", 300, 300, 31, -30, 30, "earn"),
        ("available", 50, 0, 5, -20, 20, "earn"),  # spent: no longer open
        ("available", 70, 70, -1, -400, 400, "earn"),  # expired, and earned before the window
        ("pending", 80, 80, 200, 7, 1, "earn"),
    ]
    for n, (state, points, remaining, expires, available, earned, kind) in enumerate(lots):
        entry = LedgerEntry.objects.create(
            account=account,
            kind=kind,
            points=points if state == "available" else 0,
            pending_delta=points if state == "pending" else 0,
            idempotency_key=f"parity-{n}",
            payload_hash="x",
            occurred_at=now - timedelta(days=earned),
        )
        PointLot.objects.create(
            account=account,
            earn_entry=entry,
            state=state,
            points=points,
            remaining=remaining,
            consumed=points - remaining,
            earned_at=now - timedelta(days=earned),
            available_at=now + timedelta(days=available),
            expires_at=now + timedelta(days=expires),
        )
    LedgerEntry.objects.create(
        account=account,
        kind="reverse",
        points=-40,
        idempotency_key="parity-r",
        payload_hash="x",
        parts={"total": 40},
    )
    OrderFactory(customer=login.customer, total="500.00", placed_at=now - timedelta(days=10))
    OrderFactory(
        customer=login.customer, total="300.00", refunded_amount="100.00", placed_at=now - timedelta(days=100)
    )
    OrderFactory(customer=login.customer, total="900.00", placed_at=now - timedelta(days=500))
    OrderFactory(customer=other.customer, total="700.00", placed_at=now - timedelta(days=1))
    account.refresh_from_db()
    ruleset = ruleset_cached()

    fast = _summary_one_statement(account=account, now=now, ruleset=ruleset)
    slow = account_summary(account=account, now=now, ruleset=ruleset)
    raw = member_token_create(customer=login.customer, name="parity")[1]
    with_token = member_token_check(raw, now=now, with_summary=True).prefetched_summary

    assert fast == slow
    assert with_token == slow
    assert fast.expiring_soon == 250 and fast.next_available_at is not None
    assert fast.progress.value > 0


def _synchronous_commit() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SHOW synchronous_commit")
        return cursor.fetchone()[0]


@pytest.mark.django_db(transaction=True)
def test_a_token_is_touched_once_an_hour_without_waiting_for_the_disk_and_nothing_else_is():
    customer = member_make().customer
    raw = member_token_create(customer=customer, name="app")[1]
    token = MemberApiToken.objects.get(customer=customer)
    long_ago = timezone.now() - timedelta(hours=2)
    MemberApiToken.objects.filter(pk=token.pk).update(last_used_at=long_ago)

    # Autocommit (as in a request): the touch is its own transaction, committed asynchronously, and the
    # setting does not outlive it.
    assert member_token_check(raw) is not None
    token.refresh_from_db()
    assert token.last_used_at > long_ago
    assert _synchronous_commit() == "on"

    # Inside a caller's transaction the touch is a plain update: the transaction's commit stays durable.
    MemberApiToken.objects.filter(pk=token.pk).update(last_used_at=long_ago)
    with transaction.atomic():
        assert member_token_check(raw) is not None
        assert _synchronous_commit() == "on"
    token.refresh_from_db()
    assert token.last_used_at > long_ago
