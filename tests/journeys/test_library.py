"""The ready-made journeys (journeys/library.py): each is a valid graph on an empty database once copied,
a copy is an ordinary draft the marketer edits, the admin's page shows them as cards in English and
Chinese and copies one into the designer, and the demo seed copies a few once."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse
from django.utils import translation

from campaigns.models import MessageTemplate
from crm.models import Tag
from journeys.library import (
    DEMO_CODES,
    LibraryUnknown,
    library_demo_seed,
    library_journey_copy,
    library_journey_get,
    library_journeys,
)
from journeys.library_templates import library_templates_seed
from journeys.models import Journey, JourneyStatus, JourneyVersion, VersionStatus
from journeys.nodes import graph_validate
from journeys.services.journeys import journey_publish

pytestmark = pytest.mark.django_db

EXPECTED_CODES = [
    "welcome_series",
    "cart_abandonment",
    "post_purchase",
    "birthday_gift",
    "six_month_revisit",
    "tier_upgrade",
    "points_expiring",
    "dormant_winback",
]


def test_the_library_has_the_eight_journeys_under_stable_codes():
    assert [item.code for item in library_journeys()] == EXPECTED_CODES
    assert library_journey_get("dormant_winback") is not None


@pytest.mark.parametrize("code", EXPECTED_CODES)
def test_each_copy_on_an_empty_database_is_a_valid_draft(code):
    assert not MessageTemplate.objects.exists()
    journey = library_journey_copy(code=code)
    version = JourneyVersion.objects.get(journey=journey)
    assert journey.status == JourneyStatus.DRAFT and version.status == VersionStatus.DRAFT
    # The templates and tags it names were created with it: nothing left for the marketer to find.
    assert graph_validate(version.graph, settings=version.settings) == []
    assert version.graph == library_journey_get(code).graph()
    # ... and it publishes as it is.
    assert journey_publish(journey=journey).status == VersionStatus.PUBLISHED


def test_the_win_back_sends_the_coupon_template_and_waits_for_an_order():
    item = library_journey_get("dormant_winback")
    graph = item.graph()
    entry = next(n for n in graph["nodes"] if n["type"] == "entry")
    assert entry["config"]["trigger"] == {"kind": "stage_changed", "to": "dormant"}
    assert {"winback_miss_you.wechat", "winback_miss_you.sms"} == item.templates()
    library_journey_copy(code="dormant_winback")
    # The campaigns' 你还记得吗? template issues each message its own code of the win-back programme.
    assert MessageTemplate.objects.get(code="winback_miss_you.wechat").coupon_programme is not None
    assert Tag.objects.filter(name="won_back").exists()


def test_the_cart_abandonment_reminds_on_wechat_then_by_sms():
    graph = library_journey_get("cart_abandonment").graph()
    sends = [n["config"]["channel"] for n in graph["nodes"] if n["type"] == "send_message"]
    assert sends == ["wechat", "sms"]
    trigger = graph["nodes"][0]["config"]["trigger"]
    assert (trigger["kind"], trigger["event_type"], trigger["not_followed_by"]) == (
        "event_not_followed",
        "add_to_cart",
        "order_placed",
    )


def test_a_copy_is_named_in_the_language_of_who_copies_it():
    with translation.override("zh-hans"):
        journey = library_journey_copy(code="birthday_gift")
    assert journey.name == "生日积分礼"
    assert "生日" in journey.description


def test_an_unknown_code_is_refused():
    with pytest.raises(LibraryUnknown):
        library_journey_copy(code="nope")


def test_the_templates_seed_twice_makes_no_new_version():
    first = library_templates_seed()
    assert first[0] == first[1] > 0
    assert library_templates_seed() == (first[0], 0)


def test_the_demo_seed_copies_its_journeys_once():
    assert library_demo_seed() == len(DEMO_CODES)
    assert library_demo_seed() == 0
    assert Journey.objects.count() == len(DEMO_CODES)


# --- The admin page ------------------------------------------------------------------------------------


def test_the_page_shows_a_card_per_ready_made_journey_in_english_and_chinese(admin_client):
    url = reverse("admin:journeys_journey_library")
    english = admin_client.get(url)
    assert english.status_code == 200
    html = english.content.decode()
    for code in EXPECTED_CODES:
        assert f'data-code="{code}"' in html
    assert "Dormant win-back" in html and "Copy into a new draft" in html
    chinese = admin_client.get(url, headers={"accept-language": "zh-hans"}).content.decode()
    assert "沉睡客户唤醒" in chinese and "复制为新草稿" in chinese
    # The journey list has the button to this page.
    listing = admin_client.get(reverse("admin:journeys_journey_changelist")).content.decode()
    assert reverse("admin:journeys_journey_open_library") in listing


def test_copying_from_the_page_opens_the_new_draft_in_the_designer(admin_client):
    response = admin_client.post(reverse("admin:journeys_journey_library_copy", args=("cart_abandonment",)))
    journey = Journey.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse("admin:journeys_journey_designer", args=(journey.pk,))
    assert journey.name == "Cart abandonment" and journey.created_by.username == "admin"


def test_the_copy_endpoint_refuses_a_get_and_an_unknown_code(admin_client):
    url = reverse("admin:journeys_journey_library_copy", args=("cart_abandonment",))
    assert admin_client.get(url).status_code == 405
    assert (
        admin_client.post(reverse("admin:journeys_journey_library_copy", args=("nope",))).status_code == 404
    )
    assert not Journey.objects.exists()


def test_staff_who_may_only_view_journeys_see_the_cards_but_cannot_copy():
    user = get_user_model().objects.create_user("viewer", password="pw", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_journey"))
    client = Client()
    client.force_login(user)
    page = client.get(reverse("admin:journeys_journey_library"))
    assert page.status_code == 200 and "Copy into a new draft" not in page.content.decode()
    copy = client.post(reverse("admin:journeys_journey_library_copy", args=("cart_abandonment",)))
    assert copy.status_code == 403 and not Journey.objects.exists()


def test_the_page_and_a_copy_in_the_designer_show_none_of_our_messages_in_english_in_chinese(admin_client):
    """The admin walk's check (tests/config/test_admin_zh_hans_walk.py) on the cards, and on the designer
    of a copy (its rule editor's and filter editor's words included)."""
    from tests.config.test_admin_zh_hans_walk import _english_patterns, _untranslated

    admin_client.cookies["django_language"] = "zh-hans"
    cards = admin_client.get(reverse("admin:journeys_journey_library"))
    assert not _untranslated(cards.content.decode(), _english_patterns(), frozenset({"admin"}))
    with translation.override("zh-hans"):
        journey = library_journey_copy(code="welcome_series")
    page = admin_client.get(reverse("admin:journeys_journey_designer", args=(journey.pk,)))
    assert page.status_code == 200
    assert not _untranslated(page.content.decode(), _english_patterns(), frozenset({"admin"}))
