"""The webhook node against a real HTTP server on loopback: signed, keyed for idempotency, retried with
back-off as due rows (never under a lock), and given up on after its attempts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from journeys.models import EnrollmentState
from journeys.webhooks import signature_valid
from tests.campaigns.fake_http import FakeServer
from tests.factories import CustomerFactory
from tests.journeys.engine_helpers import enter, one, published, run, trail
from tests.journeys.graphs import chain, entry, node

pytestmark = pytest.mark.django_db

T0 = datetime(2027, 3, 10, 2, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _loopback(settings):
    settings.JOURNEYS_WEBHOOK_HTTP_HOSTS = ("127.0.0.1",)
    settings.JOURNEYS_WEBHOOK_SECRET = "s3cret"
    settings.JOURNEYS_WEBHOOK_RETRY_BASE_SECONDS = 60
    settings.JOURNEYS_WEBHOOK_MAX_ATTEMPTS = 3


def hook_journey(url):
    return published(chain(entry(), node("h", "webhook", url=url), node("x", "exit")), now=T0)


def test_a_webhook_is_signed_keyed_and_passed_on_success():
    with FakeServer(lambda request: (200, {}, {"ok": True})) as server:
        version = hook_journey(f"{server.url}/hook")
        enter(version, [CustomerFactory()], now=T0)
        run(T0)
        [request] = server.requests
    e = one(version)
    assert e.state == EnrollmentState.COMPLETED and trail(e)[1] == ("h", "passed", "next")
    headers = {k.lower(): v for k, v in request["headers"].items()}
    assert headers["idempotency-key"] == f"journey:{e.pk}:h:2"
    assert signature_valid(header=headers["x-journey-signature"], body=request["raw"], secret=b"s3cret")
    assert not signature_valid(
        header=headers["x-journey-signature"], body=request["raw"] + b" ", secret=b"s3cret"
    )
    assert request["json"]["enrollment_id"] == e.pk


def test_a_failing_webhook_is_retried_later_with_the_same_key_then_given_up():
    with FakeServer(lambda request: (503, {}, {"error": "busy"})) as server:
        version = hook_journey(f"{server.url}/hook")
        enter(version, [CustomerFactory()], now=T0)
        run(T0)  # entry, then parked at the webhook; the same run's next claim calls it: attempt 1
        e = one(version)
        assert (e.state, e.node_id, e.attempts) == (EnrollmentState.ACTIVE, "h", 1)
        assert T0 + timedelta(seconds=30) <= e.due_at <= T0 + timedelta(seconds=60)
        run(T0 + timedelta(seconds=10))  # not due yet: no call
        assert len(server.requests) == 1
        run(T0 + timedelta(minutes=1))  # attempt 2
        run(T0 + timedelta(minutes=5))  # attempt 3: the last
        keys = {r["headers"]["Idempotency-Key"] for r in server.requests}
    e = one(version)
    assert len(server.requests) == 3 and keys == {f"journey:{e.pk}:h:2"}
    assert (e.state, e.reason) == (EnrollmentState.FAILED, "webhook_failed")
    assert trail(e)[-1][:2] == ("h", "failed")


def test_a_webhook_answering_400_is_not_retried():
    with FakeServer(lambda request: (400, {}, {"error": "bad"})) as server:
        version = hook_journey(f"{server.url}/hook")
        enter(version, [CustomerFactory()], now=T0)
        run(T0)
        assert len(server.requests) == 1
    assert one(version).state == EnrollmentState.FAILED


def test_plain_http_is_refused_unless_the_host_is_allowed(settings):
    from journeys.nodes import graph_validate

    g = chain(entry(), node("h", "webhook", url="http://example.com/hook"), node("x", "exit"))
    assert [(p.node_id, p.field) for p in graph_validate(g, check_refs=False)] == [("h", "config.url")]
