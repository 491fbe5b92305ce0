"""The live progress of "Save and recompute" (lifecycle settings) and "Recompute now" (dashboards): the
admin's message points at a status endpoint, which follows the job from queued to its result."""

from __future__ import annotations

import html
import re
from datetime import timedelta
from urllib.parse import parse_qs, urlparse

import pytest
from django.contrib.messages import get_messages
from django.urls import reverse
from django.utils import timezone

from crm.analytics import services as analytics_services
from crm.analytics.services import analytics_refresh
from crm.models import LifecycleSettings
from crm.services.metrics import metrics_compute
from tests.crm.metrics_helpers import place_orders
from tests.factories import CustomerFactory

pytestmark = pytest.mark.django_db

SETTINGS_FORM = {
    "mode": "cycle",
    "new_days": 30,
    "active_cycles": "1.5",
    "at_risk_cycles": "2.5",
    "dormant_cycles": "4",
    "min_cycle_days": 14,
    "max_cycle_days": 180,
    "default_cycle_days": "",
    "active_days": 90,
    "at_risk_days": 180,
    "dormant_days": 365,
    "high_value_share": "0.2",
    "medium_value_share": "0.3",
}


def _progress_url(response) -> str:
    text = "".join(str(m) for m in get_messages(response.wsgi_request))
    found = re.search(r'data-job-progress="([^"]+)"', text)
    assert found, text
    return html.unescape(found.group(1))


def test_save_and_recompute_shows_the_run_from_queued_to_its_result(admin_client, monkeypatch):
    monkeypatch.setattr("crm.services.metrics.task_queue_on_commit", lambda *a, **k: None)
    place_orders(CustomerFactory(), timezone.localdate() - timedelta(days=40))
    LifecycleSettings.load()
    response = admin_client.post(
        reverse("admin:crm_lifecyclesettings_change", args=[1]), {**SETTINGS_FORM, "_recompute_metrics": "1"}
    )
    assert response.status_code == 302
    url = _progress_url(response)
    assert urlparse(url).path == reverse("crm_analytics:metrics_job")
    page = admin_client.get(response["Location"])
    assert "crm/admin/job_progress.js" in page.content.decode()

    queued = admin_client.get(url).json()
    assert queued["state"] == "queued" and "worker" in queued["message"]

    run = metrics_compute()  # what the worker does with the queued task
    done = admin_client.get(url).json()
    assert done["state"] == "done", done
    assert "1 customers" in done["message"] and done["link"].endswith(f"/{run.pk}/change/")


def test_a_run_started_before_the_request_is_not_taken_for_its_result(admin_client):
    metrics_compute()
    since = timezone.now() + timedelta(seconds=1)
    body = admin_client.get(reverse("crm_analytics:metrics_job"), {"since": since.isoformat()}).json()
    assert body["state"] == "queued"


def test_recompute_now_counts_the_dashboard_figures_as_they_are_stored(admin_client, monkeypatch):
    monkeypatch.setattr("crm.admin.analytics.analytics_refresh_queue", lambda: None)
    response = admin_client.post(reverse("admin:crm_dashboardsummary_refresh"))
    url = _progress_url(response)
    since = parse_qs(urlparse(url).query)["since"][0]
    first = admin_client.get(url).json()
    assert (first["state"], first["done"]) == ("queued", 0)

    analytics_refresh()
    done = admin_client.get(url).json()
    total = len(analytics_services._refresh_plan(full=False, now=timezone.now()))
    assert (done["state"], done["done"], done["total"]) == ("done", total, total), (since, done)


@pytest.mark.parametrize("since", ["", "yesterday", "2026-12-01T10:00:00"])
def test_a_bad_since_is_a_400_naming_it(admin_client, since):
    response = admin_client.get(reverse("crm_analytics:metrics_job"), {"since": since})
    assert response.status_code == 400 and "since" in response.json()["error"]


def test_the_status_needs_the_permission_to_see_runs(client, django_user_model):
    user = django_user_model.objects.create_user("staff", password="pw-12345-xyz", is_staff=True)
    client.force_login(user)
    response = client.get(reverse("crm_analytics:metrics_job"), {"since": timezone.now().isoformat()})
    assert response.status_code == 403
