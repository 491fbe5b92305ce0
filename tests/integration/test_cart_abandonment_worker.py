"""Cart abandonment end to end with a real Celery worker: add_to_cart events from the WeChat mini-program
come in through the API, the beat tasks run in the worker (the time-trigger pass enters the customer whose
two hours passed with no order, the engine's wake reaches the send node, the messaging dispatcher sends),
and the SMS comes out of the file provider; the customer whose order came in time gets nothing.

The worker runs on the real clock, so the carts are dated two hours and some minutes ago (the API takes an
event's own time) and the journey was published before them; the customers' zone is one where it is about
13:00, far from quiet hours."""

from __future__ import annotations

import json
import time
from datetime import timedelta

import pytest
from django.conf import settings as django_settings
from django.utils import timezone

from campaigns.models import Message
from journeys.models import Enrollment, EnrollmentState
from tests.campaigns.helpers import template_make
from tests.campaigns.rules.helpers import customer
from tests.crm.test_api_support import api_client
from tests.integration.conftest import zone_at_local_hour
from tests.journeys.engine_helpers import published
from tests.journeys.graphs import chain, entry, node

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

SEND = django_settings.CELERY_BEAT_SCHEDULE["campaigns-dispatch"]["task"]
TIME_TRIGGERS = django_settings.CELERY_BEAT_SCHEDULE["journeys-time-triggers"]["task"]
ENGINE = django_settings.CELERY_BEAT_SCHEDULE["journeys-dispatch"]["task"]

SMS = {
    "zh-hans": {"text": "{{ customer.name }}，您的购物车还有宝贝等您结算"},
    "en": {"text": "{{ customer.name }}, your cart is waiting for you"},
}


@pytest.fixture
def outbox_file(tmp_path, monkeypatch):
    path = tmp_path / "messages.jsonl"
    providers = {
        channel: {"BACKEND": "campaigns.providers.file.FileProvider", "OPTIONS": {"PATH": str(path)}}
        for channel in ("sms", "email", "wechat", "push")
    }
    monkeypatch.setenv("MESSAGING_TEST_PROVIDERS", json.dumps(providers))
    return path


def _task(worker, name):
    result = worker.app.send_task(name)
    worker.wait_for_log(rf"Task {name}\[{result.id}\] succeeded", timeout=120)


@pytest.mark.celery_worker_include("tests.integration.providers_from_env")
def test_an_abandoned_cart_gets_its_sms_and_a_cart_followed_by_an_order_in_time_gets_nothing(
    outbox_file, celery_worker_process
):
    worker = celery_worker_process
    now = timezone.now()
    zone = str(zone_at_local_hour(now, 13))
    template_make(code="cart_reminder", channel="sms", content=SMS)
    idler = customer(tz=zone, consents=("sms",), external_id="CART-IDLE")
    buyer = customer(tz=zone, consents=("sms",), external_id="CART-BUY")
    cart = chain(
        entry(
            kind="event_not_followed",
            event_type="add_to_cart",
            filters=[{"property": "channel", "op": "eq", "value": "wechat_miniprogram"}],
            not_followed_by="order_placed",
            within={"value": 2, "unit": "hours"},
        ),
        node("sms", "send_message", channel="sms", template="cart_reminder"),
        node("x", "exit"),
    )
    version = published(cart, settings={"re_entry": {"mode": "always"}}, now=now - timedelta(hours=3))

    api = api_client()
    carted = now - timedelta(hours=2, minutes=5)
    events = [
        {
            "type": "add_to_cart",
            "occurred_at": carted.isoformat(),
            "customer": {"external_id": person.external_id},
            "properties": {"sku": "SKU-1", "quantity": 1, "channel": "wechat_miniprogram"},
        }
        for person in (idler, buyer)
    ]
    response = api.post("/api/v1/events/", {"events": events}, format="json")
    assert response.status_code == 200 and response.json()["accepted"] == 2, response.json()
    order = {
        "external_id": "WX-1",
        "placed_at": (carted + timedelta(minutes=40)).isoformat(),
        "total": "99.00",
        "channel": "wechat",
        "customer": {"external_id": buyer.external_id},
        "lines": [{"sku": "SKU-1", "quantity": 1, "unit_price": "99.00"}],
    }
    response = api.post("/api/v1/orders/", order, format="json")
    assert response.status_code in (200, 201), response.json()

    _task(worker, TIME_TRIGGERS)
    assert list(Enrollment.objects.filter(version=version).values_list("customer_id", flat=True)) == [
        idler.pk
    ]
    deadline = time.monotonic() + 240
    while not Message.objects.filter(customer=idler, status="sent").exists():
        assert time.monotonic() < deadline, worker.output()[-3000:]
        _task(worker, ENGINE)
        _task(worker, SEND)

    lines = [json.loads(line) for line in outbox_file.read_text(encoding="utf-8").splitlines()]
    assert [line["address"] for line in lines] == [idler.phone]
    assert "购物车" in lines[0]["content"]["text"] or "cart" in lines[0]["content"]["text"]
    assert Enrollment.objects.get(customer=idler).state == EnrollmentState.COMPLETED
    assert not Message.objects.filter(customer=buyer).exists()
    # The beat task again: nobody enters twice, nothing is sent twice.
    _task(worker, TIME_TRIGGERS)
    _task(worker, ENGINE)
    _task(worker, SEND)
    assert Enrollment.objects.filter(version=version).count() == 1
    assert len(outbox_file.read_text(encoding="utf-8").splitlines()) == 1
