"""The links a message carries: tracked content, the open pixel, the click redirect and unsubscribe."""

from __future__ import annotations

import threading
from urllib.parse import urlparse

import pytest
from django.db import connection
from django.test import Client
from django.urls import reverse

from campaigns import signing
from campaigns.models import DeliverySettings, Message
from campaigns.services.tracking import message_links_save, tracked_content, unsubscribe_url
from crm.models import Consent, ConsentChange, Event
from tests.campaigns.tracking_support import message_make, opted_in
from tests.factories import CustomerFactory

pytestmark = pytest.mark.django_db

SITE = "https://shop.example.cn"


@pytest.fixture(autouse=True)
def site_url(settings):
    settings.SITE_URL = SITE


def _path(url: str) -> str:
    assert url.startswith(SITE), url
    return urlparse(url).path


# --- tracked_content ------------------------------------------------------------------------------------


def test_marketing_email_links_are_rewritten_recorded_and_get_pixel_and_unsubscribe_headers():
    html = (
        '<html><body><p><a href="https://brand.cn/sale?a=1&amp;b=2">Sale</a> '
        "<a href='mailto:help@brand.cn'>mail</a> <a href=\"#top\">top</a> "
        '<a href="https://brand.cn/sale?a=1&amp;b=2">again</a></p></body></html>'
    )
    tracked = tracked_content(
        9, {"subject": "S", "html": html, "text": "See https://brand.cn/new, now."}, "email", "marketing"
    )
    assert tracked.links == ["https://brand.cn/sale?a=1&b=2", "https://brand.cn/new"]
    out = tracked.content["html"]
    click0 = f"{SITE}/m/c/{signing.click_token(9, 0)}"
    assert out.count(click0) == 2 and "brand.cn/sale" not in out
    assert "mailto:help@brand.cn" in out and 'href="#top"' in out
    assert f"{SITE}/m/o/{signing.open_token(9)}.gif" in out
    assert out.index("m/o/") < out.index("</body>")
    assert unsubscribe_url(9) in out  # the footer link every marketing email carries
    assert tracked.content["text"].startswith(f"See {SITE}/m/c/{signing.click_token(9, 1)}, now.")
    assert unsubscribe_url(9) in tracked.content["text"]
    assert tracked.content["headers"] == {
        "List-Unsubscribe": f"<{unsubscribe_url(9)}>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }
    content, links = tracked  # the outbox's track stage unpacks it so
    assert links == tracked.links


def test_the_mailto_form_of_list_unsubscribe_is_added_when_configured(settings):
    settings.MESSAGING_UNSUBSCRIBE_MAILTO = "unsubscribe@brand.cn"
    headers = tracked_content(3, {"html": "<p>x</p>"}, "email", "marketing").headers
    assert headers["List-Unsubscribe"] == (
        f"<{unsubscribe_url(3)}>, <mailto:unsubscribe@brand.cn?subject=unsubscribe-{signing.unsubscribe_token(3)}>"
    )


def test_transactional_email_gets_no_unsubscribe_headers_but_is_tracked():
    tracked = tracked_content(
        4, {"html": '<a href="https://brand.cn/o/1">order</a>'}, "email", "transactional"
    )
    assert "headers" not in tracked.content
    assert unsubscribe_url(4) not in tracked.content["html"]
    assert tracked.links == ["https://brand.cn/o/1"]


def test_marketing_sms_gets_the_opt_out_text_in_the_customers_language_and_short_links():
    DeliverySettings.current()
    zh = tracked_content(
        5, {"text": "双11大促 https://brand.cn/s11 速来"}, "sms", "marketing", language="zh-hans"
    )
    assert zh.content["text"].endswith("回T退订")
    link = f"{SITE}/m/c/{signing.click_token(5, 0)}"
    assert link in zh.content["text"] and len(link) - len(SITE) <= 30
    en = tracked_content(5, {"text": "Sale"}, "sms", "marketing", language="en")
    assert en.content["text"] == "Sale Reply T to opt out"
    transactional = tracked_content(5, {"text": "Your code 1234"}, "sms", "transactional", language="en")
    assert transactional.content["text"] == "Your code 1234"


def test_links_of_many_messages_are_saved_in_one_statement(django_assert_num_queries):
    customer = CustomerFactory()
    messages = [message_make(customer=customer) for _ in range(3)]
    with django_assert_num_queries(1):
        message_links_save(links={m.pk: [f"https://brand.cn/{m.pk}"] for m in messages})
    assert [Message.objects.get(pk=m.pk).links for m in messages] == [
        [f"https://brand.cn/{m.pk}"] for m in messages
    ]


# --- Open pixel -----------------------------------------------------------------------------------------


def test_the_pixel_records_the_first_open_once_and_writes_one_event(client):
    message = message_make(customer=CustomerFactory())
    url = reverse("campaigns:open", args=[signing.open_token(message.pk)])
    for _ in range(3):
        response = client.get(url)
        assert response.status_code == 200
        assert response["Content-Type"] == "image/gif" and response.content.startswith(b"GIF89a")
    message.refresh_from_db()
    assert message.status == "opened" and message.opened_at is not None
    assert [h["status"] for h in message.history] == ["sent", "opened"]
    events = Event.objects.filter(type="message_opened")
    assert events.count() == 1
    assert events.get().properties | {} == {
        "message_id": message.pk,
        "channel": "email",
        "source_kind": "campaign",
        "source_ref": "7",
        "campaign_id": "7",
        "purpose": "marketing",
        "template": message.template.code,
    }


@pytest.mark.django_db(transaction=True)
def test_two_pixel_loads_at_once_record_one_open():
    message = message_make(customer=CustomerFactory())
    url = reverse("campaigns:open", args=[signing.open_token(message.pk)])
    barrier = threading.Barrier(4)
    statuses = []

    def load():
        barrier.wait()
        statuses.append(Client().get(url).status_code)
        connection.close()

    threads = [threading.Thread(target=load) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses == [200] * 4
    assert Event.objects.filter(type="message_opened").count() == 1
    assert [h["status"] for h in Message.objects.get(pk=message.pk).history] == ["sent", "opened"]


def test_a_forged_pixel_token_is_a_404_gif_and_records_nothing(client):
    message = message_make(customer=CustomerFactory())
    response = client.get(reverse("campaigns:open", args=[signing.unsubscribe_token(message.pk)]))
    assert response.status_code == 404
    message.refresh_from_db()
    assert message.opened_at is None and not Event.objects.exists()


def test_a_message_never_sent_is_not_opened(client):
    message = message_make(customer=CustomerFactory(), status="queued")
    client.get(reverse("campaigns:open", args=[signing.open_token(message.pk)]))
    message.refresh_from_db()
    assert message.status == "queued" and message.opened_at is None


# --- Click redirect -------------------------------------------------------------------------------------


def test_a_click_redirects_to_the_recorded_url_and_records_click_and_open(client):
    message = message_make(customer=CustomerFactory(), links=["https://brand.cn/a", "https://brand.cn/b"])
    response = client.get(reverse("campaigns:click", args=[signing.click_token(message.pk, 1)]))
    assert response.status_code == 302 and response["Location"] == "https://brand.cn/b"
    client.get(reverse("campaigns:click", args=[signing.click_token(message.pk, 1)]))
    client.get(reverse("campaigns:click", args=[signing.click_token(message.pk, 0)]))
    message.refresh_from_db()
    assert message.status == "clicked" and message.clicked_at and message.opened_at
    clicks = Event.objects.filter(type="message_clicked").order_by("id")
    assert [(e.properties["url"], e.properties["link"]) for e in clicks] == [
        ("https://brand.cn/b", 1),
        ("https://brand.cn/a", 0),
    ]
    assert Event.objects.filter(type="message_opened").count() == 1


def test_click_redirect_refuses_urls_not_recorded(client):
    message = message_make(customer=CustomerFactory(), links=["https://brand.cn/a"])
    # A real token for a link index the message never recorded, a token for a message without links,
    # and a URL in the query string (never read): none goes anywhere but the 404 page.
    other = message_make(customer=CustomerFactory(), links=None)
    for token in (signing.click_token(message.pk, 1), signing.click_token(other.pk, 0)):
        response = client.get(reverse("campaigns:click", args=[token]) + "?url=https://evil.example")
        assert response.status_code == 404
        assert "Location" not in response
        assert 'href="https://evil' not in response.content.decode()
    forged = signing.click_token(message.pk, 0)[:-1] + "A"
    response = client.get(reverse("campaigns:click", args=[forged]))
    assert response.status_code == 404
    assert "not valid" in response.content.decode()
    assert not Event.objects.filter(type="message_clicked").exists()


# --- Unsubscribe ----------------------------------------------------------------------------------------


def _queued_marketing(customer, channel="email", purpose="marketing"):
    return message_make(customer=customer, channel=channel, status="queued", purpose=purpose)


def test_the_get_confirmation_page_unsubscribes_nobody(client):
    customer = CustomerFactory(language="zh-hans")
    opted_in(customer, "email")
    message = message_make(customer=customer)
    queued = _queued_marketing(customer)
    response = client.get(reverse("campaigns:unsubscribe", args=[signing.unsubscribe_token(message.pk)]))
    assert response.status_code == 200
    page = response.content.decode()
    assert "退订" in page and 'method="post"' in page and 'name="viewport"' in page
    assert Consent.objects.get(customer=customer, channel="email").status == "opted_in"
    assert Message.objects.get(pk=queued.pk).status == "queued"
    assert not Event.objects.filter(type="unsubscribed").exists()


def test_the_confirmation_page_speaks_english_to_an_english_customer(client):
    customer = CustomerFactory(language="en")
    message = message_make(customer=customer)
    response = client.get(reverse("campaigns:unsubscribe", args=[signing.unsubscribe_token(message.pk)]))
    assert "Stop receiving our messages by Email?" in response.content.decode()


def test_one_click_post_unsubscribes_without_csrf_and_cancels_queued_marketing_on_that_channel():
    customer = CustomerFactory()
    opted_in(customer, "email", "sms")
    message = message_make(customer=customer)
    queued = _queued_marketing(customer)
    deferred = _queued_marketing(customer)
    Message.objects.filter(pk=deferred.pk).update(status="deferred")
    transactional = _queued_marketing(customer, purpose="transactional")
    sms = _queued_marketing(customer, channel="sms")
    other_customer = _queued_marketing(CustomerFactory())
    client = Client(enforce_csrf_checks=True)
    response = client.post(
        unsubscribe_url(message.pk).removeprefix(SITE),
        data="List-Unsubscribe=One-Click",
        content_type="application/x-www-form-urlencoded",
    )
    assert response.status_code == 200
    consent = Consent.objects.get(customer=customer, channel="email")
    assert consent.status == "opted_out" and consent.source == f"unsubscribe:{message.pk}"
    assert Consent.objects.get(customer=customer, channel="sms").status == "opted_in"
    statuses = dict(Message.objects.values_list("pk", "status"))
    assert statuses[queued.pk] == statuses[deferred.pk] == "cancelled"
    assert statuses[transactional.pk] == statuses[sms.pk] == statuses[other_customer.pk] == "queued"
    cancelled = Message.objects.get(pk=queued.pk)
    assert (cancelled.reason, cancelled.reason_params) == ("unsubscribed", {"channel": "email"})
    assert cancelled.history[-1]["status"] == "cancelled"
    event = Event.objects.get(type="unsubscribed")
    assert event.customer_id == customer.pk
    assert event.properties["how"] == "one_click" and event.properties["message_id"] == message.pk
    # Again (a mailbox provider retrying): harmless, still one event and one consent change.
    client.post(unsubscribe_url(message.pk).removeprefix(SITE), data={"List-Unsubscribe": "One-Click"})
    assert Event.objects.filter(type="unsubscribed").count() == 1
    assert ConsentChange.objects.filter(customer=customer, channel="email", status="opted_out").count() == 1


def test_the_confirmation_button_unsubscribes_and_says_so(client):
    customer = CustomerFactory(language="en")
    opted_in(customer, "sms")
    message = message_make(customer=customer, channel="sms")
    response = client.post(_path(unsubscribe_url(message.pk)))
    assert response.status_code == 200
    assert "You are unsubscribed" in response.content.decode()
    assert Consent.objects.get(customer=customer, channel="sms").status == "opted_out"
    assert Event.objects.get(type="unsubscribed").properties["how"] == "link"


@pytest.mark.parametrize("method", ["get", "post"])
def test_forged_unsubscribe_tokens_are_refused_with_a_page(client, method):
    customer = CustomerFactory()
    opted_in(customer, "email")
    message = message_make(customer=customer)
    good = signing.unsubscribe_token(message.pk)
    for token in (good[:-2] + "zz", signing.open_token(message.pk), "1.AAAAAAAAAAAAAAAA", "x" * 300):
        response = getattr(client, method)(f"/m/u/{token}", data={"List-Unsubscribe": "One-Click"})
        assert response.status_code == 404
        assert "not valid" in response.content.decode()
    assert Consent.objects.get(customer=customer, channel="email").status == "opted_in"


@pytest.mark.parametrize(
    "document, expected",
    [
        ("<html><body>hi</body></html>", "<html><body>hi<X></body></html>"),
        ("<html><BODY>hi</BODY></html>", "<html><BODY>hi<X></BODY></html>"),
        ("no body tag", "no body tag<X>"),
        # A long email: the closing tag far from the end, then one in the tail, then none in the tail.
        ("<body>" + "a" * 5000 + "</Body>" + "b" * 5000, "<body>" + "a" * 5000 + "<X></Body>" + "b" * 5000),
        ("<body>" + "a" * 5000 + "</body>" + "b" * 10, "<body>" + "a" * 5000 + "<X></body>" + "b" * 10),
        ("</body>" + "a" * 5000 + "</BODY>x", "</body>" + "a" * 5000 + "<X></BODY>x"),
    ],
)
def test_snippets_go_before_the_last_closing_body_tag_in_any_case(document, expected):
    from campaigns.services.tracking import _append_to_body

    assert _append_to_body(document, "<X>") == expected
