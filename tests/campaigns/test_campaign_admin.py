"""The campaign pages: the list's figures, the buttons each role is offered (and refused when it posts
anyway), the progress JSON the bar polls, and "Send a campaign to this segment" on a segment's page."""

from __future__ import annotations

import pytest
from django.urls import reverse
from django.utils import timezone

from campaigns.models import Campaign, CampaignRun, Message
from campaigns.services.campaigns import campaign_run_start
from tests.campaigns.campaign_helpers import campaign_make, customers_sql, run_make, segment_make
from tests.campaigns.staff_helpers import staff_user

pytestmark = pytest.mark.django_db


@pytest.fixture
def draft(db):
    customers_sql(40)
    return campaign_make(segment=segment_make())


def _actions(client, campaign):
    response = client.get(reverse("admin:campaigns_campaign_change", args=[campaign.pk]))
    assert response.status_code == 200
    return [name for name, _label in response.context["campaign_actions"]]


def test_a_marketer_submits_but_may_not_approve_a_manager_approves(client, draft):
    client.force_login(staff_user("marketer"))
    assert _actions(client, draft) == ["submit", "cancel"]
    url = lambda action: reverse("admin:campaigns_campaign_action", args=[draft.pk, action])  # noqa: E731
    assert client.post(url("submit")).status_code == 302
    draft.refresh_from_db()
    assert draft.status == "awaiting_approval"
    assert client.post(url("approve")).status_code == 403
    assert client.get(url("submit")).status_code == 405

    client.force_login(staff_user("marketing_manager"))
    assert _actions(client, draft) == ["approve", "cancel"]
    response = client.post(url("approve"), follow=True)
    assert "Approved and scheduled." in response.content.decode()
    draft.refresh_from_db()
    assert draft.status == "scheduled" and CampaignRun.objects.filter(campaign=draft).count() == 1
    # Pressing a button the status no longer offers says so instead of failing.
    response = client.post(url("approve"), follow=True)
    assert "this is not possible now" in response.content.decode()


def test_submit_with_a_problem_says_what_is_missing(client, db):
    campaign = campaign_make(segment=None)
    client.force_login(staff_user("marketer"))
    response = client.post(
        reverse("admin:campaigns_campaign_action", args=[campaign.pk, "submit"]), follow=True
    )
    assert response.status_code == 200
    assert "Choose the segment to send to." in response.content.decode()


def test_the_progress_json_and_the_list_figures(client, draft):
    now = timezone.now()
    Campaign.objects.filter(pk=draft.pk).update(status="scheduled")
    run = run_make(draft, now=now)
    campaign_run_start(run=run, now=now)
    run.refresh_from_db()
    first = Message.objects.filter(occurrence=str(run.pk)).order_by("id")
    Message.objects.filter(id__in=list(first.values_list("id", flat=True)[:3])).update(
        status="suppressed", reason="no_consent", reason_params={"channel": "sms"}
    )
    Message.objects.filter(
        id__in=list(first.filter(status="queued").values_list("id", flat=True)[:5])
    ).update(status="delivered")
    client.force_login(staff_user("analyst"))
    body = client.get(reverse("admin:campaigns_campaign_progress", args=[draft.pk])).json()
    assert body["total"] == run.enqueued_size and body["done"] == 8 and body["status"] == "sending"
    groups = {g["key"]: g["count"] for g in body["groups"]}
    assert groups["suppressed"] == 3 and groups["delivered"] == 5
    assert groups["queued"] == run.enqueued_size - 8
    assert body["reasons"][0]["reason"] == "no_consent" and body["reasons"][0]["count"] == 3
    assert client.get(reverse("admin:campaigns_campaign_progress", args=[999999])).status_code == 404

    response = client.get(reverse("admin:campaigns_campaign_changelist"))
    html = response.content.decode()
    assert response.status_code == 200 and f">{run.audience_size:,}<" in html
    figures = response.context["cl"].model_admin._figures[draft.pk]
    assert figures == {"audience": run.audience_size, "sent": 5, "delivered": 5}


def test_the_segment_page_offers_a_campaign_to_it(client, draft):
    segment = draft.segment
    client.force_login(staff_user("marketer"))
    html = client.get(reverse("admin:crm_segment_change", args=[segment.pk])).content.decode()
    link = f"{reverse('admin:campaigns_campaign_add')}?audience_kind=segment&amp;segment={segment.pk}"
    assert link in html and "Send a campaign to this segment" in html
    form = client.get(link.replace("&amp;", "&")).context["adminform"].form
    assert form.initial["segment"] == str(segment.pk)
    client.force_login(staff_user("analyst"))  # may not add campaigns
    html = client.get(reverse("admin:crm_segment_change", args=[segment.pk])).content.decode()
    assert "Send a campaign to this segment" not in html
