"""POST /api/v1/messages/ and GET /api/v1/messages/{id}/: idempotency, errors per field, scopes, best
channel, the status history with reasons."""

from __future__ import annotations

import pytest
from django.test import Client
from django.utils import timezone

from campaigns.models import Message
from crm.api.authentication import api_key_create
from crm.models import CustomerIdentity
from tests.campaigns.tracking_support import opted_in, template_make
from tests.factories import CustomerFactory

pytestmark = pytest.mark.django_db

URL = "/api/v1/messages/"


@pytest.fixture
def key():
    return api_key_create(name="shop", scopes=["messages:send", "messages:read"])[1]


@pytest.fixture
def api(key):
    client = Client()
    client.defaults["HTTP_AUTHORIZATION"] = f"Api-Key {key}"
    return client


def _send(api, body):
    return api.post(URL, data=body, content_type="application/json")


@pytest.fixture
def customer():
    customer = CustomerFactory(external_id="C-1")
    opted_in(customer, "sms", "email")
    return customer


@pytest.fixture
def shipped():
    template_make(code="order_shipped", channel="sms", purpose="transactional")
    return template_make(code="order_shipped.email", channel="email", purpose="transactional")


def _body(**overrides):
    return {
        "customer": {"external_id": "C-1"},
        "channel": "sms",
        "template": "order_shipped",
        "data": {"order": {"number": "TM-1", "items": ["湿巾"]}},
        "idempotency_key": "ship-TM-1",
        **overrides,
    }


def test_same_key_and_payload_returns_the_same_message(api, customer, shipped):
    first = _send(api, _body())
    assert first.status_code == 201, first.json()
    body = first.json()
    # queued; or already sent where the outbox's message_send_now puts it through the pipeline at once
    assert body["status"] in ("queued", "sent") and body["channel"] == "sms" and body["replayed"] is False
    assert body["customer_id"] == customer.pk and body["purpose"] == "transactional"
    again = _send(api, _body())
    assert again.status_code == 200
    assert again.json()["id"] == body["id"] and again.json()["replayed"] is True
    assert Message.objects.count() == 1
    message = Message.objects.get()
    assert (message.source_kind, message.occurrence) == ("api", "ship-TM-1")
    assert message.data == {"order": {"number": "TM-1", "items": ["湿巾"]}}


def test_same_key_with_another_payload_is_a_409(api, customer, shipped):
    assert _send(api, _body()).status_code == 201
    for changed in ({"data": {"order": {"number": "TM-2"}}}, {"channel": "email"}, {"priority": 5}):
        response = _send(api, _body(**changed))
        assert response.status_code == 409, changed
        assert response.json()["errors"] == [
            {
                "field": "idempotency_key",
                "code": "idempotency_conflict",
                "message": "This idempotency key was already used for a different request.",
            }
        ]
    assert Message.objects.count() == 1


def test_keys_are_per_api_key(api, customer, shipped):
    assert _send(api, _body()).status_code == 201
    other = Client()
    other.defaults["HTTP_AUTHORIZATION"] = (
        f"Api-Key {api_key_create(name='crm', scopes=['messages:send'])[1]}"
    )
    assert _send(other, _body()).status_code == 201
    assert Message.objects.count() == 2


def test_best_channel_follows_consent_and_preference(api, customer, shipped):
    customer.preferred_channel = "email"
    customer.save()
    assert _send(api, _body(channel="best")).json()["channel"] == "email"
    # No consent to email any more: the next best open one, SMS.
    shopper = CustomerFactory(external_id="C-2", preferred_channel="email")
    opted_in(shopper, "sms")
    response = _send(api, _body(channel="best", customer={"external_id": "C-2"}, idempotency_key="k2"))
    assert response.json()["channel"] == "sms"


def test_the_customer_is_found_by_any_identity(api, customer, shipped):
    CustomerIdentity.objects.create(customer=customer, kind="wechat_openid", value="oAbc123")
    body = _body(customer={"identities": [{"kind": "wechat_openid", "value": "oAbc123"}]})
    response = _send(api, body)
    assert response.status_code == 201 and response.json()["customer_id"] == customer.pk


@pytest.mark.parametrize(
    "changes, field, status",
    [
        ({"customer": {"external_id": "nobody"}}, "customer", 404),
        ({"customer": {}}, "customer", 400),
        ({"template": "no_such_template"}, "template", 400),
        ({"channel": "push"}, "channel", 400),
        ({"channel": "fax"}, "channel", 400),
        ({"idempotency_key": ""}, "idempotency_key", 400),
        ({"idempotency_key": " padded"}, "idempotency_key", 400),
        ({"idempotency_key": "x" * 101}, "idempotency_key", 400),
        ({"data": ["not", "an", "object"]}, "data", 400),
        ({"data": {"text": "nul\x00byte"}}, "data", 400),
        ({"data": {"big": "x" * 20000}}, "data", 400),
        ({"priority": "high"}, "priority", 400),
        ({"priority": 1000}, "priority", 400),
        ({"purpose": "test"}, "purpose", 400),
        ({"surprise": 1}, "surprise", 400),
    ],
)
def test_errors_name_the_field(api, customer, shipped, changes, field, status):
    response = _send(api, _body(**changes))
    assert response.status_code == status, response.json()
    errors = response.json()["errors"]
    assert [e["field"].split(".")[0].split("[")[0] for e in errors] == [field], errors
    assert all(e["message"] for e in errors)
    assert not Message.objects.exists()


def test_a_template_without_content_is_refused(api, customer):
    from campaigns.models import MessageTemplate

    MessageTemplate.objects.create(code="draft", name="Draft", channel="sms")
    response = _send(api, _body(template="draft"))
    assert response.status_code == 400
    assert response.json()["errors"][0]["code"] == "template_empty"


def test_scopes_and_keys(customer, shipped):
    anonymous = Client().post(URL, data=_body(), content_type="application/json")
    assert anonymous.status_code == 401
    reader = Client()
    reader.defaults["HTTP_AUTHORIZATION"] = f"Api-Key {api_key_create(name='r', scopes=['messages:read'])[1]}"
    assert _send(reader, _body()).status_code == 403
    sender = Client()
    sender.defaults["HTTP_AUTHORIZATION"] = f"Api-Key {api_key_create(name='s', scopes=['messages:send'])[1]}"
    message_id = _send(sender, _body()).json()["id"]
    assert sender.get(f"{URL}{message_id}/").status_code == 403
    # Another key's message, read with messages:read only: as if it did not exist.
    assert reader.get(f"{URL}{message_id}/").status_code == 404


def _client(*scopes):
    client = Client()
    client.defaults["HTTP_AUTHORIZATION"] = f"Api-Key {api_key_create(name='k', scopes=list(scopes))[1]}"
    return client


def test_a_key_reads_only_the_messages_sent_with_it_unless_it_may_read_all(customer, shipped):
    from campaigns.services.outbox import MessageRequest, messages_enqueue

    shop, service = _client("messages:send", "messages:read"), _client("messages:send", "messages:read")
    auditor = _client("messages:read", "messages:read_all")
    mine = _send(shop, _body()).json()["id"]
    theirs = _send(service, _body(idempotency_key="ship-TM-2")).json()["id"]
    (campaign,) = messages_enqueue(
        rows=[
            MessageRequest(
                customer_id=customer.pk,
                channel="sms",
                template_id=Message.objects.get(pk=mine).template_id,
                source_kind="campaign",
                source_ref="double-11",
                occurrence="1",
            )
        ],
        now=timezone.now(),
    ).created_ids

    assert shop.get(f"{URL}{mine}/").status_code == 200
    for other in (theirs, campaign):
        response = shop.get(f"{URL}{other}/")
        assert response.status_code == 404
        # The same answer as for an id that does not exist: nothing tells the key the message is there.
        missing = shop.get(f"{URL}{campaign + 1000}/")
        assert response.json()["errors"][0]["code"] == missing.json()["errors"][0]["code"] == "not_found"
    assert service.get(f"{URL}{theirs}/").status_code == 200
    for any_message in (mine, theirs, campaign):
        assert auditor.get(f"{URL}{any_message}/").status_code == 200


def test_the_schema_describes_the_read_scopes():
    schema = Client().get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    get = schema["paths"]["/api/v1/messages/{id}/"]["get"]
    assert "messages:read_all" in get["description"]
    assert "404" in get["responses"]


def test_get_gives_the_status_history_and_the_reason_text(api, customer, shipped):
    message_id = _send(api, _body()).json()["id"]
    now = timezone.now()
    message = Message.objects.get(pk=message_id)
    message.status, message.reason, message.reason_params = "suppressed", "no_consent", {"channel": "sms"}
    message.history = [
        *message.history,
        {"status": "suppressed", "at": now.isoformat(), "reason": "no_consent", "params": {"channel": "sms"}},
    ]
    message.save()
    response = api.get(f"{URL}{message_id}/", HTTP_ACCEPT_LANGUAGE="en")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "suppressed" and body["reason"] == "no_consent"
    assert body["reason_text"] == "no SMS consent"
    statuses = [h["status"] for h in body["history"]]
    assert statuses[0] == "queued" and statuses[-1] == "suppressed"
    assert body["history"][-1]["reason_text"] == "no SMS consent"
    assert body["template"] == "order_shipped"
    missing = api.get(f"{URL}999999999/")
    assert missing.status_code == 404 and missing.json()["errors"][0]["code"] == "not_found"
