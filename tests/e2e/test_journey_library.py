"""Ready-made journeys and the designer's structured editors in a real browser: a marketer opens the
ready-made journeys from the journey list, copies the welcome series, edits its condition split's segment
rule and its entry's property filters with the keyboard, saves, and the server stores what was chosen.
The journey's results against its holdout are drawn above the canvas. Screenshots in English and Chinese,
on a desktop and a phone, in SCREENSHOT_DIR (default /tmp/jd-shots)."""

from __future__ import annotations

import os
import re
import subprocess
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.utils import timezone
from playwright.sync_api import expect

from journeys.library import library_journey_copy
from journeys.models import Enrollment, EnrollmentState, Journey, JourneyVersion
from journeys.services.journeys import journey_publish
from tests.factories import CustomerFactory, EventFactory, OrderFactory

PASSWORD = "library-e2e-pw"
DESKTOP = {"width": 1440, "height": 900}
PHONE = {"width": 390, "height": 844}
SHOTS = Path(os.environ.get("SCREENSHOT_DIR", os.environ.get("SHOTS_DIR", "/tmp/jd-shots")))
TEXT = {
    "en": {
        "open": "New journey from a ready-made one",
        "copy": "Copy into a new draft",
        "saved": "Saved.",
        "add_condition": "Add condition",
        "add_filter": "Add a property filter",
        "converted": "Converted",
    },
    "zh-hans": {
        "open": "从现成旅程新建",
        "copy": "复制为新草稿",
        "saved": "已保存。",
        "add_condition": "添加条件",
        "add_filter": "添加属性筛选",
        "converted": "已转化",
    },
}


@pytest.fixture(scope="module", autouse=True)
def designer_built():
    sources = [
        Path(settings.BASE_DIR) / f"static/journeys/{name}" for name in ("designer.jsx", "rule_editor.jsx")
    ]
    built = Path(settings.BASE_DIR) / "static/journeys/build/designer.js"
    if not built.exists() or any(built.stat().st_mtime < s.stat().st_mtime for s in sources):
        subprocess.run(["npm", "run", "--silent", "build:designer"], cwd=settings.BASE_DIR, check=True)


def session(browser, live_server, *, language="en", viewport=DESKTOP):
    user = get_user_model().objects.filter(
        username="librarian"
    ).first() or get_user_model().objects.create_superuser("librarian", "librarian@example.cn", PASSWORD)
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


def node(page, node_id: str):
    return page.locator(f".react-flow__node[data-id='{node_id}']")


def select_node(page, node_id: str):
    """Select a node from the keyboard (React Flow: focus it, Enter), as a screen-reader user does."""
    press(node(page, node_id))
    expect(page.get_by_test_id("node-panel").locator("h2 small")).to_have_text(node_id)


def press(locator, key="Enter"):
    """Operate a control from the keyboard: focus it, press the key."""
    locator.focus()
    locator.press(key)


@pytest.mark.parametrize("language", ["en", "zh-hans"])
def test_a_marketer_copies_a_ready_made_journey_and_edits_its_rule_and_filters(
    browser, live_server, language
):
    text = TEXT[language]
    SHOTS.mkdir(parents=True, exist_ok=True)
    context, page = session(browser, live_server, language=language)
    try:
        page.goto("/admin/journeys/journey/")
        page.get_by_role("link", name=text["open"]).click()
        cards = page.get_by_test_id("library").locator("li.jl-card")
        expect(cards).to_have_count(8)
        page.screenshot(path=str(SHOTS / f"library_{language}_desktop.png"), full_page=True)
        card = page.locator("li.jl-card[data-code='welcome_series']")
        press(card.get_by_role("button", name=text["copy"]))
        expect(page.get_by_test_id("journey-designer")).to_have_attribute("data-ready", "true")
        expect(page.locator(".react-flow__node")).to_have_count(6)
        # The journey's settings: its goal (an order) has a filter editor of its own.
        expect(page.locator(".jd-field[data-field='goal.filters']")).to_have_count(1)

        # The condition split's rule: the segment builder's fields, operators and values.
        select_node(page, "ordered")
        rule = page.get_by_test_id("rule-editor")
        expect(rule).to_be_visible()
        first = rule.locator(".jd-rule-condition[data-loc='0']")
        expect(first.locator("[data-role='field']")).to_have_value("orders.count")
        first.locator("[data-role='operator']").select_option("gt")
        first.locator("input[type='number']").fill("2")
        press(rule.get_by_role("button", name=f"+ {text['add_condition']}", exact=True))
        second = rule.locator(".jd-rule-condition[data-loc='1']")
        second.locator("[data-role='field']").select_option("profile.city")
        second.locator("[data-role='operator']").select_option("in")
        second.get_by_role("textbox").fill("上海, 杭州")
        rule.locator("#jd-ordered-rule-op-root").select_option("or")
        page.screenshot(path=str(SHOTS / f"rule_editor_{language}_desktop.png"))

        # The entry's property filters: one key/op/value row.
        select_node(page, "entry")
        filters = page.get_by_test_id("filters-editor")
        press(filters.get_by_role("button", name=re.compile(re.escape(text["add_filter"]))))
        row = filters.locator("[data-filter='1']")
        row.locator("input").first.fill("channel")  # a combobox: the event type's properties are offered
        row.locator("select").select_option("in")
        row.locator("input").nth(1).fill("wechat_mini, app")
        page.screenshot(path=str(SHOTS / f"filters_editor_{language}_desktop.png"))

        page.get_by_test_id("save").click()
        expect(page.get_by_test_id("status")).to_have_text(text["saved"])
    finally:
        context.close()

    journey = Journey.objects.get()
    graph = JourneyVersion.objects.get(journey=journey).graph
    nodes = {n["id"]: n for n in graph["nodes"]}
    assert nodes["ordered"]["config"]["rule"] == {
        "op": "or",
        "conditions": [
            {"field": "orders.count", "operator": "gt", "value": 2},
            {"field": "profile.city", "operator": "in", "value": ["上海", "杭州"]},
        ],
    }
    assert nodes["entry"]["config"]["trigger"]["filters"] == [
        {"property": "channel", "op": "in", "value": ["wechat_mini", "app"]}
    ]


def test_a_bad_rule_value_is_named_by_the_server_under_the_editor(browser, live_server):
    journey = library_journey_copy(code="six_month_revisit")
    context, page = session(browser, live_server)
    try:
        page.goto(f"/admin/journeys/journey/{journey.pk}/designer/")
        expect(page.get_by_test_id("journey-designer")).to_have_attribute("data-ready", "true")
        node(page, "recent").click()
        days = page.get_by_test_id("rule-editor").locator(
            ".jd-rule-condition[data-loc='0'] input[type='number']"
        )
        days.fill("")
        page.get_by_test_id("save").click()
        field = page.locator(".jd-field[data-field='rule']")
        expect(field).to_have_class(re.compile(r"\bhas-problem\b"))
        expect(field.locator(".jd-field-error")).to_contain_text("condition 1")
    finally:
        context.close()


def test_the_results_against_the_holdout_are_drawn_above_the_canvas(browser, live_server):
    journey = library_journey_copy(code="dormant_winback", now=timezone.now() - timedelta(days=10))
    version = journey_publish(journey=journey)
    entered = timezone.now() - timedelta(days=3)
    arms = {"treated": CustomerFactory.create_batch(40), "holdout": CustomerFactory.create_batch(40)}
    Enrollment.objects.bulk_create(
        Enrollment(
            customer=c,
            journey=journey,
            version=version,
            node_id="done",
            arm=arm,
            occurrence="2026-12",
            entered_at=entered,
            state=EnrollmentState.COMPLETED if arm == "treated" else EnrollmentState.EXITED,
        )
        for arm, customers in arms.items()
        for c in customers
    )
    for c in arms["treated"][:20] + arms["holdout"][:4]:
        EventFactory(customer=c, type="order_placed", occurred_at=entered + timedelta(days=1))
        OrderFactory(customer=c, placed_at=entered + timedelta(days=1), total=Decimal("120.00"))
    SHOTS.mkdir(parents=True, exist_ok=True)
    for language in ("en", "zh-hans"):
        for name, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
            context, page = session(browser, live_server, language=language, viewport=viewport)
            try:
                page.goto(f"/admin/journeys/journey/{journey.pk}/designer/")
                expect(page.get_by_test_id("journey-designer")).to_have_attribute("data-ready", "true")
                # No goal event: no goal filters to edit.
                expect(page.get_by_test_id("settings-panel")).to_be_visible()
                expect(page.locator(".jd-field[data-field='goal.filters']")).to_have_count(0)
                results = page.get_by_test_id("results")
                expect(results.locator("[data-result='converted'] strong")).to_have_text("20")
                expect(results.locator("[data-result='converted'] dt")).to_have_text(
                    TEXT[language]["converted"]
                )
                # 50 % against 10 %: the interval leaves out zero, drawn as a clear rise.
                expect(results.locator("[data-result='conversion']")).to_have_class(re.compile(r"\bis-up\b"))
                expect(results.locator("[data-result='revenue'] strong")).to_have_text("+¥48")
                assert page.evaluate("document.documentElement.scrollWidth") <= viewport["width"] + 1
                page.screenshot(path=str(SHOTS / f"results_{language}_{name}.png"), full_page=True)
            finally:
                context.close()


@pytest.mark.parametrize("language", ["en", "zh-hans"])
def test_the_library_and_the_rule_editor_fit_a_phone(browser, live_server, language):
    journey = library_journey_copy(code="welcome_series")
    SHOTS.mkdir(parents=True, exist_ok=True)
    context, page = session(browser, live_server, language=language, viewport=PHONE)
    try:
        page.goto("/admin/journeys/journey/library/")
        expect(page.get_by_test_id("library").locator("li.jl-card")).to_have_count(8)
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"] + 1
        page.screenshot(path=str(SHOTS / f"library_{language}_phone.png"), full_page=True)
        page.goto(f"/admin/journeys/journey/{journey.pk}/designer/")
        expect(page.get_by_test_id("journey-designer")).to_have_attribute("data-ready", "true")
        node(page, "ordered").click()
        expect(page.get_by_test_id("rule-editor")).to_be_visible()
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"] + 1
        page.get_by_test_id("rule-editor").scroll_into_view_if_needed()
        page.screenshot(path=str(SHOTS / f"rule_editor_{language}_phone.png"))
    finally:
        context.close()
