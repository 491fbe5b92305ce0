"""The publish page (journeys/admin/publish.py) and who may edit, publish and pause journeys (the staff
roles of journeys/roles.py, applied to the real role groups)."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import override

from journeys.models import (
    Enrollment,
    EnrollmentState,
    InFlight,
    Journey,
    JourneyStatus,
    VersionMigration,
    VersionStatus,
)
from journeys.services.journeys import journey_draft_create, journey_graph_save
from tests.factories import CustomerFactory
from tests.journeys.engine_helpers import enter, published, run
from tests.journeys.graphs import chain, entry, node

pytestmark = pytest.mark.django_db


def wait(node_id, hours):
    return node(node_id, "wait", mode="duration", duration={"value": hours, "unit": "hours"})


def in_role(role: str) -> Client:
    user = get_user_model().objects.create_user(f"{role}-user", password="pw", is_staff=True)
    user.groups.add(Group.objects.get(name=role))
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def journey_with_customers():
    """v1 published (entry -> w1 -> w2 -> x) with two customers waiting at w1 and one at w2, and a draft
    v2 (entry -> w1 -> x) without w2."""
    now = timezone.now()
    v1 = published(chain(entry(), wait("w1", 1), wait("w2", 5), node("x", "exit")), now=now)
    enter(v1, [CustomerFactory()], occurrence="early", now=now - timedelta(hours=2))
    run(now - timedelta(hours=2))
    run(now - timedelta(minutes=30))
    enter(v1, [CustomerFactory(), CustomerFactory()], occurrence="late", now=now)
    run(now)
    journey_draft_create(journey=v1.journey)
    journey_graph_save(journey=v1.journey, graph=chain(entry(), wait("w1", 2), node("x", "exit")))
    return v1.journey


def page_url(journey) -> str:
    return reverse("admin:journeys_journey_publish", args=(journey.pk,))


def test_the_page_lists_the_old_nodes_with_their_customers_and_prefilled_targets(
    admin_client, journey_with_customers
):
    response = admin_client.get(page_url(journey_with_customers))
    assert response.status_code == 200
    rows = {row["node_id"]: row for row in response.context["rows"]}
    assert {n: r["count"] for n, r in rows.items()} == {"entry": 0, "w1": 2, "w2": 1, "x": 0}
    assert {n: r["bound"].initial for n, r in rows.items()} == {
        "entry": "entry",
        "w1": "w1",
        "w2": "",
        "x": "x",
    }
    # The new entry is offered only to the old entry's customers.
    w1_choices = [value for value, _label in response.context["form"].fields["node__w1"].choices]
    assert "entry" not in w1_choices and {"", "w1", "x"} <= set(w1_choices)
    html = response.content.decode()
    assert 'data-testid="count-w1">2<' in html


def test_moving_from_the_page_moves_and_exits_and_says_how_many(admin_client, journey_with_customers):
    journey = journey_with_customers
    form = {"version": 2, "in_flight": "move", "node__entry": "entry", "node__w1": "w1", "node__w2": ""}
    form["node__x"] = "x"
    response = admin_client.post(page_url(journey), form, follow=True)
    assert response.status_code == 200
    text = " ".join(str(m) for m in response.context["messages"])
    assert "2 customers moved to it, 1 exited" in text
    journey.refresh_from_db()
    assert journey.current_version.number == 2
    states = sorted(Enrollment.objects.values_list("version__number", "node_id", "state"))
    assert states == [(1, "w2", EnrollmentState.EXITED), (2, "w1", "waiting"), (2, "w1", "waiting")]
    # The form submitted twice (a double click): the first result, nobody moved again.
    again = admin_client.post(page_url(journey), form, follow=True)
    assert again.status_code == 200 and VersionMigration.objects.count() == 1


def test_a_bad_mapping_is_shown_on_the_page_not_a_500(admin_client, journey_with_customers):
    form = {"version": 2, "in_flight": "move", "node__entry": "entry", "node__w1": "nowhere"}
    response = admin_client.post(page_url(journey_with_customers), form)
    assert response.status_code == 200  # the form refuses a choice it did not offer
    assert "node__w1" in response.context["form"].errors
    stale = admin_client.post(page_url(journey_with_customers), {"version": 7, "in_flight": "stay"})
    assert stale.status_code == 400 and "Version 7" in " ".join(stale.context["problems"])
    assert Journey.objects.get().current_version.number == 1


def test_staying_from_the_page_leaves_customers_on_their_version(admin_client, journey_with_customers):
    response = admin_client.post(page_url(journey_with_customers), {"version": 2, "in_flight": "stay"})
    assert response.status_code == 302
    assert set(Enrollment.objects.values_list("version__number", flat=True)) == {1}
    assert VersionMigration.objects.get().mode == InFlight.STAY


def test_the_page_speaks_chinese(admin_client, journey_with_customers):
    with override("zh-hans"):
        response = admin_client.get(page_url(journey_with_customers), HTTP_ACCEPT_LANGUAGE="zh-hans")
    html = response.content.decode()
    assert "在途客户" in html and "Customers in flight" not in html


def test_the_journeys_page_links_to_the_publish_page_when_there_is_a_draft(
    admin_client, journey_with_customers
):
    change = reverse("admin:journeys_journey_change", args=(journey_with_customers.pk,))
    assert page_url(journey_with_customers) in admin_client.get(change).content.decode()


# --- Roles -------------------------------------------------------------------------------------------


def designer_url(journey, name, number):
    return reverse(f"admin:journeys_journey_designer_{name}", args=(journey.pk, number))


def put_graph(client, journey, number, graph_doc):
    body = json.dumps({"graph": graph_doc})
    return client.put(designer_url(journey, "graph", number), data=body, content_type="application/json")


def post_publish(client, journey, number):
    return client.post(designer_url(journey, "publish", number), data="{}", content_type="application/json")


def test_a_marketer_edits_the_draft_but_may_not_publish_or_pause(journey_with_customers):
    journey = journey_with_customers
    marketer = in_role("marketer")
    assert (
        put_graph(marketer, journey, 2, chain(entry(), wait("w1", 3), node("x", "exit"))).status_code == 200
    )
    refused = post_publish(marketer, journey, 2)
    assert refused.status_code == 403 and "publish" in refused.json()["message"]
    assert marketer.get(page_url(journey)).status_code == 403
    assert marketer.post(page_url(journey), {"version": 2, "in_flight": "stay"}).status_code == 403
    changelist = reverse("admin:journeys_journey_changelist")
    action_form = marketer.get(changelist).context["action_form"]  # None when no action is left
    actions = {name for name, _label in action_form.fields["action"].choices} if action_form else set()
    assert not {"publish_selected", "pause_selected", "archive_selected"} & actions
    paused = marketer.post(changelist, {"action": "pause_selected", "_selected_action": [journey.pk]})
    assert paused.status_code == 200  # the admin answers "no such action", and nothing changes
    journey.refresh_from_db()
    assert (journey.status, journey.current_version.number) == (JourneyStatus.PUBLISHED, 1)


def test_an_analyst_may_neither_edit_nor_publish(journey_with_customers):
    analyst = in_role("analyst")
    graph_doc = chain(entry(), node("x", "exit"))
    assert put_graph(analyst, journey_with_customers, 2, graph_doc).status_code == 403
    assert post_publish(analyst, journey_with_customers, 2).status_code == 403
    assert analyst.get(designer_url(journey_with_customers, "graph", 2)).status_code == 200


def test_a_marketing_manager_publishes_and_pauses(journey_with_customers):
    journey = journey_with_customers
    manager = in_role("marketing_manager")
    assert manager.get(page_url(journey)).status_code == 200
    assert post_publish(manager, journey, 2).status_code == 200
    assert journey.versions.get(number=2).status == VersionStatus.PUBLISHED
    changelist = reverse("admin:journeys_journey_changelist")
    manager.post(changelist, {"action": "pause_selected", "_selected_action": [journey.pk]})
    journey.refresh_from_db()
    assert journey.status == JourneyStatus.PAUSED
