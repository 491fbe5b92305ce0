"""The HTTP provider (SMS, app push) against a local HTTP server: the payload built from the message by
the OPTIONS template, the auth and idempotency headers, and every answer classified."""

from datetime import UTC, datetime

import pytest

from campaigns.providers.base import Outcome, OutgoingMessage
from campaigns.providers.http import HttpProvider, payload_render
from tests.campaigns.fake_http import FakeServer, sms_gateway

NOW = datetime(2026, 12, 7, 2, 0, tzinfo=UTC)


def sms(n: int, to: str, text: str = "【品牌】您的订单已发货，回T退订") -> OutgoingMessage:
    return OutgoingMessage(
        message_id=n,
        idempotency_key=f"msg-{n}",
        channel="sms",
        address=to,
        content={"text": text},
        language="zh-hans",
    )


@pytest.fixture
def gateway():
    with FakeServer(sms_gateway) as server:
        yield server


def provider(url: str, **options) -> HttpProvider:
    opts = {
        "URL": f"{url}/v1/sms",
        "AUTH": {"TYPE": "bearer", "TOKEN": "t0ken"},
        "PAYLOAD": {
            "to": "{{ address }}",
            "text": "{{ content.text }}",
            "meta": {"ref": "msg {{ message_id }}"},
        },
        "MESSAGE_ID_FIELD": "data.id",
        "TIMEOUT": 2,
        **options,
    }
    assert HttpProvider.options_problems(opts) == []
    return HttpProvider(code="sms", channel="sms", options=opts)


def test_the_payload_auth_and_idempotency_key_reach_the_gateway(gateway):
    [result] = provider(gateway.url).send_batch([sms(1, "+8613800000001")], now=NOW)
    assert result.outcome == Outcome.SENT and result.provider_message_id == "sms-msg-1"
    [request] = gateway.requests
    assert request["json"] == {
        "to": "+8613800000001",
        "text": "【品牌】您的订单已发货，回T退订",
        "meta": {"ref": "msg 1"},
    }
    assert request["headers"]["Authorization"] == "Bearer t0ken"
    assert request["headers"]["Idempotency-Key"] == "msg-1"


@pytest.mark.parametrize(
    ("auth", "header", "value"),
    [
        ({"TYPE": "basic", "USERNAME": "u", "PASSWORD": "p"}, "Authorization", "Basic dTpw"),
        ({"TYPE": "header", "NAME": "X-Api-Key", "VALUE": "k"}, "X-Api-Key", "k"),
    ],
)
def test_basic_and_header_auth(gateway, auth, header, value):
    provider(gateway.url, AUTH=auth).send_batch([sms(1, "+8613800000001")], now=NOW)
    assert gateway.requests[0]["headers"][header] == value


def test_each_answer_is_classified(gateway):
    p = provider(
        gateway.url,
        ERROR_FIELD="code",
        SUCCESS_VALUES=["OK"],
        ERRORS={"MOBILE_NUMBER_ILLEGAL": "invalid", "BUSINESS_LIMIT_CONTROL": "retry"},
    )
    r = {
        x.message_id: x
        for x in p.send_batch(
            [
                sms(1, "+8613800000500"),
                sms(2, "+8613800000400"),
                sms(3, "+8613800000111"),
                sms(4, "+8613800000222"),
                sms(5, "+8613800000001"),
            ],
            now=NOW,
        )
    }
    assert (r[1].outcome, r[1].error_code, r[1].cool_down) == (Outcome.RETRY, "500", False)
    assert (r[2].outcome, r[2].error_code, r[2].address_problem) == (Outcome.PERMANENT, "400", "")
    assert (r[3].outcome, r[3].error_code, r[3].address_problem) == (
        Outcome.PERMANENT,
        "MOBILE_NUMBER_ILLEGAL",
        "invalid",
    )
    assert (r[4].outcome, r[4].error_code) == (Outcome.RETRY, "BUSINESS_LIMIT_CONTROL")
    assert r[5].outcome == Outcome.SENT


def test_429_honours_retry_after_cools_down_and_stops_the_batch(gateway):
    results = provider(gateway.url).send_batch([sms(1, "+8613800000429"), sms(2, "+8613800000001")], now=NOW)
    assert (results[0].outcome, results[0].retry_after, results[0].cool_down) == (Outcome.RETRY, 7.0, True)
    assert (results[1].outcome, results[1].error_code) == (Outcome.RETRY, "not_attempted")
    assert len(gateway.requests) == 1


def test_a_timeout_is_retried_with_an_idempotency_key_and_unknown_without(gateway):
    [with_key] = provider(gateway.url).send_batch([sms(1, "+8613800000999")], now=NOW)
    assert (with_key.outcome, with_key.error_code) == (Outcome.RETRY, "timeout")
    without = provider(gateway.url, IDEMPOTENCY_HEADER="")
    assert without.supports_idempotency is False
    [result] = without.send_batch([sms(2, "+8613800000999")], now=NOW)
    assert result.outcome == Outcome.UNKNOWN


def test_nobody_listening_is_a_retry_and_a_cool_down():
    from tests.campaigns.smtp_server import free_port

    [result] = provider(f"http://127.0.0.1:{free_port()}").send_batch([sms(1, "+8613800000001")], now=NOW)
    assert (result.outcome, result.error_code, result.cool_down) == (Outcome.RETRY, "connection", True)


def test_push_payload_keeps_structure_and_a_missing_field_fails_only_that_message(gateway):
    p = provider(
        gateway.url,
        PAYLOAD={
            "to": "{{ address }}",
            "notification": {"title": "{{ content.title }}", "body": "{{ content.body }}"},
            "data": "{{ content.data }}",
        },
    )
    ok = OutgoingMessage(
        message_id=1,
        idempotency_key="k1",
        channel="push",
        address="tok-1",
        content={"title": "积分到账", "body": "+100", "data": {"screen": "points"}},
    )
    missing = OutgoingMessage(
        message_id=2,
        idempotency_key="k2",
        channel="push",
        address="tok-2",
        content={"title": "x", "data": {}},
    )
    r = p.send_batch([missing, ok], now=NOW)
    assert (r[0].outcome, r[0].error_code) == (Outcome.PERMANENT, "payload") and "content.body" in r[
        0
    ].error_detail
    assert r[1].outcome == Outcome.SENT
    assert gateway.requests[0]["json"] == {
        "to": "tok-1",
        "notification": {"title": "积分到账", "body": "+100"},
        "data": {"screen": "points"},
    }


def test_bad_options_are_named():
    problems = HttpProvider.options_problems(
        {
            "URL": "ftp://x",
            "PAYLOAD": {"to": "{{ customer.name }}"},
            "AUTH": {"TYPE": "bearer"},
            "TIMEOUT": 0,
            "COLOUR": 1,
        }
    )
    text = " | ".join(problems)
    for needle in ("URL", "customer.name", "TOKEN", "TIMEOUT", "COLOUR"):
        assert needle in text


def test_payload_render_leaves_plain_values_alone():
    assert payload_render({"a": 1, "b": ["{{ address }}", True]}, {"address": "x"}) == {
        "a": 1,
        "b": ["x", True],
    }
