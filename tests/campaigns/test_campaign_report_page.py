"""The report page (admin) and the CSV of per-customer outcomes, on the hand-computed world of
test_campaign_report.py: the figures on the page, the winner's decision in words, the chart data, the CSV's
rows, English and Chinese, and who may open them."""

from __future__ import annotations

import csv
import io
import json

import pytest
from django.urls import reverse

from campaigns.models import CampaignRun
from tests.campaigns.staff_helpers import staff_user
from tests.campaigns.test_campaign_report import report_world

pytestmark = pytest.mark.django_db


def _url(run, name="run"):
    return reverse(f"admin:campaigns_campaignrunreport_{name}", args=[run.pk])


@pytest.mark.parametrize("language", ["en", "zh-hans"])
def test_the_report_page_shows_each_arm_the_charts_and_the_winner(admin_client, language):
    run = report_world()
    CampaignRun.objects.filter(pk=run.pk).update(
        winner_key="A",
        winner_decided_at=run.due_at,
        winner_decision={
            "metric": "clicked",
            "min_sample": 100,
            "confidence": 0.95,
            "comparison_confidence": 0.95,
            "default_key": "A",
            "arms": [{"key": "A", "n": 4, "value": 0.25}, {"key": "B", "n": 3, "value": 0.0}],
            "comparisons": [],
            "winner_key": "A",
            "reason": "sample_too_small",
            "rest_enqueued": 0,
        },
    )
    response = admin_client.get(_url(run), HTTP_ACCEPT_LANGUAGE=language)
    assert response.status_code == 200
    html = response.content.decode()
    arms = {row["key"]: row for row in response.context["arms"]}
    assert set(arms) == {"A", "B", "holdout"}
    assert arms["A"]["figures"].converted == 2 and arms["A"]["conversion_rate"] == "50.00 %"
    assert 'data-arm="holdout"' in html
    chart = json.loads(response.context["chart"] and json.dumps(response.context["chart"]))
    assert [a["values"][-1] for a in chart["funnel"]["arms"]] == [
        50.0,
        pytest.approx(33.3333, abs=1e-3),
        pytest.approx(33.3333, abs=1e-3),
    ]
    assert [u["label"] for u in chart["uplift"]] == (
        ["Variant A", "Variant B"] if language == "en" else ["变体 A", "变体 B"]
    )
    assert 'id="campaign-report-chart"' in html and "chart.umd.min.js" in html
    if language == "en":
        assert "fewer recipients than the minimum sample (100): A is kept" in html
        assert "Newcombe" in html
    else:
        assert "最小样本" in html and "自动胜出" in html
    # the page stored what it computed: the next view reads it
    assert run.report.figures["arms"][0]["key"] == "A"


def test_the_csv_lists_every_recipients_outcome(admin_client):
    run = report_world()
    response = admin_client.get(_url(run, "csv"), HTTP_ACCEPT_LANGUAGE="en")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    assert response.streaming
    body = b"".join(response.streaming_content).decode("utf-8")
    assert body.startswith("\ufeff")
    rows = list(csv.DictReader(io.StringIO(body.lstrip("\ufeff"))))
    assert len(rows) == 10
    by_arm = {}
    for row in rows:
        by_arm.setdefault(row["arm"], []).append(row)
    assert [r["converted"] for r in by_arm["A"]] == ["yes", "no", "no", "yes"]
    assert [r["message status"] for r in by_arm["A"]] == ["Clicked", "Delivered", "Failed", "Suppressed"]
    assert [r["revenue"] for r in by_arm["B"]] == ["220.00", "0.00", "0.00"]
    assert [r["message status"] for r in by_arm["holdout"]] == ["", "", ""]
    assert sum(float(r["revenue"]) for r in rows) == 430.0


def test_a_run_not_started_says_so_and_unknown_runs_are_404(admin_client):
    run = report_world()
    CampaignRun.objects.filter(pk=run.pk).update(started_at=None)
    response = admin_client.get(_url(run))
    assert response.status_code == 200 and 'data-testid="not-started"' in response.content.decode()
    assert admin_client.get(reverse("admin:campaigns_campaignrunreport_run", args=[99999])).status_code == 404
    assert admin_client.get(_url(run, "csv")).status_code == 404


def test_the_report_follows_the_roles(client):
    run = report_world()
    client.force_login(staff_user("analyst"))
    assert client.get(_url(run)).status_code == 200
    assert client.get(_url(run, "csv")).status_code == 200
    client.force_login(staff_user("support"))
    assert client.get(_url(run)).status_code == 403
    assert client.get(_url(run, "csv")).status_code == 403


def test_the_campaign_list_and_page_show_the_reports_figures(admin_client):
    from decimal import Decimal

    from campaigns.models import Campaign
    from campaigns.services.reports import campaign_run_report_refresh

    run = report_world()
    Campaign.objects.filter(pk=run.campaign_id).update(cost_per_message=Decimal("0.0500"))
    run.refresh_from_db()
    campaign_run_report_refresh(run=run, now=run.due_at)
    response = admin_client.get(reverse("admin:campaigns_campaign_changelist"), HTTP_ACCEPT_LANGUAGE="en")
    html = response.content.decode()
    # treated: 3 converted, revenue 130 + 220 = 350.00; cost 6 sent x 0.05 = 0.30; ROI 349.70 / 0.30
    figures = response.context["cl"].model_admin._figures[run.campaign_id]
    assert (figures["converted"], figures["revenue"]) == (3, Decimal("350"))
    assert figures["roi"] == pytest.approx(Decimal("1165.6667"), abs=Decimal("0.0001"))
    assert "350.00 CNY" in html and "116567%" in html
    page = admin_client.get(reverse("admin:campaigns_campaign_change", args=[run.campaign_id]))
    assert _url(run) in page.content.decode()


def _costs_by_channel(run):
    """Variant B goes out by SMS (0.05 a message), A by the campaign's email (0.01); the campaign's own
    cost per message (0.50) is for channels without a row, so it must not be used."""
    from decimal import Decimal

    from campaigns.models import Campaign, CampaignChannelCost, CampaignVariant

    Campaign.objects.filter(pk=run.campaign_id).update(cost_per_message=Decimal("0.5000"))
    CampaignVariant.objects.filter(campaign_id=run.campaign_id, key="B").update(channel="sms")
    CampaignChannelCost.objects.create(campaign_id=run.campaign_id, channel="email", cost_per_message="0.01")
    CampaignChannelCost.objects.create(campaign_id=run.campaign_id, channel="sms", cost_per_message="0.05")


def test_roi_costs_each_arms_messages_at_its_channels_price_in_the_list_and_the_report(admin_client):
    from decimal import Decimal

    from campaigns.services.reports import campaign_run_report_refresh

    run = report_world()
    _costs_by_channel(run)
    run.refresh_from_db()
    campaign_run_report_refresh(run=run, now=run.due_at)
    # A: 3 sent x 0.01 = 0.03; B: 3 sent x 0.05 = 0.15; cost 0.18; revenue 350; ROI (350 - 0.18) / 0.18
    response = admin_client.get(reverse("admin:campaigns_campaign_changelist"), HTTP_ACCEPT_LANGUAGE="en")
    figures = response.context["cl"].model_admin._figures[run.campaign_id]
    assert figures["roi"] == pytest.approx(Decimal("1943.4444"), abs=Decimal("0.0001"))
    assert "194344%" in response.content.decode()

    page = admin_client.get(_url(run), HTTP_ACCEPT_LANGUAGE="en")
    returns = page.context["returns"]
    assert [(a["key"], a["sent"], a["cost"]) for a in returns["arms"]] == [
        ("A", 3, Decimal("0.03")),
        ("B", 3, Decimal("0.15")),
    ]
    assert returns["summary"].cost == Decimal("0.18")
    # incremental: 350 - 80 / 3 x 7 = 163.33; (163.33 - 0.18) / 0.18 = 906.39 (90,638.9 %)
    assert returns["summary"].incremental_revenue == Decimal("163.33")
    assert (returns["roi"], returns["incremental_roi"]) == ("194,344.4 %", "90,638.9 %")
    html = page.content.decode()
    assert 'data-testid="roi">194,344.4 %' in html and "Cost and return" in html
    zh = admin_client.get(_url(run), HTTP_ACCEPT_LANGUAGE="zh-hans").content.decode()
    assert "成本与回报" in zh and "增量投资回报率" in zh
