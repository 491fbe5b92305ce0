"""The dashboard's legends and funnel steps in the reader's language: the stored summaries hold codes
(computed by the nightly job, in no one's language), and the endpoints put them into words when asked,
old rows with English labels frozen in included."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission, User
from django.utils import timezone, translation

from crm.analytics.services import analytics_refresh
from crm.models import DashboardSummary
from tests.factories import CustomerFactory, EventFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def analyst(client):
    user = User.objects.create_user("analyst", password="pw", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_dashboardsummary"))
    client.force_login(user)
    return client


def _get(client, name: str, language: str, query: str = "") -> dict:
    response = client.get(f"/analytics/{name}.json{query}", HTTP_ACCEPT_LANGUAGE=language)
    assert response.status_code == 200, response.content
    return response.json()


def _labels_in(language: str, *msgids: str) -> list[str]:
    with translation.override(language):
        return [translation.gettext(m) for m in msgids]


def test_the_stored_summaries_hold_codes_not_words():
    EventFactory(
        customer=CustomerFactory(), type="product_view", occurred_at=timezone.now() - timedelta(days=1)
    )
    with translation.override("en"):
        analytics_refresh(now=timezone.now())
    funnel = DashboardSummary.objects.get(chart="funnel", key="30d").data
    assert [s["type"] for s in funnel["steps"]] == [
        "product_view",
        "add_to_cart",
        "checkout_started",
        "order_placed",
    ]
    assert all("label" not in s for s in funnel["steps"])
    lifecycle = DashboardSummary.objects.get(chart="lifecycle", key="all").data
    assert lifecycle["stages"][0] == {"key": "prospect"}


def test_funnel_and_lifecycle_legends_follow_the_readers_language(analyst):
    EventFactory(
        customer=CustomerFactory(), type="product_view", occurred_at=timezone.now() - timedelta(days=1)
    )
    with translation.override("en"):  # the nightly job's language
        analytics_refresh(now=timezone.now())

    zh = _get(analyst, "funnel", "zh-hans")
    assert [s["label"] for s in zh["steps"]] == _labels_in(
        "zh-hans", "Viewed a product", "Added to cart", "Started checkout", "Placed an order"
    )
    assert [s["label"] for s in zh["steps"]] != [s["label"] for s in _get(analyst, "funnel", "en")["steps"]]
    assert [s["label"] for s in _get(analyst, "funnel", "en")["steps"]][0] == "Viewed a product"

    stages = {s["key"]: s["label"] for s in _get(analyst, "lifecycle", "zh-hans")["stages"]}
    assert stages["dormant"] == _labels_in("zh-hans", "Dormant")[0] != "Dormant"
    assert {s["key"]: s["label"] for s in _get(analyst, "lifecycle", "en")["stages"]}["dormant"] == "Dormant"

    # A window chosen by dates is computed live, and labelled the same way.
    today = timezone.localdate()
    live = _get(analyst, "funnel", "zh-hans", f"?from={today - timedelta(days=3)}&to={today}")
    assert [s["label"] for s in live["steps"]] == [s["label"] for s in zh["steps"]]


def test_old_rows_with_english_labels_are_shown_in_chinese(analyst):
    """Summaries stored before the labels became codes carry English words: the key decides."""
    now = timezone.now()
    DashboardSummary.objects.create(
        chart="funnel",
        key="30d",
        computed_at=now,
        data={
            "steps": [
                {"type": "product_view", "label": "Viewed a product", "customers": 3, "from_previous": None},
                {"type": "add_to_cart", "label": "Added to cart", "customers": 1, "from_previous": 0.3333},
            ],
            "from": (now - timedelta(days=30)).isoformat(),
            "to": now.isoformat(),
        },
    )
    DashboardSummary.objects.create(
        chart="lifecycle",
        key="all",
        computed_at=now,
        data={
            "months": [],
            "stages": [{"key": "active", "label": "Active"}],
            "series": {},
            "tracked_since": None,
        },
    )
    steps = _get(analyst, "funnel", "zh-hans")["steps"]
    assert [s["label"] for s in steps] == _labels_in("zh-hans", "Viewed a product", "Added to cart")
    assert steps[1]["customers"] == 1
    assert _get(analyst, "lifecycle", "zh-hans")["stages"] == [
        {"key": "active", "label": _labels_in("zh-hans", "Active")[0]}
    ]
