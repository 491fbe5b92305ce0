"""In a real browser: the customer 360's Messages panel (why each message was or was not sent) and the
delivery overview with its chart, in English and Chinese, on a desktop and a phone. Screenshots go to
/work/shots/staff/ (or $SHOTS_DIR) for a person to look at."""

from __future__ import annotations

import datetime as dt
import os
import random
import zoneinfo
from pathlib import Path

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from campaigns.models import Message
from tests.campaigns.staff_helpers import message, template
from tests.e2e.test_admin_workspace import DESKTOP, PHONE, _session, _staff
from tests.factories import CustomerFactory

pytestmark = pytest.mark.e2e

SHOTS = Path(os.environ.get("SHOTS_DIR", "/work/shots/staff"))
LANGUAGES = {"en": "en", "zh-hans": "zh"}
WHY = {
    "en": [
        "capped: 2 marketing SMS today",
        "no WeChat consent",
        "quiet hours, deferred to",
        "lower priority than 双11大促",
    ],
    "zh-hans": [
        "已达频次上限：今日已发 2 条营销短信",
        "无微信授权",
        "免打扰时段，延后至",
        "优先级低于双11大促",
    ],
}


def _customer_world(now):
    customer = CustomerFactory(name="王芳", phone="+8613800138000", time_zone="Asia/Shanghai")
    shanghai = zoneinfo.ZoneInfo("Asia/Shanghai")
    morning = (now.astimezone(shanghai) + dt.timedelta(days=1)).replace(
        hour=8, minute=0, second=0, microsecond=0
    )
    steps = [
        {"status": "clicked", "channel": "wechat", "source_label": "双11大促", "subject": "双11 会员专享 8 折"},
        {"status": "suppressed", "channel": "sms", "source_label": "新品上市", "reason": "capped",
         "reason_params": {"limit": 2, "channel": "sms", "period": "day"}},
        {"status": "suppressed", "channel": "wechat", "source_label": "会员日提醒", "source_kind": "journey",
         "reason": "no_consent", "reason_params": {"channel": "wechat"}},
        {"status": "deferred", "channel": "push", "source_label": "购物车提醒", "source_kind": "journey",
         "reason": "quiet_hours", "reason_params": {"until": morning.isoformat()}},
        {"status": "suppressed", "channel": "email", "source_label": "你还记得吗?", "source_kind": "winback",
         "reason": "lower_priority", "reason_params": {"than": "双11大促"}},
        {"status": "delivered", "channel": "sms", "source_label": "积分到账", "source_kind": "notice",
         "purpose": "transactional"},
        {"status": "failed", "channel": "wechat", "source_label": "生日祝福", "source_kind": "journey",
         "reason": "provider_rejected", "reason_params": {"error": "43004 require subscribe"}, "error_code": "43004"},
    ]  # fmt: skip
    for i, fields in enumerate(reversed(steps)):
        message(customer, created_at=now - dt.timedelta(minutes=5 * (len(steps) - i)), now=now, **fields)
    return customer


def _overview_world(now):
    """Sends over the last hour on every channel, a queue, failures with a few reasons."""
    rng = random.Random(7)
    other = CustomerFactory(name="李娜")
    rows = []
    for i in range(400):
        channel = rng.choices(["wechat", "sms", "email", "push"], [5, 3, 2, 1])[0]
        at = now - dt.timedelta(seconds=rng.randint(0, 3000))  # inside the hour when the page is read
        rows.append(Message(customer=other, channel=channel, source_kind="campaign", source_ref="d11",
                            occurrence=f"s{i}", source_label="双11大促", status="sent", due_at=at, created_at=at,
                            sent_at=at, template=template(channel)))  # fmt: skip
    for i, (status, channel, count) in enumerate(
        [("queued", "wechat", 120), ("queued", "sms", 40), ("deferred", "sms", 35), ("deferred", "email", 8),
         ("sending", "wechat", 20), ("unknown", "sms", 2)]
    ):  # fmt: skip
        rows += [
            Message(customer=other, channel=channel, source_kind="campaign", source_ref=f"q{i}", occurrence=f"q{j}",
                    status=status, due_at=now, created_at=now, template=template(channel))
            for j in range(count)
        ]  # fmt: skip
    for i, (reason, code, channel, count) in enumerate(
        [("provider_rejected", "43004", "wechat", 9), ("retries_exhausted", "timeout", "sms", 4),
         ("bounced", "550", "email", 3)]
    ):  # fmt: skip
        rows += [
            Message(customer=other, channel=channel, source_kind="campaign", source_ref=f"f{i}", occurrence=f"f{j}",
                    status="failed", reason=reason, reason_params={"error": code, "attempts": 5, "detail": code},
                    error_code=code, due_at=now, created_at=now, finished_at=now - dt.timedelta(minutes=j),
                    template=template(channel))
            for j in range(count)
        ]  # fmt: skip
    Message.objects.bulk_create(rows)


@pytest.mark.parametrize("language", list(LANGUAGES))
def test_messages_panel_and_delivery_overview_in_a_browser(browser, live_server, language):
    SHOTS.mkdir(parents=True, exist_ok=True)
    now = timezone.now()
    customer = _customer_world(now)
    _overview_world(now)
    user = _staff(None)
    short = LANGUAGES[language]
    for name, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
        context, page = _session(browser, live_server, user, language=language, viewport=viewport)
        try:
            page.goto(f"/admin/crm/customer/{customer.pk}/change/#panel-messages")
            panel = page.locator("#panel-messages")
            expect(panel.locator("[data-message]")).to_have_count(7)
            whys = panel.locator("[data-testid=message-why]").all_inner_texts()
            for text in WHY[language]:
                assert any(text in why for why in whys), (text, whys)
            # Newest first: the clicked 双11 message leads.
            expect(panel.locator("[data-message] .cm-source").first).to_have_text("双11大促")
            assert page.evaluate("document.documentElement.scrollWidth") <= viewport["width"]
            panel.scroll_into_view_if_needed()
            panel.screenshot(path=str(SHOTS / f"360_messages_{short}_{name}.png"))
            page.screenshot(path=str(SHOTS / f"360_page_{short}_{name}.png"), full_page=True)

            page.goto("/admin/campaigns/deliveryoverview/")
            queue = page.locator("[data-testid=queue]")
            expect(queue.locator("tr[data-channel=wechat] td[data-status=queued]")).to_have_text("120")
            expect(queue.locator("tr[data-channel=sms] td[data-status=deferred]")).to_have_text("35")
            expect(page.locator("[data-testid=failures] tbody tr")).to_have_count(3)
            # Chart.js drew on the canvas (it sizes the canvas to its box).
            page.wait_for_function("window.Chart && Chart.getChart('chart-send-rate')")
            drawn = page.evaluate(
                "Chart.getChart('chart-send-rate').data.datasets.map(d => d.data.reduce((a, b) => a + b, 0))"
            )
            # The 400 sends of the last hour and the customer's own sent messages still inside the window.
            inside = Message.objects.filter(sent_at__gte=timezone.now() - dt.timedelta(minutes=58)).count()
            assert inside >= 400 and sum(drawn) == inside
            assert page.evaluate("document.documentElement.scrollWidth") <= viewport["width"]
            page.screenshot(path=str(SHOTS / f"delivery_overview_{short}_{name}.png"), full_page=True)

            page.goto("/admin/campaigns/deadletter/")
            expect(page.locator("#result_list tbody tr")).to_have_count(17)
            page.screenshot(path=str(SHOTS / f"dead_letters_{short}_{name}.png"), full_page=True)
        finally:
            context.close()
