"""The customer 360's "Journeys" panel: the customer's enrollments, newest first (journey, version, state,
node, and why one ended, in the reader's language); one query, withheld from staff who may not see
enrollments."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone, translation

from journeys.selectors import customer_enrollments
from journeys.services.journeys import journey_archive
from tests.campaigns.staff_helpers import staff_user
from tests.factories import CustomerFactory
from tests.journeys.engine_helpers import enter, published, run
from tests.journeys.graphs import chain, entry, node

pytestmark = pytest.mark.django_db


def url_of(customer, **params):
    url = reverse("admin:crm_customer_change", args=[customer.pk])
    return url + ("?" + "&".join(f"{k}={v}" for k, v in params.items()) if params else "")


def waiting_journey(name):
    return published(
        chain(
            entry(),
            node("w", "wait", mode="duration", duration={"value": 3, "unit": "days"}),
            node("x", "exit"),
        ),
        name=name,
    )


def test_the_panel_lists_enrollments_with_state_node_and_reason_in_words(admin_client):
    customer = CustomerFactory()
    now = timezone.now()
    birthday, winback = waiting_journey("生日礼遇"), waiting_journey("Win-back")
    enter(birthday, [customer], now=now - timedelta(hours=1))
    enter(winback, [customer], now=now)
    run(now)
    journey_archive(journey=birthday.journey)
    html = admin_client.get(url_of(customer)).content.decode()
    assert (
        'data-testid="enrollments"' in html
        and "not installed yet" not in html.split('id="panel-journeys"')[1][:400]
    )
    section = html.split('id="panel-journeys"')[1].split("</section>")[0]
    assert section.index("Win-back") < section.index("生日礼遇")  # newest first
    assert "at node w (Wait)" in section and "Waiting" in section
    assert "The journey was archived" in section
    with translation.override("zh-hans"):
        chinese = admin_client.get(url_of(customer), HTTP_ACCEPT_LANGUAGE="zh-hans").content.decode()
    section = chinese.split('id="panel-journeys"')[1].split("</section>")[0]
    assert "旅程已归档" in section and "The journey was archived" not in section


def test_one_query_whatever_the_number_of_enrollments():
    customer = CustomerFactory()
    now = timezone.now()
    for i in range(12):
        enter(waiting_journey(f"J{i}"), [customer], now=now - timedelta(minutes=i))
    with CaptureQueriesContext(connection) as queries:
        page = customer_enrollments(customer_id=customer.pk, limit=10)
    assert len(queries.captured_queries) == 1
    assert [r["journey"] for r in page.rows] == [f"J{i}" for i in range(10)] and page.has_more
    rest = customer_enrollments(customer_id=customer.pk, limit=10, offset=10)
    assert [r["journey"] for r in rest.rows] == ["J10", "J11"] and not rest.has_more


def test_the_panel_says_so_when_empty_and_is_withheld_without_the_permission(admin_client):
    customer = CustomerFactory()
    assert 'data-testid="journeys-empty"' in admin_client.get(url_of(customer)).content.decode()
    client = Client()
    client.force_login(staff_user("marketer", username="no-enrollments"))
    html = client.get(url_of(customer)).content.decode()
    assert 'data-testid="journeys-empty"' in html  # marketers see enrollments
    viewer = staff_user(username="crm-only")
    from django.contrib.auth.models import Permission

    viewer.user_permissions.add(Permission.objects.get(codename="view_customer"))
    client.force_login(viewer)
    html = client.get(url_of(customer)).content.decode()
    assert "You may not see this customer's journeys." in html
