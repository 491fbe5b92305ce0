"""The journey designer in a real browser: a marketer builds a three-node journey on the canvas (drag from
the palette, connect the exits, configure the nodes), saves, sees the server's problem on the offending node,
fixes it and publishes. Also: undo/redo and delete from the keyboard, the time a 30-node journey takes to
open (BENCHMARKS.md), and screenshots in English and Chinese, on a desktop and a phone, in SCREENSHOT_DIR
(default /tmp/jd-shots)."""

from __future__ import annotations

import os
import re
import statistics
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.utils import timezone, translation
from django.utils.translation import gettext
from playwright.sync_api import expect

from campaigns.models import MessageTemplate
from journeys.models import Journey, JourneyStatus
from journeys.services.journeys import journey_create

PASSWORD = "designer-e2e-pw"
DESKTOP = {"width": 1440, "height": 900}
PHONE = {"width": 390, "height": 844}
SHOTS = Path(os.environ.get("SCREENSHOT_DIR", "/tmp/jd-shots"))
EMPTY = {"schema": 1, "nodes": [], "edges": []}
TEXT = {
    "en": {
        "saved_problems": "Saved, with 1 problem(s) to fix before publishing.",
        "template": "message template: ",
        "saved": "Saved.",
        "published": "Published: customers now enter this version.",
    },
    "zh-hans": {
        "saved_problems": "已保存，发布前还有 1 个问题需要解决。",
        "template": "消息模板：",
        "saved": "已保存。",
        "published": "已发布：客户现在进入此版本。",
    },
}


@pytest.fixture(scope="module", autouse=True)
def designer_built():
    """The canvas bundle (make test builds it first; a run of this file alone builds it here)."""
    source = Path(settings.BASE_DIR) / "static/journeys/designer.jsx"
    built = Path(settings.BASE_DIR) / "static/journeys/build/designer.js"
    if not built.exists() or built.stat().st_mtime < source.stat().st_mtime:
        subprocess.run(["npm", "run", "--silent", "build:designer"], cwd=settings.BASE_DIR, check=True)


def session(browser, live_server, *, language="en", viewport=DESKTOP):
    user = get_user_model().objects.filter(
        username="designer"
    ).first() or get_user_model().objects.create_superuser("designer", "designer@example.cn", PASSWORD)
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


def open_designer(page, journey):
    page.goto(f"/admin/journeys/journey/{journey.pk}/designer/")
    expect(page.get_by_test_id("journey-designer")).to_have_attribute("data-ready", "true")


def drop(page, node_type: str, x: float, y: float):
    """Drag a palette entry onto the canvas, `x` and `y` a fraction of the canvas's width and height."""
    canvas = page.get_by_test_id("canvas")
    box = canvas.bounding_box()
    page.locator(f".jd-palette-item[data-node-type='{node_type}']").drag_to(
        canvas, target_position={"x": box["width"] * x, "y": box["height"] * y}
    )


def connect(page, source: str, handle: str, target: str):
    """Drag from a node's named exit to the next node's entrance, as a mouse does."""
    start = page.locator(
        f".react-flow__handle.source[data-nodeid='{source}'][data-handleid='{handle}']"
    ).bounding_box()
    end = page.locator(f".react-flow__handle.target[data-nodeid='{target}']").bounding_box()
    page.mouse.move(start["x"] + start["width"] / 2, start["y"] + start["height"] / 2)
    page.mouse.down()
    page.mouse.move(end["x"] + end["width"] / 2, end["y"] + end["height"] / 2, steps=12)
    page.mouse.up()


def node(page, node_id: str):
    return page.locator(f".react-flow__node[data-id='{node_id}']")


@pytest.mark.parametrize("language", ["en", "zh-hans"])
def test_a_marketer_builds_fixes_and_publishes_a_three_node_journey(browser, live_server, language):
    MessageTemplate.objects.create(code="cart_reminder", name="Cart reminder", channel="sms")
    journey = journey_create(name="Cart abandonment", graph=EMPTY)
    text = TEXT[language]
    with translation.override(language):
        # The server's own words for the problem, after the field's label.
        required = text["template"] + gettext("this field is required")
    context, page = session(browser, live_server, language=language)
    try:
        open_designer(page, journey)
        canvas = page.get_by_test_id("canvas")

        # From the keyboard: Enter on a palette entry adds it; an exit is connected from the panel's
        # list; Ctrl+Z / Ctrl+Shift+Z undo and redo; Delete removes the selected node.
        page.locator(".jd-palette-item[data-node-type='wait']").focus()
        page.keyboard.press("Enter")
        expect(node(page, "n1")).to_be_visible()
        expect(page.locator("#jd-n1-mode")).to_be_focused()  # the new node's panel, ready to type in
        page.locator(".jd-palette-item[data-node-type='exit']").focus()
        page.keyboard.press("Enter")
        expect(node(page, "n2")).to_be_visible()
        node(page, "n1").click(position={"x": 6, "y": 6})  # its corner: the second node sits just below
        page.locator("#jd-n1-exit-next").select_option("n2")
        expect(page.locator(".react-flow__edge")).to_have_count(1)
        canvas.click(position={"x": 20, "y": 20})  # the pane: nothing selected, no field focused
        page.keyboard.press("Control+z")
        expect(page.locator(".react-flow__edge")).to_have_count(0)
        page.keyboard.press("Control+z")
        expect(page.locator(".react-flow__node")).to_have_count(1)
        page.keyboard.press("Control+Shift+z")
        page.keyboard.press("Control+Shift+z")
        expect(page.locator(".react-flow__edge")).to_have_count(1)
        for node_id in ("n2", "n1"):
            node(page, node_id).click(position={"x": 6, "y": 6})
            page.keyboard.press("Delete")
        expect(page.locator(".react-flow__node")).to_have_count(0)
        expect(page.locator(".react-flow__edge")).to_have_count(0)

        # Drag three nodes in, connect them exit by exit.
        drop(page, "entry", 0.05, 0.3)
        drop(page, "send_message", 0.37, 0.3)
        drop(page, "exit", 0.7, 0.3)
        expect(page.locator(".react-flow__node")).to_have_count(3)
        connect(page, "n1", "next", "n2")
        connect(page, "n2", "next", "n3")
        expect(page.locator(".react-flow__edge")).to_have_count(2)

        # Configure the entry (an add_to_cart event); the message node is left without its template.
        node(page, "n1").click()
        page.locator("#jd-n1-trigger-event_type").fill("add_to_cart")
        page.get_by_test_id("save").click()
        expect(page.get_by_test_id("status")).to_have_text(text["saved_problems"])
        expect(node(page, "n2").locator(".jd-node")).to_have_class(re.compile(r"\bhas-problems\b"))
        expect(node(page, "n2").locator(".jd-node-problems")).to_contain_text(required)
        expect(page.get_by_test_id("problems").locator("li[data-node='n2']")).to_contain_text(required)
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / f"problem_{language}_desktop.png"))

        # The list leads to the node; the template is chosen; saved clean; published.
        page.get_by_test_id("problems").locator("li[data-node='n2'] button").click()
        page.locator("#jd-n2-template").select_option("cart_reminder")
        page.get_by_test_id("save").click()
        expect(page.get_by_test_id("status")).to_have_text(text["saved"])
        expect(node(page, "n2").locator(".jd-node")).not_to_have_class(re.compile(r"\bhas-problems\b"))
        page.get_by_test_id("publish").click()
        expect(page.get_by_test_id("status")).to_have_text(text["published"])
        expect(page.get_by_test_id("save")).to_be_disabled()
        page.screenshot(path=str(SHOTS / f"published_{language}_desktop.png"))
    finally:
        context.close()

    journey.refresh_from_db()
    assert journey.status == JourneyStatus.PUBLISHED
    graph = journey.current_version.graph
    assert [(n["id"], n["type"]) for n in graph["nodes"]] == [
        ("n1", "entry"),
        ("n2", "send_message"),
        ("n3", "exit"),
    ]
    assert graph["nodes"][0]["config"]["trigger"] == {
        "kind": "event",
        "event_type": "add_to_cart",
        "filters": [],
    }
    assert graph["nodes"][1]["config"]["template"] == "cart_reminder"
    assert sorted((e["source"], e["source_handle"], e["target"]) for e in graph["edges"]) == [
        ("n1", "next", "n2"),
        ("n2", "next", "n3"),
    ]
    # Dropped where the mouse let go: left to right.
    xs = [n["position"]["x"] for n in graph["nodes"]]
    assert xs == sorted(xs)


def thirty_nodes() -> dict:
    """entry → (wait → message) × 14 → exit: 30 nodes, 29 edges."""
    nodes = [
        {
            "id": "n0",
            "type": "entry",
            "config": {"trigger": {"kind": "event", "event_type": "add_to_cart"}},
            "position": {"x": 0, "y": 0},
        }
    ]
    for i in range(14):
        nodes.append(
            {
                "id": f"w{i}",
                "type": "wait",
                "config": {"mode": "duration", "duration": {"value": i + 1, "unit": "days"}},
                "position": {"x": 260 * (2 * i + 1), "y": 120 * (i % 3)},
            }
        )
        nodes.append(
            {
                "id": f"s{i}",
                "type": "send_message",
                "config": {"channel": "best", "template": "cart_reminder", "on_cap": "defer"},
                "position": {"x": 260 * (2 * i + 2), "y": 120 * ((i + 1) % 3)},
            }
        )
    nodes.append({"id": "end", "type": "exit", "config": {}, "position": {"x": 260 * 29, "y": 0}})
    edges = [
        {"id": f"e{i}", "source": a["id"], "source_handle": "next", "target": b["id"]}
        for i, (a, b) in enumerate(zip(nodes, nodes[1:], strict=False))
    ]
    return {"schema": 1, "nodes": nodes, "edges": edges}


def test_a_thirty_node_journey_opens_within_the_target(browser, live_server):
    MessageTemplate.objects.create(code="cart_reminder", name="Cart reminder", channel="sms")
    journey = journey_create(name="Long journey", graph=thirty_nodes())
    context, page = session(browser, live_server)
    try:
        open_designer(page, journey)  # warms the server and the browser's cache, as a second visit does
        opened, mounted, served = [], [], []
        for _ in range(5):
            open_designer(page, journey)
            root = page.get_by_test_id("journey-designer")
            opened.append(int(root.get_attribute("data-opened-ms")))
            mounted.append(int(root.get_attribute("data-mount-ms")))
            served.append(round(page.evaluate("performance.getEntriesByType('navigation')[0].responseEnd")))
        expect(page.locator(".react-flow__node")).to_have_count(30)
        expect(page.locator(".react-flow__edge")).to_have_count(29)
    finally:
        context.close()
    print(
        f"\n30-node journey: navigation start -> every node and edge drawn: median {statistics.median(opened)} ms, "
        f"max {max(opened)} ms; canvas script start -> drawn: median {statistics.median(mounted)} ms "
        f"(5 warm loads, headless chromium); the page's HTML in by median {statistics.median(served)} ms"
    )
    # The target is 1 s; the bound allows a machine three times slower than the one that measured it.
    assert statistics.median(opened) <= 3000


@pytest.mark.parametrize("language", ["en", "zh-hans"])
def test_screenshots_on_a_desktop_and_a_phone(browser, live_server, language):
    MessageTemplate.objects.create(code="cart_reminder", name="Cart reminder", channel="sms")
    graph = thirty_nodes()
    graph["nodes"] = graph["nodes"][:5] + graph["nodes"][-1:]
    kept = {n["id"] for n in graph["nodes"]}
    graph["edges"] = [e for e in graph["edges"] if e["source"] in kept and e["target"] in kept]
    graph["edges"].append({"id": "tail", "source": "s1", "source_handle": "next", "target": "end"})
    graph["nodes"][-1]["position"] = {"x": 260 * 6, "y": 0}
    journey = journey_create(name="双十一购物车召回", graph=graph)
    SHOTS.mkdir(parents=True, exist_ok=True)
    for name, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
        context, page = session(browser, live_server, language=language, viewport=viewport)
        try:
            open_designer(page, journey)
            node(page, "s0").click()
            expect(page.get_by_test_id("node-panel")).to_be_visible()
            # Nothing spills sideways on the phone: the page is as wide as the window.
            assert page.evaluate("document.documentElement.scrollWidth") <= viewport["width"] + 1
            page.screenshot(path=str(SHOTS / f"designer_{language}_{name}.png"), full_page=True)
        finally:
            context.close()
    assert Journey.objects.get(pk=journey.pk).status == JourneyStatus.DRAFT


def test_a_published_journey_shows_its_per_node_counts(browser, live_server):
    """Events fed through the event log, the engine run, the counts (journey_node_counts) drawn on the
    nodes of the published version."""
    from crm.services.event_log import NewEvent, events_append
    from journeys import selectors
    from tests.factories import CustomerFactory
    from tests.journeys.engine_helpers import published, run
    from tests.journeys.graphs import chain, entry, node

    version = published(
        chain(
            entry(kind="event", event_type="add_to_cart"),
            node("w", "wait", mode="duration", duration={"value": 1, "unit": "days"}),
            node("x", "exit"),
        ),
        name="Counted",
    )
    customers = CustomerFactory.create_batch(3)
    now = timezone.now()  # after publishing: a journey enters customers for the events that follow it
    events_append(
        events=[
            NewEvent(type="add_to_cart", customer_id=c.pk, occurred_at=now, properties={}) for c in customers
        ],
        now=now,
    )
    run(now + timedelta(seconds=1))
    counts = selectors.journey_node_counts(version)
    assert counts["w"]["waiting"] == 3
    context, page = session(browser, live_server)
    try:
        open_designer(page, version.journey)
        for node_id, figures in counts.items():
            drawn = page.get_by_test_id(f"counts-{node_id}")
            for key in ("entered", "waiting", "passed", "exited"):
                expect(drawn.locator(f"[data-count='{key}']")).to_have_text(
                    re.compile(rf"\b{figures.get(key, 0)}$")
                )
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / "counts_en_desktop.png"))
    finally:
        context.close()
