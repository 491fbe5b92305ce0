"""In a real browser: a staff user previews a demo template for a customer found by phone, makes a test
send to their own phone, and sees that message in the customer's 360 "Messages" panel, marked as a test
send, sent, with the staff address it went to (the test send is about this customer, so it belongs in
their panel; it is not theirs to count against caps)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from playwright.sync_api import expect

from campaigns.demo_templates import demo_templates_seed
from campaigns.models import Message, MessageTemplate
from tests.e2e.test_admin_workspace import DESKTOP, _session, _staff
from tests.factories import CustomerFactory

pytestmark = pytest.mark.e2e

SHOTS = Path(os.environ.get("SHOTS_DIR", "/work/shots/staff"))
TEXTS = {
    "en": {"sent": "Sent", "test": "Test send", "done": r"Test message #\d+ to \+8613900001111: Sent\."},
    "zh-hans": {
        "sent": "已发送",
        "test": "测试发送",
        "done": r"测试消息 #\d+（发往 \+8613900001111）：已发送。",
    },
}


@pytest.mark.parametrize("language", list(TEXTS))
def test_a_test_send_from_the_preview_shows_in_the_customers_messages_panel(browser, live_server, language):
    demo_templates_seed()
    template = MessageTemplate.objects.get(code="birthday_wish.sms")
    customer = CustomerFactory(
        name="王芳", phone="+8613800138000", time_zone="Asia/Shanghai", language="zh-hans"
    )
    CustomerFactory(name="王芳芳", phone="+8613800138999")  # a second match for the search
    texts = TEXTS[language]
    context, page = _session(browser, live_server, _staff(None), language=language, viewport=DESKTOP)
    try:
        page.goto(f"/admin/campaigns/messagetemplate/{template.pk}/preview/")
        page.fill("#id_q", "王芳")
        page.locator("#customer-search [type=submit]").click()
        page.locator(".found-customers a", has_text="+8613800138000").click()
        chosen = page.locator(".preview-variant[data-chosen=true]")
        expect(chosen).to_contain_text("王芳，生日快乐")
        page.fill("#id_address", "139 0000 1111")
        page.locator("#test-send [type=submit]").click()
        # The pipeline ran in the request: the page says how the test ended, not only that it was asked.
        expect(page.get_by_text(re.compile(texts["done"]))).to_be_visible()

        message = Message.objects.get(customer=customer)
        assert (message.purpose, message.status, message.address) == ("test", "sent", "+8613900001111")
        assert (
            message.template_version_id == template.current_version_id
            and message.source_label == template.name
        )

        page.goto(f"/admin/crm/customer/{customer.pk}/change/#panel-messages")
        row = page.locator(f"#panel-messages [data-message='{message.pk}']")
        expect(row).to_have_count(1)
        expect(row.locator(".cm-status")).to_have_text(texts["sent"])
        expect(row.locator("[data-testid=test-send]")).to_contain_text(texts["test"])
        expect(row.locator("[data-testid=test-send]")).to_contain_text("+8613900001111")
        expect(row.locator(".cm-source")).to_contain_text(template.name)
        SHOTS.mkdir(parents=True, exist_ok=True)
        row.screenshot(path=str(SHOTS / f"360_test_send_{language}.png"))
    finally:
        context.close()
