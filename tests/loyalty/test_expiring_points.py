"""Expiring points, one computation for every reader: the member API gives each group of lots with its
true expiry date (not only the end of its 30-day window), the member portal and the customer 360 read
the same items, and the API's one-statement path agrees with the ORM path."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from django.utils import timezone

from crm.clock import business_day_start, business_today
from loyalty.models import LedgerEntry, PointLot
from loyalty.selectors import account_expiring_points, account_summary, customer_points_overview
from loyalty.services.ledger import account_for_customer
from loyalty.services.members import (
    _summary_one_statement,
    member_token_check,
    member_token_create,
    ruleset_cached,
)
from tests.loyalty.test_member_support import member_make, member_token, tiers_make

pytestmark = pytest.mark.django_db


def _lots(account, now, lots):
    """lots: (state, remaining, expires_at)."""
    for n, (state, remaining, expires_at) in enumerate(lots):
        entry = LedgerEntry.objects.create(
            account=account,
            kind="earn",
            points=remaining if state == "available" else 0,
            pending_delta=remaining if state == "pending" else 0,
            idempotency_key=f"exp-{account.pk}-{n}",
            payload_hash="x",
            occurred_at=now - timedelta(days=5),
        )
        PointLot.objects.create(
            account=account,
            earn_entry=entry,
            state=state,
            points=remaining,
            remaining=remaining,
            consumed=0,
            earned_at=now - timedelta(days=5),
            available_at=now - timedelta(days=1) if state == "available" else now + timedelta(days=3),
            expires_at=expires_at,
        )


@pytest.fixture
def member(db):
    """A member with, from now: 120 + 80 points gone at the business midnight ending day +10 (two lots,
    one group), 45 points at 15:30 on day +20 (rolling), 300 points after the window, 60 pending
    points inside it, and 70 expired but not yet closed by the expiry run."""
    tiers_make()
    now = timezone.now()
    login = member_make()
    account = account_for_customer(customer=login.customer)
    end_of_day_10 = business_day_start(business_today(now) + timedelta(days=11))
    day_20_afternoon = business_day_start(business_today(now) + timedelta(days=20)) + timedelta(
        hours=15, minutes=30
    )
    _lots(
        account,
        now,
        [
            ("available", 120, end_of_day_10),
            ("available", 80, end_of_day_10),
            ("available", 45, day_20_afternoon),
            ("available", 300, now + timedelta(days=40)),
            ("pending", 60, now + timedelta(days=15)),
            ("available", 70, now - timedelta(hours=1)),
        ],
    )
    return login, account, now, end_of_day_10, day_20_afternoon


def test_points_api_gives_each_expiry_date_not_the_window_end(client, member):
    login, _account, now, end_of_day_10, day_20_afternoon = member
    body = client.get("/api/v1/me/points", HTTP_AUTHORIZATION=member_token(login)).json()
    soon = body["expiring_soon"]

    assert soon["points"] == 245
    assert [(d["points"], d["last_day"], d["at_day_end"]) for d in soon["dates"]] == [
        (200, (business_today(now) + timedelta(days=10)).isoformat(), True),
        (45, (business_today(now) + timedelta(days=20)).isoformat(), False),
    ]
    assert [datetime.fromisoformat(d["expires_at"].replace("Z", "+00:00")) for d in soon["dates"]] == [
        end_of_day_10,
        day_20_afternoon,
    ]
    assert soon["until"]  # still there: the end of the 30-day window the dates fall in
    assert sum(d["points"] for d in soon["dates"]) == soon["points"]


def test_the_one_statement_summary_gives_the_same_dates_as_the_orm(member):
    login, account, now, *_ = member
    ruleset = ruleset_cached()  # the one the token path reads
    slow = account_summary(account=account, now=now, ruleset=ruleset)
    fast = _summary_one_statement(account=account, now=now, ruleset=ruleset)
    raw = member_token_create(customer=login.customer, name="dates")[1]
    with_token = member_token_check(raw, now=now, with_summary=True).prefetched_summary

    assert slow.expiring_soon_dates == tuple(account_expiring_points(account=account, now=now))
    assert fast == slow
    assert with_token == slow
    assert [item.points for item in fast.expiring_soon_dates] == [200, 45]
    assert fast.expiring_soon_dates[0].expires_at == slow.expiring_soon_dates[0].expires_at


def test_the_360_and_the_portal_read_the_same_expiring_points(member):
    login, account, now, *_ = member
    overview = customer_points_overview(customer_id=login.customer_id, now=now)
    portal = account_expiring_points(account=account, now=now)

    # The 360 looks further ahead (the next dates, whenever they are); within 30 days both agree.
    assert overview["expiring"][: len(portal)] == portal
    assert [item.points for item in overview["expiring"]] == [200, 45, 300]
