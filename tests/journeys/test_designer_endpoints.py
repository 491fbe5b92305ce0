"""The designer's page and JSON endpoints (journeys/admin_designer.py): what they answer to good and bad
input, to staff without the journeys permissions, and to a request without its CSRF token."""

from __future__ import annotations

import json

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse

from campaigns.models import MessageTemplate
from journeys.models import Journey, JourneyVersion, VersionStatus
from journeys.nodes import node_types
from journeys.services.journeys import journey_create, journey_publish

pytestmark = pytest.mark.django_db


def graph_three(template: str | None = "cart_reminder") -> dict:
    send = {"channel": "best", "on_cap": "defer"}
    if template is not None:
        send["template"] = template
    return {
        "schema": 1,
        "nodes": [
            {
                "id": "n1",
                "type": "entry",
                "config": {"trigger": {"kind": "event", "event_type": "add_to_cart", "filters": []}},
                "position": {"x": 0, "y": 0},
            },
            {"id": "n2", "type": "send_message", "config": send, "position": {"x": 250, "y": 0}},
            {"id": "n3", "type": "exit", "config": {}, "position": {"x": 500, "y": 0}},
        ],
        "edges": [
            {"id": "e1", "source": "n1", "source_handle": "next", "target": "n2"},
            {"id": "e2", "source": "n2", "source_handle": "next", "target": "n3"},
        ],
    }


@pytest.fixture
def template():
    return MessageTemplate.objects.create(code="cart_reminder", name="Cart reminder", channel="sms")


@pytest.fixture
def journey(template):
    return journey_create(name="Cart abandonment", graph=graph_three(None))


def urls(journey: Journey, number: int = 1) -> dict:
    args = (journey.pk, number)
    return {
        "page": reverse("admin:journeys_journey_designer", args=(journey.pk,)),
        "graph": reverse("admin:journeys_journey_designer_graph", args=args),
        "publish": reverse("admin:journeys_journey_designer_publish", args=args),
        "counts": reverse("admin:journeys_journey_designer_counts", args=args),
        "new_draft": reverse("admin:journeys_journey_designer_new_draft", args=(journey.pk,)),
        "results": reverse("admin:journeys_journey_designer_results", args=(journey.pk,)),
    }


def put(client, url, body, **kw):
    data = body if isinstance(body, str | bytes) else json.dumps(body)
    return client.put(url, data=data, content_type="application/json", **kw)


def post(client, url, body=None, **kw):
    return client.post(url, data=json.dumps(body or {}), content_type="application/json", **kw)


def staff(*perms: str):
    user = get_user_model().objects.create_user(
        f"staff-{'-'.join(perms) or 'none'}", password="pw", is_staff=True
    )
    for perm in perms:
        user.user_permissions.add(Permission.objects.get(content_type__app_label="journeys", codename=perm))
    client = Client()
    client.force_login(user)
    return client


def test_the_page_carries_the_graph_the_catalogue_and_the_endpoints(admin_client, journey, template):
    response = admin_client.get(urls(journey)["page"])
    assert response.status_code == 200
    boot = response.context["boot"]
    assert boot["graph"] == journey.versions.get().graph
    assert [t["type"] for t in boot["catalogue"]["types"]] == [t.key for t in node_types()]
    send = next(t for t in boot["catalogue"]["types"] if t["type"] == "send_message")
    assert send["exits"] == [{"id": "next", "label": "next"}]
    template_field = next(f for f in send["fields"] if f["name"] == "template")
    assert template_field["choices"] == [
        {"value": "cart_reminder", "label": "cart_reminder · Cart reminder (sms)"}
    ]
    split = next(t for t in boot["catalogue"]["types"] if t["type"] == "random_split")
    assert split["dynamic_exits"] == "branches"
    condition = next(t for t in boot["catalogue"]["types"] if t["type"] == "condition")
    assert [e["id"] for e in condition["exits"]] == ["yes", "no"]
    assert boot["urls"] == {k: v for k, v in urls(journey).items() if k != "page"}
    # The stored draft's problems are shown on opening: the message node has no template yet.
    assert [(p["node_id"], p["field"]) for p in boot["problems"]] == [("n2", "config.template")]
    html = response.content.decode()
    assert 'id="journey-designer-data"' in html and "journeys/build/designer.js" in html


def test_the_page_speaks_chinese_when_the_admin_does(admin_client, journey):
    response = admin_client.get(urls(journey)["page"], headers={"accept-language": "zh-hans"})
    boot = response.context["boot"]
    assert boot["lang"] == "zh-hans"
    assert boot["labels"]["publish"] == "发布"
    send = next(t for t in boot["catalogue"]["types"] if t["type"] == "send_message")
    assert send["label"] != "Send a message"


def test_saving_a_graph_with_a_problem_keeps_it_and_names_the_node(admin_client, journey):
    response = put(admin_client, urls(journey)["graph"], {"graph": graph_three(None), "revision": 1})
    assert response.status_code == 200
    body = response.json()
    assert [(p["node_id"], p["field"], p["code"]) for p in body["problems"]] == [
        ("n2", "config.template", "required")
    ]
    assert body["version"]["revision"] == 2

    fixed = put(admin_client, urls(journey)["graph"], {"graph": graph_three(), "revision": 2})
    assert fixed.status_code == 200 and fixed.json()["problems"] == []
    assert (
        JourneyVersion.objects.get(journey=journey).graph["nodes"][1]["config"]["template"] == "cart_reminder"
    )


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("{not json", "The request is not valid JSON"),
        ("[1, 2]", "The request must be a JSON object."),
        ({"settings": {}}, "The request names no graph."),
        ({"graph": graph_three(), "revision": "7"}, "The revision must be a whole number."),
    ],
)
def test_bad_json_is_a_400_with_a_message(admin_client, journey, body, message):
    response = put(admin_client, urls(journey)["graph"], body)
    assert response.status_code == 400
    assert response.json()["message"].startswith(message)
    assert JourneyVersion.objects.get(journey=journey).revision == 1


def test_an_unreadable_graph_is_refused_with_its_problems(admin_client, journey):
    response = put(admin_client, urls(journey)["graph"], {"graph": {"schema": 1, "nodes": "n1", "edges": []}})
    assert response.status_code == 400
    assert [p["field"] for p in response.json()["problems"]] == ["nodes"]
    bad_settings = put(
        admin_client, urls(journey)["graph"], {"graph": graph_three(), "settings": {"holdout_percent": 90}}
    )
    assert bad_settings.status_code == 400
    assert [p["field"] for p in bad_settings.json()["problems"]] == ["settings.holdout_percent"]


def test_a_stale_copy_is_refused_not_obeyed(admin_client, journey):
    assert (
        put(admin_client, urls(journey)["graph"], {"graph": graph_three(), "revision": 1}).status_code == 200
    )
    stale = put(admin_client, urls(journey)["graph"], {"graph": graph_three(None), "revision": 1})
    assert stale.status_code == 409 and stale.json()["code"] == "stale"
    assert (
        JourneyVersion.objects.get(journey=journey).graph["nodes"][1]["config"]["template"] == "cart_reminder"
    )


def test_publishing_refuses_problems_by_node_then_publishes_and_freezes(admin_client, journey):
    refused = post(admin_client, urls(journey)["publish"], {"revision": 1})
    assert refused.status_code == 400
    assert [p["node_id"] for p in refused.json()["problems"]] == ["n2"]
    assert Journey.objects.get(pk=journey.pk).status == "draft"

    put(admin_client, urls(journey)["graph"], {"graph": graph_three(), "revision": 1})
    published = post(admin_client, urls(journey)["publish"], {"revision": 2})
    assert published.status_code == 200, published.content
    assert published.json()["version"] | {"id": None} == {
        "id": None,
        "number": 1,
        "status": "published",
        "status_label": "Published",
        "revision": 2,
        "readonly": True,
    }
    assert Journey.objects.get(pk=journey.pk).status == "published"
    frozen = put(admin_client, urls(journey)["graph"], {"graph": graph_three(None)})
    assert frozen.status_code == 409 and frozen.json()["code"] == "frozen"

    # Editing it again makes version 2, a draft copied from the published one.
    draft = post(admin_client, urls(journey)["new_draft"])
    assert draft.status_code == 200 and draft.json()["version"]["number"] == 2
    assert draft.json()["designer_url"] == urls(journey)["page"]
    page = admin_client.get(urls(journey)["page"])
    assert page.context["boot"]["version"]["number"] == 2
    assert (
        admin_client.get(urls(journey)["page"] + "?version=1").context["boot"]["version"]["readonly"] is True
    )


def test_counts_answer_for_a_published_version(admin_client, template):
    journey = journey_create(name="Published", graph=graph_three())
    journey_publish(journey=journey)
    response = admin_client.get(urls(journey)["counts"])
    assert response.status_code == 200
    assert isinstance(response.json()["counts"], dict)


def test_staff_without_the_journeys_permissions_get_a_403(journey):
    client = staff()
    assert client.get(urls(journey)["page"]).status_code == 403
    response = client.get(urls(journey)["graph"])
    assert response.status_code == 403 and response.json()["message"]
    assert put(client, urls(journey)["graph"], {"graph": graph_three()}).status_code == 403


def test_a_viewer_reads_but_neither_saves_nor_publishes(journey):
    client = staff("view_journey")
    page = client.get(urls(journey)["page"])
    assert page.status_code == 200 and page.context["boot"]["version"]["readonly"] is True
    assert client.get(urls(journey)["graph"]).status_code == 200
    assert put(client, urls(journey)["graph"], {"graph": graph_three()}).status_code == 403
    assert post(client, urls(journey)["publish"]).status_code == 403
    assert post(client, urls(journey)["new_draft"]).status_code == 403
    assert JourneyVersion.objects.get(journey=journey).revision == 1


def test_an_editor_saves(journey):
    client = staff("view_journey", "change_journey")
    assert put(client, urls(journey)["graph"], {"graph": graph_three()}).status_code == 200


def test_anonymous_requests_go_to_the_login(client, journey):
    response = client.get(urls(journey)["graph"])
    assert response.status_code == 302 and "/login/" in response["Location"]


def test_a_write_without_the_csrf_token_is_refused(admin_user, journey):
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin_user)
    assert put(client, urls(journey)["graph"], {"graph": graph_three()}).status_code == 403
    assert JourneyVersion.objects.get(journey=journey).revision == 1


def test_unknown_journeys_versions_and_methods(admin_client, journey):
    missing = reverse("admin:journeys_journey_designer_graph", args=(journey.pk + 99, 1))
    assert admin_client.get(missing).status_code == 404
    assert admin_client.get(missing).json()["message"]
    assert admin_client.get(urls(journey, number=5)["graph"]).status_code == 404
    assert admin_client.get(urls(journey)["page"] + "?version=x").status_code == 404
    assert admin_client.get(urls(journey)["publish"]).status_code == 405
    assert admin_client.delete(urls(journey)["graph"]).status_code == 405
    assert VersionStatus.DRAFT == JourneyVersion.objects.get(journey=journey).status


def test_the_designer_page_shows_none_of_our_messages_in_english_in_chinese(admin_client, journey):
    """The admin walk's check (tests/config/test_admin_zh_hans_walk.py) on the designer page, its JSON
    island included: every label, field, choice and problem the canvas will show."""
    from tests.config.test_admin_zh_hans_walk import _english_patterns, _untranslated

    admin_client.cookies["django_language"] = "zh-hans"
    response = admin_client.get(urls(journey)["page"])
    assert response.status_code == 200 and response.context["boot"]["problems"]
    # The user menu shows the superuser's name, "admin", as it was typed; the journey's name is data too
    # (it happens to be a ready-made journey's English name, a msgid of journeys/library.py).
    shown_as_typed = frozenset({"admin", journey.name})
    assert not _untranslated(response.content.decode(), _english_patterns(), shown_as_typed)
