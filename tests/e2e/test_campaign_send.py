"""In a real browser: from a segment's page a marketing manager creates a campaign with two variants and a
10 % holdout and the cost of an SMS, approves and schedules it, and watches the progress bar reach the end while the outbox
sends (the dispatcher in this process, into the sink provider); then opens the report and reads its cost. Screenshot in /work/shots/staff/ (or $SHOTS_DIR)."""

from __future__ import annotations

import os
import re
import threading
from decimal import Decimal
from pathlib import Path

import pytest
from playwright.sync_api import expect

from campaigns.models import Campaign, CampaignRecipient, Message, MessageTemplate
from tests.campaigns.campaign_helpers import customers_sql, segment_make
from tests.campaigns.conftest import pipeline  # noqa: F401  (the outbox with the sink provider)
from tests.e2e.test_admin_workspace import DESKTOP, _session, _staff

pytestmark = pytest.mark.e2e

SHOTS = Path(os.environ.get("SHOTS_DIR", "/work/shots/staff"))


@pytest.fixture
def eager_celery(monkeypatch):
    """The start task runs in the web process when the approval commits (no broker in this test; the real
    worker's run is tests/integration/test_campaign_worker.py)."""
    from config.celery import app

    monkeypatch.setitem(app.conf, "task_always_eager", True)


def _drain_until(stop: threading.Event):
    from django.db import connection

    from campaigns.services.dispatch import dispatch_run

    try:
        while not stop.is_set():
            dispatch_run(worker="e2e", limit_seconds=1, batch_size=25)
            stop.wait(0.3)
    finally:
        connection.close()


@pytest.mark.usefixtures("pipeline", "eager_celery")
def test_a_campaign_from_a_segment_with_two_variants_and_a_holdout_is_sent_and_watched(
    browser, live_server, transactional_db
):
    customers_sql(200)
    segment = segment_make("上海会员")
    templates = {
        key: MessageTemplate.objects.create(code=f"d11-{key}", name=f"双11 版本{key}", channel="sms").pk
        for key in ("A", "B")
    }
    manager = _staff("marketing_manager")
    context, page = _session(browser, live_server, manager, language="en", viewport=DESKTOP)

    page.goto(f"/admin/crm/segment/{segment.pk}/change/")
    page.get_by_text("Send a campaign to this segment").click()
    expect(page).to_have_url(re.compile(r"/admin/campaigns/campaign/add/"))
    page.fill("#id_name", "双11预热")
    page.select_option("#id_channel", "sms")
    expect(page.locator("#id_segment")).to_have_value(str(segment.pk))
    page.fill("#id_holdout_percent", "10")
    page.fill("#id_variants-0-key", "A")
    page.select_option("#id_variants-0-template", str(templates["A"]))
    page.fill("#id_variants-0-weight", "50")
    page.locator(".add-row").first.click()
    page.fill("#id_variants-1-key", "B")
    page.select_option("#id_variants-1-template", str(templates["B"]))
    page.fill("#id_variants-1-weight", "50")
    # What an SMS costs, for the report's ROI (a channel without a row would cost the campaign's default).
    page.locator("#channel_costs-group .add-row").click()
    page.select_option("#id_channel_costs-0-channel", "sms")
    page.fill("#id_channel_costs-0-cost_per_message", "0.05")
    page.click("[type=submit][name=_continue]")
    expect(page).to_have_url(re.compile(r"/admin/campaigns/campaign/\d+/change/"))
    campaign = Campaign.objects.get(name="双11预热")
    assert sorted(campaign.variants.values_list("key", "weight")) == [("A", 50), ("B", 50)]
    assert list(campaign.channel_costs.values_list("channel", "cost_per_message")) == [
        ("sms", Decimal("0.05"))
    ]

    stop = threading.Event()
    sender = threading.Thread(target=_drain_until, args=(stop,), daemon=True)
    sender.start()
    try:
        page.get_by_role("button", name="Approve and schedule").click()
        expect(page.get_by_text("Approved and scheduled.")).to_be_visible()
        progress = page.locator("#campaign-progress")
        expect(progress).to_have_attribute("data-over", "true", timeout=90_000)
        expect(progress.locator('[data-field="status_label"]')).to_have_text("Sent")
    finally:
        stop.set()
        sender.join(30)
    bar = progress.locator("progress")
    assert bar.evaluate("b => [b.value, b.max]") == [campaign.runs.get().enqueued_size] * 2
    expect(progress.locator('tr[data-group="sent"] td')).to_have_text(str(campaign.runs.get().enqueued_size))
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "campaign_sent.png"), full_page=True)

    holdout = CampaignRecipient.objects.filter(run__campaign=campaign, arm="holdout").count()
    assert 0 < holdout < 50
    assert Message.objects.filter(source_ref=str(campaign.pk), status="sent").count() == 200 - holdout
    campaign.refresh_from_db()
    assert campaign.status == "sent"

    page.reload()  # the runs table shows the report link once the run started
    page.get_by_test_id("run-report").click()
    expect(page).to_have_url(re.compile(r"/admin/campaigns/campaignrunreport/run/\d+/"))
    expect(page.locator("body")).to_contain_text("holdout")
    sent = 200 - holdout
    returns = page.get_by_test_id("returns")
    expect(returns.locator('tr[data-arm="total"] [data-col="cost"]')).to_have_text(f"{sent * 0.05:.2f}")
    expect(page.get_by_test_id("roi")).not_to_be_empty()
    page.screenshot(path=str(SHOTS / "campaign_report.png"), full_page=True)
    context.close()
