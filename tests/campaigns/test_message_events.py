"""message_events_record: message events into crm's log in bulk, each once."""

from __future__ import annotations

import pytest
from django.utils import timezone

from campaigns.event_types import MESSAGE_EVENT_TYPES
from campaigns.services.message_events import MessageEvent, message_events_record
from crm.event_types import event_type_get
from crm.models import Event
from crm.services.event_log import EventRejected
from tests.campaigns.tracking_support import message_make, template_make
from tests.factories import CustomerFactory

pytestmark = pytest.mark.django_db


def test_every_message_event_type_is_catalogued_with_its_schema():
    for code in MESSAGE_EVENT_TYPES:
        known = event_type_get(code)
        assert known is not None and known.source == "system"
        assert {"message_id", "channel", "source_kind", "source_ref", "template"} <= set(known.properties)
    assert event_type_get("message_clicked").properties["url"].required


def test_a_batch_is_recorded_in_two_queries_and_a_repeat_records_nothing(django_assert_num_queries):
    template = template_make(code="promo", channel="sms")
    messages = [message_make(customer=CustomerFactory(), template=template, channel="sms") for _ in range(50)]
    now = timezone.now()
    events = [MessageEvent("message_sent", m, now) for m in messages]
    events += [
        MessageEvent(
            "message_failed", messages[0], now, {"reason": "provider_rejected", "error_code": "43004"}
        )
    ]
    with django_assert_num_queries(2):  # the messages with their template codes, one insert
        message_events_record(events, now=now)
    assert Event.objects.filter(type="message_sent").count() == 50
    failed = Event.objects.get(type="message_failed")
    assert failed.properties["template"] == "promo" and failed.properties["error_code"] == "43004"
    assert failed.channel == "sms" and failed.customer_id == messages[0].customer_id
    message_events_record(events, now=now)  # the outbox recording the same batch again after a crash
    assert Event.objects.filter(type__startswith="message_").count() == 51


def test_a_property_of_the_wrong_kind_is_a_programming_error_caught_before_writing():
    message = message_make(customer=CustomerFactory())
    with pytest.raises(EventRejected):
        message_events_record([MessageEvent("message_clicked", message, None, {"url": 5})])
    with pytest.raises(ValueError):
        message_events_record([MessageEvent("page_view", message)])
    assert not Event.objects.exists()


def test_the_outbox_dict_form_is_accepted():
    message = message_make(customer=CustomerFactory(), channel="push", source_kind="journey", source_ref="n1")
    now = timezone.now()
    message_events_record(
        [
            {
                "type": "message_sent",
                "message_id": message.pk,
                "customer_id": message.customer_id,
                "channel": "push",
                "occurred_at": now,
                "properties": {
                    "message_id": message.pk,
                    "channel": "push",
                    "source_kind": "journey",
                    "source_ref": "n1",
                    "provider_message_id": "p-1",
                },
            }
        ]
    )
    event = Event.objects.get(type="message_sent")
    assert event.channel == "app" and event.properties["provider_message_id"] == "p-1"
    assert event.properties["template"] == message.template.code and "campaign_id" not in event.properties
