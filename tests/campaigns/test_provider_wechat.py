"""The WeChat provider against a local server that answers like WeChat's API: template and subscription
messages as WeChat wants them, the stable token shared through the cache (one fetch for two processes),
refreshed once on an expired token, every errcode class, and the typed fields' length limits."""

import multiprocessing
import uuid
from datetime import UTC, datetime

import pytest
from django.core.cache import caches

from campaigns.providers.base import Outcome, OutgoingMessage
from campaigns.providers.wechat import WeChatProvider, data_fields
from tests.campaigns.fake_http import FakeServer, WeChatApp

NOW = datetime(2026, 12, 7, 2, 0, tzinfo=UTC)


def wx(n: int, openid: str = "o-member", **content) -> OutgoingMessage:
    return OutgoingMessage(
        message_id=n,
        idempotency_key=f"msg-{n}",
        channel="wechat",
        address=openid,
        content={
            "template_id": content.pop("template_id", "tpl-points"),
            "data": content.pop("data", {"thing1": "积分到账", "number2": "100"}),
            **content,
        },
    )


@pytest.fixture
def wechat():
    app = WeChatApp()
    with FakeServer(app) as server:
        server.app = app
        yield server


@pytest.fixture(autouse=True)
def clean_cache():
    caches["default"].delete_many(["campaigns:wechat:token:wx-app", "campaigns:wechat:token:wx-app:lock"])


def provider(server, **options) -> WeChatProvider:
    opts = {"APPID": "wx-app", "SECRET": "s3cret", "BASE_URL": server.url, "TIMEOUT": 5, **options}
    assert WeChatProvider.options_problems(opts) == []
    return WeChatProvider(code="wechat", channel="wechat", options=opts)


def sends(server):
    return [r for r in server.requests if r["path"] != "/cgi-bin/stable_token"]


def test_a_template_message_is_sent_as_wechat_wants_it(wechat):
    message = wx(
        1, url="https://shop.example.com/points", miniprogram={"appid": "wx-mini", "pagepath": "pages/points"}
    )
    [result] = provider(wechat).send_batch([message], now=NOW)
    assert result.outcome == Outcome.SENT and result.provider_message_id == "1001"
    token_request, send = wechat.requests
    assert token_request["json"] == {
        "grant_type": "client_credential",
        "appid": "wx-app",
        "secret": "s3cret",
        "force_refresh": False,
    }
    assert send["path"] == "/cgi-bin/message/template/send"
    assert send["query"]["access_token"] == "TOKEN-1"
    assert send["json"] == {
        "touser": "o-member",
        "template_id": "tpl-points",
        "data": {"thing1": {"value": "积分到账"}, "number2": {"value": "100"}},
        "url": "https://shop.example.com/points",
        "miniprogram": {"appid": "wx-mini", "pagepath": "pages/points"},
        "client_msg_id": "msg-1",
    }
    assert "积分到账".encode() in send["raw"]  # UTF-8, not \u escapes


@pytest.mark.parametrize(
    ("api", "path"),
    [("bizsend", "/cgi-bin/message/subscribe/bizsend"), ("send", "/cgi-bin/message/subscribe/send")],
)
def test_a_subscription_message_goes_to_its_endpoint(wechat, api, path):
    p = provider(wechat, KIND="subscribe", SUBSCRIBE_API=api)
    assert p.supports_idempotency is False
    [result] = p.send_batch([wx(1, page="pages/index?from=msg")], now=NOW)
    assert result.outcome == Outcome.SENT
    [send] = sends(wechat)
    assert send["path"] == path
    assert send["json"] == {
        "touser": "o-member",
        "template_id": "tpl-points",
        "data": {"thing1": {"value": "积分到账"}, "number2": {"value": "100"}},
        "page": "pages/index?from=msg",
    }


def test_the_token_is_fetched_once_for_many_messages_and_batches(wechat):
    p = provider(wechat)
    p.send_batch([wx(n) for n in range(1, 6)], now=NOW)
    provider(wechat).send_batch([wx(n) for n in range(6, 9)], now=NOW)  # another instance, same cache
    assert wechat.app.token_fetches == 1
    assert len(sends(wechat)) == 8


def test_an_expired_token_is_refreshed_once_and_the_message_retried_once(wechat):
    p = provider(wechat)
    p.send_batch([wx(1)], now=NOW)
    wechat.app.expire()
    results = p.send_batch([wx(2), wx(3)], now=NOW)
    assert [r.outcome for r in results] == [Outcome.SENT, Outcome.SENT]
    assert wechat.app.token_fetches == 2
    assert [s["query"]["access_token"] for s in sends(wechat)] == ["TOKEN-1", "TOKEN-1", "TOKEN-2", "TOKEN-2"]


def test_a_token_refused_again_after_refresh_is_not_refreshed_forever(wechat):
    p = provider(wechat)
    p.send_batch([wx(1)], now=NOW)

    def always_expired(request, app=wechat.app, original=WeChatApp.__call__):
        if request["path"] != "/cgi-bin/stable_token":
            return 200, {}, {"errcode": 40001, "errmsg": "invalid credential"}
        return original(app, request)

    wechat.httpd.app = always_expired
    results = p.send_batch([wx(2), wx(3)], now=NOW)
    assert (results[0].outcome, results[0].error_code, results[0].cool_down) == (Outcome.RETRY, "40001", True)
    assert results[1].error_code == "not_attempted"
    assert len(sends(wechat)) == 1 + 2  # the first message, then message 2 before and after one refresh


def test_wrong_credentials_cool_the_provider_down(wechat):
    p = provider(wechat, SECRET="wrong")
    results = p.send_batch([wx(1), wx(2)], now=NOW)
    assert (results[0].outcome, results[0].error_code, results[0].cool_down) == (Outcome.RETRY, "40125", True)
    assert results[1].error_code == "not_attempted"


@pytest.mark.parametrize(
    ("message", "outcome", "code", "address_problem", "cool_down"),
    [
        (wx(1, "o-busy"), Outcome.RETRY, "-1", "", True),
        (wx(1, "o-quota"), Outcome.RETRY, "45009", "", True),
        (wx(1, "o-unfollowed"), Outcome.PERMANENT, "43004", "unsubscribed", False),
        (wx(1, "o-refused"), Outcome.PERMANENT, "43101", "unsubscribed", False),
        (wx(1, "o-bad"), Outcome.PERMANENT, "40003", "invalid", False),
        (wx(1, template_id="bad-template"), Outcome.PERMANENT, "40037", "", False),
        (wx(1, template_id="bad-data"), Outcome.PERMANENT, "47003", "", False),
    ],
)
def test_each_errcode_class(wechat, message, outcome, code, address_problem, cool_down):
    results = provider(wechat).send_batch([message, wx(2)], now=NOW)
    first = results[0]
    assert (first.outcome, first.error_code, first.address_problem, first.cool_down) == (
        outcome,
        code,
        address_problem,
        cool_down,
    )
    if cool_down:  # the rest of the batch waits for the cool-down, untried
        assert results[1].error_code == "not_attempted" and len(sends(wechat)) == 1
    else:
        assert results[1].outcome == Outcome.SENT


def test_a_server_error_and_no_server_are_retried(wechat):
    wechat.httpd.app = lambda request: (
        (502, {}, b"bad gateway") if request["path"] != "/cgi-bin/stable_token" else WeChatApp()(request)
    )
    [result] = provider(wechat).send_batch([wx(1)], now=NOW)
    assert (result.outcome, result.error_code, result.cool_down) == (Outcome.RETRY, "502", True)


def test_a_timeout_is_retried_for_template_messages_and_unknown_for_subscription_messages(wechat):
    [template] = provider(wechat, TIMEOUT=1.5).send_batch([wx(1, "o-slow")], now=NOW)
    assert (template.outcome, template.error_code) == (
        Outcome.RETRY,
        "timeout",
    )  # client_msg_id dedupes a resend
    [subscription] = provider(wechat, TIMEOUT=1.5, KIND="subscribe").send_batch([wx(2, "o-slow")], now=NOW)
    assert (subscription.outcome, subscription.error_code) == (Outcome.UNKNOWN, "no_answer")


def test_field_limits_truncate_free_text_and_refuse_codes():
    fields = data_fields(
        {
            "thing1": "双十一大促：全场满三百减五十，会员再享九五折优惠",
            "name2": "欧阳娜娜娜娜娜娜娜娜娜",
            "character_string3": "A" * 32,
        },
        truncate=True,
    )
    assert (
        fields["thing1"]["value"] == "双十一大促：全场满三百减五十，会员再享…"
        and len(fields["thing1"]["value"]) == 20
    )
    assert len(fields["name2"]["value"]) == 10
    assert fields["character_string3"]["value"] == "A" * 32
    with pytest.raises(
        ValueError,
        match=r"data.character_string3 is 33 characters; a character_string field allows at most 32",
    ):
        data_fields({"character_string3": "A" * 33}, truncate=True)
    with pytest.raises(ValueError, match="thing1 is 21 characters"):
        data_fields({"thing1": "x" * 21}, truncate=False)


def test_a_field_too_long_fails_only_its_message(wechat):
    results = provider(wechat).send_batch([wx(1, data={"number1": "1" * 40}), wx(2)], now=NOW)
    assert (results[0].outcome, results[0].error_code) == (Outcome.PERMANENT, "bad_data")
    assert "number1" in results[0].error_detail
    assert results[1].outcome == Outcome.SENT and len(sends(wechat)) == 1


def _send_from_another_process(base_url, n, barrier, queue):
    try:
        barrier.wait(timeout=30)
        p = WeChatProvider(
            code="wechat",
            channel="wechat",
            options={"APPID": "wx-app", "SECRET": "s3cret", "BASE_URL": base_url, "TIMEOUT": 10},
        )
        queue.put([r.outcome.value for r in p.send_batch([wx(n)], now=NOW)])
    except Exception as exc:  # noqa: BLE001 - reported to the parent
        queue.put(repr(exc))


def test_two_processes_share_one_stable_token_fetch(settings):
    shared = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:6379/5",
            "KEY_PREFIX": f"providers-test-{uuid.uuid4().hex}",
        }
    }
    settings.CACHES = shared  # the forked children inherit it
    app = WeChatApp(token_delay=0.5)  # a slow token endpoint: both processes would fetch without the lock
    with FakeServer(app) as server:
        ctx = multiprocessing.get_context("fork")
        barrier, queue = ctx.Barrier(2), ctx.Queue()
        procs = [
            ctx.Process(target=_send_from_another_process, args=(server.url, n, barrier, queue))
            for n in (1, 2)
        ]
        for p in procs:
            p.start()
        answers = [queue.get(timeout=60) for _ in procs]
        for p in procs:
            p.join(timeout=30)
        assert answers == [["sent"], ["sent"]]
        assert app.token_fetches == 1
        assert len([r for r in server.requests if r["path"] != "/cgi-bin/stable_token"]) == 2
    caches["default"].delete_many(["campaigns:wechat:token:wx-app", "campaigns:wechat:token:wx-app:lock"])
