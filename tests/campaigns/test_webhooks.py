"""anymail's normalised tracking webhooks, fed real ESP payloads (Postmark's and Mailjet's formats) through
the real URLs with the basic auth of ANYMAIL["WEBHOOK_SECRET"]: the message moves on, consent and the
suppression list follow, events go into the log."""

from __future__ import annotations

import base64
import json

import pytest

from campaigns.models import Message, Suppression
from crm.models import Consent, Event
from tests.campaigns.tracking_support import message_make, opted_in
from tests.factories import CustomerFactory

pytestmark = pytest.mark.django_db

SECRET = "esp:s3cret-hook"
POSTMARK = "/anymail/postmark/tracking/"
MAILJET = "/anymail/mailjet/tracking/"


@pytest.fixture(autouse=True)
def webhook_secret(settings):
    settings.ANYMAIL = {**settings.ANYMAIL, "WEBHOOK_SECRET": [SECRET]}


def _post(client, url, payload, secret=SECRET):
    auth = base64.b64encode(secret.encode()).decode()
    return client.post(
        url, data=json.dumps(payload), content_type="application/json", HTTP_AUTHORIZATION=f"Basic {auth}"
    )


def _sent(customer, **kwargs):
    return message_make(customer=customer, provider_message_id="pm-0001-abcd", **kwargs)


def test_a_postmark_delivery_moves_the_message_to_delivered_and_writes_the_event(client):
    message = _sent(CustomerFactory())
    payload = {
        "RecordType": "Delivery",
        "ServerID": 23,
        "MessageStream": "broadcast",
        "MessageID": "pm-0001-abcd",
        "Recipient": message.address,
        "Tag": "",
        "DeliveredAt": "2026-12-07T09:00:00Z",
        "Details": "Test delivery webhook details",
        "Metadata": {},
    }
    response = _post(client, POSTMARK, payload)
    assert response.status_code == 200
    message.refresh_from_db()
    assert message.status == "delivered"
    assert message.delivered_at.isoformat() == "2026-12-07T09:00:00+00:00"
    event = Event.objects.get(type="message_delivered")
    assert event.properties["message_id"] == message.pk and event.channel == "email"
    _post(client, POSTMARK, payload)  # delivered twice by the ESP: one event
    assert Event.objects.filter(type="message_delivered").count() == 1


def test_a_postmark_hard_bounce_fails_the_message_suppresses_the_address_and_withdraws_consent(client):
    customer = CustomerFactory()
    opted_in(customer, "email")
    message = _sent(customer)
    queued = message_make(customer=customer, status="queued")
    payload = {
        "RecordType": "Bounce",
        "ID": 4323372036854775807,
        "Type": "HardBounce",
        "TypeCode": 1,
        "Name": "Hard bounce",
        "MessageStream": "broadcast",
        "Description": "The server was unable to deliver your message (ex: unknown user, mailbox not found).",
        "Details": "smtp;550 5.1.1 The email account that you tried to reach does not exist.",
        "Email": message.address.upper(),
        "From": "marketing@example.com",
        "BouncedAt": "2026-12-07T09:01:00Z",
        "Inactive": True,
        "CanActivate": True,
        # Our message id, which the email provider sends as metadata: found even without MessageID.
        "Metadata": {"message_id": str(message.pk)},
        "MessageID": "",
    }
    assert _post(client, POSTMARK, payload).status_code == 200
    message.refresh_from_db()
    assert (message.status, message.reason) == ("failed", "bounced")
    assert "unable to deliver" in message.reason_params["detail"]
    suppressed = Suppression.objects.get(channel="email")
    assert (suppressed.address, suppressed.reason, suppressed.customer_id) == (
        message.address.lower(),
        "bounced",
        customer.pk,
    )
    consent = Consent.objects.get(customer=customer, channel="email")
    assert (consent.status, consent.source) == ("opted_out", f"bounce:{message.pk}")
    assert Message.objects.get(pk=queued.pk).status == "cancelled"
    assert Event.objects.get(type="message_failed").properties["reason"] == "bounced"


def test_a_spam_complaint_suppresses_and_withdraws_consent(client):
    customer = CustomerFactory()
    opted_in(customer, "email")
    message = _sent(customer, status="opened")
    payload = {
        "RecordType": "SpamComplaint",
        "ID": 42,
        "Type": "SpamComplaint",
        "MessageID": "pm-0001-abcd",
        "Email": message.address,
        "BouncedAt": "2026-12-07T09:02:00Z",
        "Metadata": {},
    }
    assert _post(client, POSTMARK, payload).status_code == 200
    message.refresh_from_db()
    assert (message.status, message.reason) == ("failed", "complained")
    assert Suppression.objects.get(channel="email").reason == "complained"
    consent = Consent.objects.get(customer=customer, channel="email")
    assert (consent.status, consent.source) == ("opted_out", f"complaint:{message.pk}")


def test_postmark_open_click_and_unsubscribe_events(client):
    customer = CustomerFactory()
    opted_in(customer, "email")
    message = _sent(customer, links=["https://brand.cn/a"])
    base = {"MessageID": "pm-0001-abcd", "Recipient": message.address, "Metadata": {}}
    _post(client, POSTMARK, {**base, "RecordType": "Open", "ReceivedAt": "2026-12-07T09:03:00Z"})
    message.refresh_from_db()
    assert message.status == "opened"
    _post(
        client,
        POSTMARK,
        {
            **base,
            "RecordType": "Click",
            "ReceivedAt": "2026-12-07T09:04:00Z",
            "OriginalLink": "https://brand.cn/a",
        },
    )
    message.refresh_from_db()
    assert message.status == "clicked"
    assert Event.objects.get(type="message_clicked").properties["link"] == 0
    _post(
        client,
        POSTMARK,
        {
            **base,
            "RecordType": "SubscriptionChange",
            "ChangedAt": "2026-12-07T09:05:00Z",
            "SuppressSending": True,
            "SuppressionReason": "ManualSuppression",
        },
    )
    assert Consent.objects.get(customer=customer, channel="email").status == "opted_out"
    assert Event.objects.get(type="unsubscribed").properties["how"] == "esp"
    assert not Suppression.objects.exists()  # an unsubscribe withdraws consent; the address is fine


def test_a_mailjet_batch_of_events(client):
    customer = CustomerFactory()
    opted_in(customer, "email")
    delivered = message_make(customer=customer, provider_message_id="19421777835146490")
    blocked = message_make(customer=customer, provider_message_id="19421777835146491")
    soft = message_make(customer=customer, provider_message_id="19421777835146492")
    base = {"time": 1796634000, "mj_campaign_id": 0, "mj_contact_id": 0, "customcampaign": "", "Payload": ""}
    payload = [
        {
            **base,
            "event": "sent",
            "MessageID": 19421777835146490,
            "email": delivered.address,
            "smtp_reply": "sent (250 2.0.0 OK)",
        },
        {
            **base,
            "event": "blocked",
            "MessageID": 19421777835146491,
            "email": blocked.address,
            "error_related_to": "recipient",
            "error": "user unknown",
        },
        # A soft bounce: anymail calls it bounced too, but the address is not to be suppressed for it.
        {
            **base,
            "event": "bounce",
            "MessageID": 19421777835146492,
            "email": "other@example.cn",
            "blocked": False,
            "hard_bounce": False,
            "error_related_to": "recipient",
            "error": "quota exceeded",
        },
    ]
    assert _post(client, MAILJET, payload).status_code == 200
    assert Message.objects.get(pk=delivered.pk).status == "delivered"
    rejected = Message.objects.get(pk=blocked.pk)
    assert (rejected.status, rejected.reason) == ("failed", "provider_rejected")
    assert list(Suppression.objects.values_list("address", "reason")) == [
        (blocked.address.lower(), "bounced")
    ]
    assert Message.objects.get(pk=soft.pk).status == "sent"


def test_a_webhook_without_the_secret_is_refused_and_changes_nothing(client):
    message = _sent(CustomerFactory())
    payload = {"RecordType": "Delivery", "MessageID": "pm-0001-abcd", "Recipient": message.address}
    response = _post(client, POSTMARK, payload, secret="esp:wrong")
    assert response.status_code == 400
    response = client.post(POSTMARK, data=json.dumps(payload), content_type="application/json")
    assert response.status_code == 400
    message.refresh_from_db()
    assert message.status == "sent"


def test_an_event_for_a_message_we_do_not_know_is_accepted_and_ignored(client):
    payload = {
        "RecordType": "Delivery",
        "MessageID": "not-ours",
        "Recipient": "x@example.com",
        "DeliveredAt": "2026-12-07T09:00:00Z",
        "Metadata": {"message_id": "not a number"},
    }
    assert _post(client, POSTMARK, payload).status_code == 200
    assert not Event.objects.exists()


def _index_names(plan: dict) -> list[str]:
    found = [plan["Index Name"]] if "Index Name" in plan else []
    for child in plan.get("Plans", []):
        found += _index_names(child)
    return found


def test_a_webhook_without_our_metadata_finds_its_message_through_an_index_led_by_the_provider_id():
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from campaigns.services.tracking import EspEvent, _esp_message

    message = _sent(CustomerFactory())
    with CaptureQueriesContext(connection) as queries:
        found = _esp_message(EspEvent(event_type="delivered", esp_message_id="pm-0001-abcd"))
    assert found == message
    (query,) = queries.captured_queries
    with connection.cursor() as cursor:
        # A handful of rows would be read by a sequential scan whatever the indexes: take that choice away
        # and look at which index the lookup can use at all.
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute(f"EXPLAIN (FORMAT JSON) {query['sql']}")
        plan = cursor.fetchone()[0][0]["Plan"]
        names = _index_names(plan)
        assert names, plan
        cursor.execute(
            "SELECT a.attname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] WHERE c.relname = %s",
            [names[0]],
        )
        # The index's first column is the one the webhook knows: one entry read, not the whole index.
        assert cursor.fetchone()[0] == "provider_message_id", names
