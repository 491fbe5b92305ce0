"""The admin home page and the navigation: the figures against a world worked out by hand, each figure's
link listing what it counts, a fixed number of queries, the sidebar per role, the brand in the header."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from config.roles import ROLE_GRANTS
from crm.models import CustomerTag, StaticList, Tag
from crm.roles import roles_sync
from crm.selectors.home import customer_home_figures
from loyalty.selectors import loyalty_home_figures
from tests.config.home_world import EXPECTED, home_world_build

pytestmark = pytest.mark.django_db


def _user(role: str):
    from django.contrib.auth.models import Permission

    roles_sync(Group, Permission, ROLE_GRANTS)
    user = get_user_model().objects.create_user(
        f"{role}-1", f"{role}@example.cn", "pw-123456-x", is_staff=True
    )
    user.groups.add(Group.objects.get(name=role))
    return user


def test_figures_match_the_world_in_a_fixed_number_of_queries():
    now = timezone.now()
    home_world_build(now=now)
    with CaptureQueriesContext(connection) as crm_queries:
        crm = customer_home_figures(now=now)
    with CaptureQueriesContext(connection) as loyalty_queries:
        loyalty = loyalty_home_figures()
    # Set-based: three aggregates each, whatever the number of customers (programme settings included).
    assert len(crm_queries.captured_queries) == 3
    assert len(loyalty_queries.captured_queries) == 3
    assert (crm.customers, crm.active_customers) == (EXPECTED["customers"], EXPECTED["active_customers"])
    assert (crm.gmv, crm.orders) == (EXPECTED["gmv"], EXPECTED["orders"])
    assert (crm.previous_gmv, crm.previous_orders) == (EXPECTED["previous_gmv"], EXPECTED["previous_orders"])
    assert (crm.repeat_buyers, crm.buyers) == (EXPECTED["repeat_buyers"], EXPECTED["buyers"])
    assert crm.stage_counts == {
        "prospect": 0,
        "new": 0,
        "active": 1,
        "at_risk": 1,
        "dormant": 1,
        "churned": 0,
    }
    assert crm.uncomputed == 1 and crm.sleeping_high_value == EXPECTED["sleeping_high_value"]
    assert loyalty.members == EXPECTED["members"]
    assert loyalty.outstanding_points == EXPECTED["outstanding_points"]
    assert loyalty.liability_value == EXPECTED["liability_value"]
    assert (loyalty.issued_points, loyalty.redeemed_points) == (
        EXPECTED["issued_points"],
        EXPECTED["redeemed_points"],
    )
    assert loyalty.redemption_rate == pytest.approx(0.25)


def test_the_30_days_are_business_days(settings):
    """An order at 07:00 in Shanghai on the first day of the window is in it, though still the day before
    in UTC; one a minute before that day began is in the previous window."""
    from crm.selectors.home import home_windows
    from tests.factories import OrderFactory

    now = timezone.now()
    current, previous = home_windows(now=now)
    start = current.start  # midnight in Shanghai, 16:00 UTC the day before
    assert start.astimezone(timezone.get_default_timezone()).hour == 0
    OrderFactory(total=Decimal("7"), placed_at=start + timezone.timedelta(hours=7))
    OrderFactory(total=Decimal("5"), placed_at=start - timezone.timedelta(minutes=1))
    figures = customer_home_figures(now=now)
    assert (figures.gmv, figures.previous_gmv) == (Decimal("7"), Decimal("5"))
    assert previous.end == current.start


def test_each_figure_links_to_the_list_of_what_it_counts(admin_client):
    home_world_build(now=timezone.now())
    response = admin_client.get(reverse("admin:index"))
    assert response.status_code == 200
    figures = {str(f.label): f for f in response.context["home_figures"]}
    for label in (
        "Customers",
        "Members",
        "Active customers (30 days)",
        "Orders (30 days)",
        "Sleeping high-value customers",
    ):
        listed = admin_client.get(figures[label].link)
        assert listed.status_code == 200, label
        assert listed.context["cl"].result_count == figures[label].value, label
    repeat = admin_client.get(figures["Repeat-purchase rate"].link)
    assert repeat.context["cl"].result_count == EXPECTED["repeat_buyers"]
    gmv = admin_client.get(figures["GMV (30 days)"].link)
    assert sum(order.total for order in gmv.context["cl"].result_list) == EXPECTED["gmv"]
    for stage_figure, _share in response.context["home_stages"]:
        listed = admin_client.get(stage_figure.link)
        assert listed.context["cl"].result_count == stage_figure.value, stage_figure.label
    redeemed = admin_client.get(figures["Redemption rate"].link)
    assert redeemed.context["cl"].result_count == 1


def test_home_page_shows_the_brand_and_the_figures_in_chinese(admin_client, settings):
    home_world_build(now=timezone.now())
    body = admin_client.get(reverse("admin:index"), HTTP_ACCEPT_LANGUAGE="zh-hans").content.decode()
    assert "Django administration" not in body and "Django 管理" not in body
    assert settings.BRAND_NAME in body
    assert 'href="/member/"' in body  # "View site" leads to the member portal
    for text in ("活跃客户（30 天）", "复购率", "积分负债", "¥30", "25%", "300", "各生命周期阶段的客户数"):
        assert text in body, text


def _sidebar(client):
    context = client.get(reverse("admin:index")).context
    return {
        str(group["title"]): [str(item["title"]) for item in group["items"]]
        for group in context["sidebar_navigation"]
    }


def test_sidebar_is_grouped_by_task_and_hides_the_system_group_from_a_marketer(client):
    client.force_login(_user("marketer"))
    groups = _sidebar(client)
    assert list(groups) == ["None", "Customers", "Analytics", "Loyalty", "Campaigns", "Journeys", "Settings"]
    assert groups["Customers"][:5] == ["Customers", "Segments", "Static lists", "Tags", "Import jobs"]
    assert {"Dashboards", "Lifecycle settings", "Metrics runs and model fits"} <= set(groups["Analytics"])
    assert {"Tiers", "Loyalty accounts", "Rewards", "Coupons", "Earn rules", "Promotions"} <= set(
        groups["Loyalty"]
    )
    assert groups["Campaigns"][:5] == [
        "Campaigns",
        "Campaign reports",
        "Messages",
        "Delivery overview",
        "Dead letters",
    ]
    assert "Message templates" in groups["Campaigns"]
    # No internals, and nothing the marketer may not view (users and groups are the administrators').
    assert "System" not in groups
    # Only what the role may view: programme settings and API keys (read-only), not users or groups.
    assert set(groups["Settings"]) == {"Programme settings", "API keys"}
    assert not {"Event-log cursors", "Owed points", "Points lots", "Member API tokens"} & {
        title for items in groups.values() for title in items
    }


def test_sidebar_for_an_administrator_has_settings_and_system(client):
    client.force_login(_user("administrator"))
    groups = _sidebar(client)
    assert list(groups)[-2:] == ["Settings", "System"]
    assert {"Users", "Groups", "Periodic tasks", "API keys"} & set(groups["Settings"])
    assert {
        "Event-log cursors",
        "Owed points",
        "Points lots",
        "Member API tokens",
        "Clocked",
        "Solar events",
        "Access attempts",
    } <= set(groups["System"])


def test_bulk_actions_tag_and_list_every_selected_customer(admin_client):
    world = home_world_build(now=timezone.now())
    tag = Tag.objects.create(name="双11 高意向")
    CustomerTag.objects.create(customer=world.regular, tag=tag)
    chosen = [world.regular.pk, world.lapsing.pk, world.sleeper.pk, world.erased.pk]
    url = reverse("admin:crm_customer_changelist")
    response = admin_client.post(
        url,
        {"action": "add_tag_selected", "_selected_action": chosen, "tag": tag.pk, "apply": "1"},
        follow=True,
    )
    assert response.status_code == 200
    assert set(CustomerTag.objects.filter(tag=tag).values_list("customer_id", flat=True)) == {
        world.regular.pk,
        world.lapsing.pk,
        world.sleeper.pk,
    }  # the erased customer is skipped
    assert "added to 2 customers (1 already had it)" in response.content.decode()
    assert CustomerTag.history.filter(tag_id=tag.pk, history_type="+").count() == 3  # audited, in bulk
    static_list = StaticList.objects.create(name="Win-back wave 1")
    admin_client.post(
        url,
        {
            "action": "add_to_static_list",
            "_selected_action": chosen[:2],
            "static_list": static_list.pk,
            "apply": "1",
        },
    )
    assert set(static_list.members.values_list("customer_id", flat=True)) == {
        world.regular.pk,
        world.lapsing.pk,
    }
    tagged = admin_client.get(url, {"tag": tag.pk})
    assert {c.pk for c in tagged.context["cl"].result_list} == set(chosen[:3])


def test_customer_list_shows_the_marketing_columns_in_a_fixed_number_of_queries(
    admin_client, django_assert_max_num_queries
):
    home_world_build(now=timezone.now())
    with CaptureQueriesContext(connection) as queries:
        response = admin_client.get(reverse("admin:crm_customer_changelist"))
    body = response.content.decode()
    for text in (
        "Active",
        "At risk",
        "Medium value",
        "300",
        "Lifecycle stage",
        "Value tier",
        "Total spend",
        "Last order",
        "Tier",
    ):
        assert text in body, text
    # Another four customers cost no more queries: the columns are read for the page at once.
    from tests.factories import CustomerFactory

    CustomerFactory.create_batch(4)
    with CaptureQueriesContext(connection) as more:
        admin_client.get(reverse("admin:crm_customer_changelist"))
    assert len(more.captured_queries) == len(queries.captured_queries)
