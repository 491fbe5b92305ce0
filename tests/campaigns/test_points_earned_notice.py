"""End to end through the real stages: an order accrues points, loyalty writes `points_earned` with the
ledger entries, the notices consumer turns it into one transactional message, and the pipeline sends it
to the sink exactly once, however often the consumer and the dispatcher run."""

from __future__ import annotations

from datetime import timedelta

import pytest

from campaigns.models import Message
from campaigns.providers.sink import SinkProvider
from campaigns.services.dispatch import dispatch_run
from campaigns.services.notices import CONSUMER, notices_run
from crm.models import Event
from crm.services.event_log import event_log_cursor_reset
from loyalty.models import LedgerEntry
from loyalty.services.accrual import ACCRUAL_CONSUMER
from tests.campaigns.helpers import template_make
from tests.campaigns.tracking_support import opted_in
from tests.factories import CustomerFactory
from tests.loyalty.ledger_helpers import T0, order_make, process, programme_setup

pytestmark = pytest.mark.django_db(transaction=True)

NOW = T0 + timedelta(hours=1)


@pytest.fixture
def sink(settings):
    settings.MESSAGING_PROVIDERS = {
        channel: {"BACKEND": "campaigns.providers.sink.SinkProvider", "OPTIONS": {}, "RATE": 0}
        for channel in ("email", "sms", "wechat", "push")
    }
    SinkProvider.reset()
    yield SinkProvider
    SinkProvider.reset()


def test_an_order_accrues_points_and_the_customer_is_told_once(sink):
    programme_setup()
    customer = CustomerFactory(preferred_channel="sms")
    opted_in(customer, "sms")
    template_make(
        code="points_earned",
        channel="sms",
        purpose="transactional",
        content={"zh-hans": {"text": "{{ data.points }} 积分已记入（{{ data.references | join(',') }}）"}},
    )
    order = order_make(customer, total="1200", placed_at=T0)

    process(NOW)
    process(NOW)  # a second accrual run writes no entry and so no event
    entries = LedgerEntry.objects.filter(kind="earn")
    (earned,) = Event.objects.filter(type="points_earned")
    assert earned.customer_id == customer.pk
    assert earned.properties["points"] == sum(e.points + e.pending_delta for e in entries) == 1200
    assert earned.properties["pending_points"] == 1200  # pending through the return window
    assert earned.properties["references"] == [order.external_id]
    assert earned.external_id == f"loyalty:points_earned:{min(e.pk for e in entries)}"
    # Spending 1,200 crossed silver's threshold: the tier move is in the log too.
    assert Event.objects.filter(type="tier_changed", customer=customer).exists()

    assert notices_run(now=NOW).messages >= 1
    assert notices_run(now=NOW).events == 0
    event_log_cursor_reset(consumer=CONSUMER)  # a replay of the whole log
    notices_run(now=NOW)
    (notice,) = Message.objects.filter(source_kind="notice", source_ref="points_earned")
    assert (notice.purpose, notice.channel, notice.occurrence) == ("transactional", "sms", str(earned.pk))

    dispatch_run(worker="a", now_fn=lambda: NOW)
    dispatch_run(worker="b", now_fn=lambda: NOW)
    notice.refresh_from_db()
    assert notice.status == "sent", (notice.reason, notice.reason_params)
    deliveries = [m for key, m in sink.delivered.items() if key == str(notice.pk)]
    assert len(deliveries) == 1 and sink.deliveries == Message.objects.filter(status="sent").count()
    assert deliveries[0].content["text"] == f"1200 积分已记入（{order.external_id}）"
    assert deliveries[0].address == customer.phone

    # Reading the accrual's part of the log again changes nothing either.
    event_log_cursor_reset(consumer=ACCRUAL_CONSUMER)
    process(NOW)
    assert Event.objects.filter(type="points_earned").count() == 1
