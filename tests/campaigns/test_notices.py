"""Transactional notices from loyalty's events in crm's log: one message per event, whatever is re-read."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone

from campaigns.models import Message
from campaigns.notice_tasks import notices_task
from campaigns.services.notices import CONSUMER, notices_run
from crm.services.event_log import NewEvent, event_log_cursor_reset, events_append
from tests.campaigns.tracking_support import opted_in, template_make
from tests.factories import CustomerFactory

pytestmark = pytest.mark.django_db(transaction=True)


def _loyalty_events(customer, other, now):
    with transaction.atomic():
        events_append(
            events=[
                NewEvent(
                    type="points_expiring",
                    customer_id=customer.pk,
                    occurred_at=now,
                    properties={
                        "account_id": 1,
                        "points": 300,
                        "expires_at": (now + timedelta(days=30)).isoformat(),
                    },
                    external_id="loyalty:points_expiring:1:1",
                ),
                NewEvent(
                    type="tier_changed",
                    customer_id=customer.pk,
                    occurred_at=now,
                    properties={"account_id": 1, "from_tier": "silver", "to_tier": "gold", "direction": "up"},
                ),
                NewEvent(
                    type="tier_changed",
                    customer_id=other.pk,
                    occurred_at=now,
                    properties={
                        "account_id": 2,
                        "from_tier": "gold",
                        "to_tier": "silver",
                        "direction": "down",
                    },
                ),
                NewEvent(type="page_view", customer_id=customer.pk, occurred_at=now, properties={"url": "/"}),
            ],
            now=now,
        )


def test_loyalty_events_become_transactional_messages_once_even_when_read_again():
    now = timezone.now()
    customer, other = CustomerFactory(preferred_channel="email"), CustomerFactory()
    opted_in(customer, "sms", "email")
    opted_in(other, "sms")
    template_make(code="points_expiring", channel="sms", purpose="transactional")
    template_make(code="points_expiring.email", channel="email", purpose="transactional")
    template_make(code="tier_upgraded", channel="sms", purpose="transactional")
    _loyalty_events(customer, other, now)

    run = notices_run(now=now)
    assert (run.events, run.messages) == (3, 2)  # the downgrade sends nothing; page views are not read
    messages = {m.source_ref: m for m in Message.objects.all()}
    assert set(messages) == {"points_expiring", "tier_changed"}
    expiring = messages["points_expiring"]
    assert (expiring.channel, expiring.purpose, expiring.source_kind) == ("email", "transactional", "notice")
    assert expiring.template.code == "points_expiring.email"  # the customer prefers email
    assert expiring.data["points"] == 300 and expiring.status == "queued"
    upgraded = messages["tier_changed"]
    assert (upgraded.channel, upgraded.template.code) == ("sms", "tier_upgraded")
    assert upgraded.occurrence.isdigit()

    assert notices_run(now=now).events == 0  # nothing new
    event_log_cursor_reset(consumer=CONSUMER)  # a replay from the start of the log
    again = notices_run(now=now)
    assert again.events == 3 and again.messages == 2
    assert Message.objects.count() == 2


def test_an_event_whose_template_does_not_exist_sends_nothing_and_is_passed():
    now = timezone.now()
    customer = CustomerFactory()
    opted_in(customer, "sms")
    _loyalty_events(customer, CustomerFactory(), now)
    assert notices_task() == 0
    assert not Message.objects.exists()
    template_make(code="tier_upgraded", channel="sms", purpose="transactional")
    assert notices_run(now=now).events == 0  # already read: templates made later apply to later events
