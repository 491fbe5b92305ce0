"""In a real browser: the admin home page's figures against the database, in English and Chinese, on a
desktop and a phone; the sidebar grouped by task as a marketer (no System group) and as an administrator.
Screenshots go to /tmp/e2e_workspace_*.png for a person to look at."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.utils import timezone
from playwright.sync_api import expect

from config.roles import ROLE_GRANTS
from crm.roles import roles_sync
from tests.config.home_world import EXPECTED, home_world_build

pytestmark = pytest.mark.e2e

PASSWORD = "pw-workspace-2026"
DESKTOP = {"width": 1440, "height": 900}
PHONE = {"width": 390, "height": 844}


def _staff(role: str | None):
    roles_sync(Group, Permission, ROLE_GRANTS)  # a transactional test starts from emptied tables
    users = get_user_model().objects
    if role is None:
        return users.create_superuser("chief", "chief@example.cn", PASSWORD)
    user = users.create_user(f"{role}-e2e", f"{role}@example.cn", PASSWORD, is_staff=True)
    user.groups.add(Group.objects.get(name=role))
    return user


def _session(browser, live_server, user, *, language: str, viewport: dict):
    context = browser.new_context(
        base_url=live_server.url, viewport=viewport, extra_http_headers={"Accept-Language": language}
    )
    context.set_default_timeout(15_000)
    page = context.new_page()
    page.goto("/admin/login/")
    page.fill("#id_username", user.username)
    page.fill("#id_password", PASSWORD)
    page.click("[type=submit]")
    expect(page).to_have_url(re.compile(r"/admin/$"))
    return context, page


def _figure(page, label: str) -> str:
    card = page.locator(
        ".ws-figure", has=page.locator(".ws-figure-label", has_text=re.compile(rf"^{re.escape(label)}$"))
    )
    return card.locator(".ws-figure-value").inner_text().strip()


LABELS = {
    "en": {
        "customers": "Customers",
        "members": "Members",
        "active": "Active customers (30 days)",
        "gmv": "GMV (30 days)",
        "orders": "Orders (30 days)",
        "repeat": "Repeat-purchase rate",
        "sleeping": "Sleeping high-value customers",
        "liability": "Points liability",
        "redemption": "Redemption rate",
        "stages": "Customers by lifecycle stage",
    },
    "zh-hans": {
        "customers": "客户",
        "members": "会员",
        "active": "活跃客户（30 天）",
        "gmv": "GMV（30 天）",
        "orders": "订单数（30 天）",
        "repeat": "复购率",
        "sleeping": "沉睡高价值客户",
        "liability": "积分负债",
        "redemption": "积分兑换率",
        "stages": "各生命周期阶段的客户数",
    },
}


@pytest.mark.parametrize("language", ["en", "zh-hans"])
def test_home_page_shows_the_days_figures_from_the_database(browser, live_server, language):
    home_world_build(now=timezone.now())
    user = _staff(None)
    labels = LABELS[language]
    for name, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
        context, page = _session(browser, live_server, user, language=language, viewport=viewport)
        try:
            assert _figure(page, labels["customers"]) == str(EXPECTED["customers"])
            assert _figure(page, labels["members"]) == str(EXPECTED["members"])
            assert _figure(page, labels["active"]) == str(EXPECTED["active_customers"])
            assert _figure(page, labels["gmv"]) == f"¥{EXPECTED['gmv']:,.0f}"
            assert _figure(page, labels["orders"]) == str(EXPECTED["orders"])
            assert (
                _figure(page, labels["repeat"]) == f"{EXPECTED['repeat_buyers'] * 100 // EXPECTED['buyers']}%"
            )
            assert _figure(page, labels["sleeping"]) == str(EXPECTED["sleeping_high_value"])
            assert _figure(page, labels["liability"]) == f"¥{EXPECTED['liability_value']:,.0f}"
            rate = EXPECTED["redeemed_points"] * 100 // EXPECTED["issued_points"]
            assert _figure(page, labels["redemption"]) == f"{rate}%"
            expect(page.get_by_role("heading", name=labels["stages"])).to_be_visible()
            # Nothing spills sideways: the page is as wide as the window.
            assert page.evaluate("document.documentElement.scrollWidth") <= viewport["width"]
            page.screenshot(path=f"/tmp/e2e_workspace_home_{language}_{name}.png", full_page=True)
            if name == "desktop":
                # A figure leads to the list behind it: the active customers are the two counted.
                page.locator(".ws-figure", has_text=labels["active"]).click()
                expect(page).to_have_url(re.compile(r"/admin/crm/customer/\?active=30"))
                expect(page.locator("#result_list tbody tr")).to_have_count(EXPECTED["active_customers"])
                assert page.evaluate(
                    "(() => { const t = document.querySelector('#result_list'); return t.scrollWidth <= t.parentElement.clientWidth; })()"
                )
                page.screenshot(path=f"/tmp/e2e_workspace_customers_{language}_{name}.png", full_page=True)
            else:
                page.goto("/admin/crm/customer/")
                page.screenshot(path=f"/tmp/e2e_workspace_customers_{language}_{name}.png", full_page=True)
        finally:
            context.close()


GROUPS = {
    "en": ["Customers", "Analytics", "Loyalty", "Campaigns", "Journeys"],
    "zh-hans": ["客户", "分析", "会员", "触达", "旅程"],
}
SYSTEM = {"en": "System", "zh-hans": "系统"}
INTERNAL = {"en": "Event-log cursors", "zh-hans": "事件日志游标"}


@pytest.mark.parametrize("language", ["en", "zh-hans"])
def test_sidebar_is_grouped_by_task_and_internals_are_for_administrators(browser, live_server, language):
    marketer, administrator = _staff("marketer"), _staff("administrator")
    headings = "#nav-sidebar-apps h2"
    context, page = _session(browser, live_server, marketer, language=language, viewport=DESKTOP)
    try:
        titles = [
            t.split("\n")[0].strip() for t in page.locator(headings).all_inner_texts()
        ]  # less the chevron icon
        assert titles[: len(GROUPS[language])] == GROUPS[language]
        assert SYSTEM[language] not in titles
        # The customer group opens and leads to the customer list.
        page.locator(headings, has_text=GROUPS[language][0]).click()
        page.locator("#nav-sidebar-apps a[href='/admin/crm/customer/']").click()
        expect(page).to_have_url(re.compile(r"/admin/crm/customer/$"))
        page.screenshot(path=f"/tmp/e2e_workspace_nav_marketer_{language}.png")
        assert page.goto("/admin/crm/eventlogcursor/").status == 200  # viewable, just not in the way
        expect(page.locator("#nav-sidebar-apps")).not_to_contain_text(INTERNAL[language])
    finally:
        context.close()
    context, page = _session(browser, live_server, administrator, language=language, viewport=DESKTOP)
    try:
        titles = [
            t.split("\n")[0].strip() for t in page.locator(headings).all_inner_texts()
        ]  # less the chevron icon
        assert titles[-1] == SYSTEM[language]
        page.locator(headings, has_text=SYSTEM[language]).click()
        expect(page.locator("#nav-sidebar-apps a", has_text=INTERNAL[language])).to_be_visible()
        page.screenshot(path=f"/tmp/e2e_workspace_nav_administrator_{language}.png")
    finally:
        context.close()


def test_the_360_page_saves_the_profile_with_its_own_button(browser, live_server):
    """unfold's sticky Save bar is hidden on the 360 page; the folded profile form keeps a Save of its own."""
    from tests.factories import CustomerFactory

    customer = CustomerFactory(name="王芳", city="上海")
    context, page = _session(browser, live_server, _staff(None), language="en", viewport=DESKTOP)
    try:
        page.goto(f"/admin/crm/customer/{customer.pk}/change/")
        expect(page.locator("#submit-row, .submit-row")).to_have_count(0)
        page.locator("#profile summary").click()
        page.fill("#id_city", "杭州")
        with page.expect_navigation():
            page.locator("#profile .c360-profile-save button").click()
        customer.refresh_from_db()
        assert customer.city == "杭州"
    finally:
        context.close()
