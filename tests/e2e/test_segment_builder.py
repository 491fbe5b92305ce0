"""A marketer builds a segment in the admin's form builder and watches its live count."""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal

from django.utils import timezone
from playwright.sync_api import expect

from crm.models import Segment
from tests.factories import CustomerFactory, OrderFactory


def log_in(page, user):
    page.goto("/admin/login/?next=/admin/crm/segment/add/")
    page.fill("#id_username", user.username)
    page.fill("#id_password", "password")
    page.click("#login-form [type=submit]")  # unfold's login has a <button>


def test_marketer_builds_a_nested_segment_and_sees_the_live_count(page, admin_user):
    shanghai = CustomerFactory.create_batch(4, city="上海")
    CustomerFactory.create_batch(3, city="北京")
    now = timezone.now()
    for customer in shanghai[:2]:
        OrderFactory(customer=customer, total=Decimal("300.00"), placed_at=now - timedelta(days=5))
        OrderFactory(customer=customer, total=Decimal("120.00"), placed_at=now - timedelta(days=50))
    OrderFactory(customer=shanghai[2], total=Decimal("80.00"), placed_at=now - timedelta(days=400))

    log_in(page, admin_user)
    expect(page).to_have_url(re.compile(r"/admin/crm/segment/add/$"))
    page.fill("#id_name", "Shanghai repeat buyers")
    count = page.get_by_test_id("segment-count")
    expect(count).to_have_text("7 customers match")  # no condition yet: everyone

    root = page.locator(".sb-group").first
    root.locator(".sb-add-condition").last.click()
    first = page.locator(".sb-condition").nth(0)
    first.locator(".sb-field").select_option("profile.city")
    first.locator(".sb-operator").select_option("eq")
    first.locator(".sb-value input").fill("上海")
    expect(count).to_have_text("4 customers match")
    expect(page.locator(".segment-builder-sample tbody tr")).to_have_count(4)

    # A nested OR group: at least 2 orders in the last 90 days, or spent 50+ in total.
    root.locator(".sb-add-group").last.click()
    nested = page.locator(".sb-group .sb-group")
    nested.locator(".sb-op").select_option("or")
    orders = nested.locator(".sb-condition").nth(0)
    orders.locator(".sb-field").select_option("orders.count")
    orders.locator(".sb-operator").select_option("gte")
    # An unfinished condition is named in the preview, not failed silently.
    expect(page.locator(".segment-builder-errors")).to_contain_text(
        "group 1 › group 2 › condition 1: operator 'gte' needs a value"
    )
    expect(orders).to_have_class(re.compile(r"\bsb-invalid\b"))
    orders.locator(".sb-value input").fill("2")
    orders.locator(".sb-window-kind").select_option("last_days")
    orders.locator(".sb-window input").fill("90")
    expect(count).to_have_text("2 customers match")

    nested.locator(".sb-add-condition").click()
    spend = nested.locator(".sb-condition").nth(1)
    spend.locator(".sb-field").select_option("orders.total_spend")
    spend.locator(".sb-operator").select_option("gte")
    spend.locator(".sb-value input").fill("50")
    expect(count).to_have_text("3 customers match")

    page.click("[type=submit][name=_save]")  # unfold: a <button> in the sticky bar
    expect(page).to_have_url(re.compile(r"/admin/crm/segment/$"))
    segment = Segment.objects.get(name="Shanghai repeat buyers")
    assert segment.rule == {
        "op": "and",
        "conditions": [
            {"field": "profile.city", "operator": "eq", "value": "上海"},
            {
                "op": "or",
                "conditions": [
                    {
                        "field": "orders.count",
                        "operator": "gte",
                        "value": 2,
                        "window": {"kind": "last_days", "days": 90},
                    },
                    {"field": "orders.total_spend", "operator": "gte", "value": 50},
                ],
            },
        ],
    }

    # Reopened, the builder shows the saved rule and its count again.
    page.goto(f"/admin/crm/segment/{segment.pk}/change/")
    expect(page.get_by_test_id("segment-count")).to_have_text("3 customers match")
    expect(page.locator(".sb-condition")).to_have_count(3)
    expect(page.locator(".sb-group .sb-group .sb-op")).to_have_value("or")
