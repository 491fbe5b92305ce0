"""In a real browser: marketing previews tonight's win-back count from the unsaved rules, saves the
programme, runs it and reads the report with its charts."""

import re

import pytest
from playwright.sync_api import expect

from journeys.models import WinbackProgramme
from journeys.services.winback import winback_run
from tests.journeys.winback_helpers import dormant_customers, morning

pytestmark = pytest.mark.e2e


def test_marketing_previews_the_count_saves_and_reads_the_report(page, admin_user):
    now = morning()
    dormant_customers([{"spend": 300 - i} for i in range(12)] + [{"spend": 500, "channel": "none"}], now=now)

    page.goto("/admin/login/")
    page.fill("#id_username", admin_user.username)
    page.fill("#id_password", "password")  # pytest-django's admin_user
    page.click("#login-form [type=submit]")
    expect(page).to_have_url(re.compile(r"/admin/$"))

    page.goto("/admin/journeys/winbackprogramme/add/")
    page.fill("#id_name", "高价值沉睡客户唤醒")
    page.fill("#id_budget_offers", "100")
    page.get_by_test_id("winback-preview-button").click()
    result = page.get_by_test_id("winback-preview-eligible")
    expect(result).to_have_attribute("data-eligible", "12")
    expect(page.get_by_test_id("winback-preview-result")).to_contain_text("1")
    assert not WinbackProgramme.objects.exists()  # a preview saves nothing

    page.locator("[name=_save]").first.click()
    expect(page).to_have_url(re.compile(r"/admin/journeys/winbackprogramme/$"))
    programme = WinbackProgramme.objects.get()
    winback_run(programme=programme, now=now)
    page.goto(f"/admin/journeys/winbackprogramme/{programme.pk}/report/")
    expect(page.get_by_test_id("itt")).to_contain_text("Intention to treat")
    expect(page.get_by_test_id("winback-runs").locator("tbody tr")).to_have_count(1)
    expect(page.locator("#chart-winback-runs")).to_be_visible()
    # Chart.js drew into the canvas (its size is set by the library once it renders).
    page.wait_for_function("() => window.Chart && Object.keys(window.Chart.instances).length >= 1")
