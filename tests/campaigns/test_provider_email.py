"""The email provider against a real SMTP server on loopback (aiosmtpd): the mails arrive with their
headers and both parts, one connection carries a batch, a server that hangs up mid-batch costs nothing
but a reconnect, and each refusal is classified. Anymail ESPs through anymail's own test backend."""

from datetime import UTC, datetime

import pytest
from django.core import mail

from campaigns.providers.base import Outcome, OutgoingMessage
from campaigns.providers.email import DjangoMailProvider
from tests.campaigns.smtp_server import Handler, SMTPServer

NOW = datetime(2026, 12, 7, 2, 0, tzinfo=UTC)


def outgoing(n: int, address: str | None = None, **content) -> OutgoingMessage:
    return OutgoingMessage(
        message_id=n,
        idempotency_key=f"msg-{n}",
        channel="email",
        address=address or f"member{n}@example.com",
        content={
            "subject": content.pop("subject", f"您的积分 #{n}"),
            "text": content.pop("text", f"您好，您有 {n} 积分。"),
            "html": content.pop("html", f"<p>您好，您有 <b>{n}</b> 积分。</p>"),
            **content,
        },
        headers={
            "List-Unsubscribe": f"<https://shop.example.com/u/{n}>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        },
        language="zh-hans",
    )


@pytest.fixture
def smtp(settings):
    def start(**handler_options):
        server = SMTPServer(Handler(**handler_options))
        server.__enter__()
        started.append(server)
        settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
        settings.EMAIL_HOST = "127.0.0.1"
        settings.EMAIL_PORT = server.port
        settings.EMAIL_TIMEOUT = 10
        settings.DEFAULT_FROM_EMAIL = "品牌 <marketing@brand.example>"
        return server

    started: list[SMTPServer] = []
    yield start
    for server in started:
        server.__exit__(None, None, None)


def provider(**options) -> DjangoMailProvider:
    return DjangoMailProvider(code="email", channel="email", options=options)


def test_a_batch_arrives_over_one_connection_with_headers_and_both_parts(smtp):
    server = smtp()
    results = provider().send_batch([outgoing(n) for n in range(1, 21)], now=NOW)

    assert [r.outcome for r in results] == [Outcome.SENT] * 20
    assert [r.message_id for r in results] == list(range(1, 21))
    assert server.handler.connections == 1
    assert len(server.received) == 20
    first = server.received[0].message
    assert server.received[0].rcpt_tos == ["member1@example.com"]
    assert first["Subject"] == "您的积分 #1"
    assert first["List-Unsubscribe"] == "<https://shop.example.com/u/1>"
    assert first["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert first["Message-ID"] == "<msg-1.email@brand.example>" == results[0].provider_message_id
    assert first.get_content_type() == "multipart/alternative"
    parts = {p.get_content_type(): p.get_content() for p in first.iter_parts()}
    assert "您有 1 积分" in parts["text/plain"]
    assert "<b>1</b>" in parts["text/html"]


def test_each_message_has_its_own_boundary_and_both_parts_survive_one_that_looks_like_it(smtp):
    server = smtp()
    # A body that writes what a boundary line looks like: the parts still come apart where they should.
    tricky = outgoing(2, text="第一行\n--=_\n--=_00000000000000000000000000000000--\n最后一行")
    results = provider().send_batch([outgoing(1), tricky], now=NOW)

    assert [r.outcome for r in results] == [Outcome.SENT] * 2
    first, second = (r.message for r in server.received)
    boundaries = [m.get_boundary() for m in (first, second)]
    assert all(b.startswith("=_") and len(b) == 34 for b in boundaries)
    assert boundaries[0] != boundaries[1]
    parts = {p.get_content_type(): p.get_content() for p in second.iter_parts()}
    text = parts["text/plain"].replace("\r\n", "\n").rstrip("\n")
    assert text == "第一行\n--=_\n--=_00000000000000000000000000000000--\n最后一行"
    assert "<b>2</b>" in parts["text/html"]


def test_html_only_gets_a_text_part_derived_from_it(smtp):
    server = smtp()
    [result] = provider().send_batch([outgoing(1, text="")], now=NOW)
    assert result.outcome == Outcome.SENT
    parts = {p.get_content_type(): p.get_content() for p in server.received[0].message.iter_parts()}
    assert "您好，您有 1 积分。" in parts["text/plain"] and "<b>" not in parts["text/plain"]


def test_a_server_that_hangs_up_every_7_messages_still_gets_each_message_once(smtp):
    server = smtp(drop_after=7)
    messages = [outgoing(n) for n in range(1, 31)]
    results = provider(RECONNECTS=10).send_batch(messages, now=NOW)

    assert [r.outcome for r in results] == [Outcome.SENT] * 30
    got = [r.rcpt_tos[0] for r in server.received]
    assert sorted(got) == sorted(m.address for m in messages) and len(set(got)) == 30
    assert server.handler.connections == 5  # 7 + 7 + 7 + 7 + 2


def test_reconnects_are_bounded_and_the_rest_are_left_for_later_untouched(smtp):
    server = smtp(drop_after=2)
    results = provider(RECONNECTS=1).send_batch([outgoing(n) for n in range(1, 8)], now=NOW)
    outcomes = [r.outcome for r in results]
    assert outcomes[:4] == [Outcome.SENT] * 4
    assert outcomes[4:] == [Outcome.RETRY] * 3
    assert len(server.received) == 4


def test_a_hang_up_after_the_content_went_out_is_unknown_not_resent(smtp):
    server = smtp(drop_in_data={"member3@example.com"})
    results = provider().send_batch([outgoing(n) for n in range(1, 6)], now=NOW)
    by_id = {r.message_id: r for r in results}
    assert by_id[3].outcome == Outcome.UNKNOWN and by_id[3].error_code == "no_answer"
    assert [by_id[n].outcome for n in (1, 2, 4, 5)] == [Outcome.SENT] * 4
    assert sorted(r.rcpt_tos[0] for r in server.received) == [f"member{n}@example.com" for n in (1, 2, 4, 5)]


def test_refusals_are_classified_per_message_and_the_batch_goes_on(smtp):
    server = smtp()
    batch = [
        outgoing(1),
        outgoing(2, "nobody@example.com"),
        outgoing(3, "busy@example.com"),
        outgoing(4, "spam@example.com"),
        outgoing(5),
    ]
    r = {x.message_id: x for x in provider().send_batch(batch, now=NOW)}
    assert r[1].outcome == r[5].outcome == Outcome.SENT
    assert (r[2].outcome, r[2].error_code, r[2].address_problem) == (Outcome.PERMANENT, "550", "invalid")
    assert (r[3].outcome, r[3].error_code) == (Outcome.RETRY, "450")
    assert (r[4].outcome, r[4].error_code, r[4].address_problem) == (Outcome.PERMANENT, "554", "")
    assert len(server.received) == 2 and server.handler.connections == 1


def test_no_server_means_retry_and_cool_down_for_the_whole_batch(settings):
    from tests.campaigns.smtp_server import free_port

    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", free_port()
    results = provider().send_batch([outgoing(1), outgoing(2)], now=NOW)
    assert [r.outcome for r in results] == [Outcome.RETRY, Outcome.RETRY]
    assert results[0].cool_down is True and results[0].error_code == "connect_failed"


def test_a_header_with_a_newline_is_refused_before_anything_goes_out(smtp):
    server = smtp()
    bad = OutgoingMessage(
        message_id=1,
        idempotency_key="k",
        channel="email",
        address="a@example.com",
        content={"subject": "hi", "text": "x"},
        headers={"X-Bad": "a\r\nBcc: evil@example.com"},
    )
    [result] = provider().send_batch([bad], now=NOW)
    assert result.outcome == Outcome.PERMANENT and result.error_code == "bad_message"
    assert server.received == []


def test_the_provider_can_hold_one_connection_across_batches(smtp):
    server = smtp()
    with provider() as p:
        for start in (1, 11, 21):
            assert all(
                r.outcome == Outcome.SENT
                for r in p.send_batch([outgoing(n) for n in range(start, start + 10)], now=NOW)
            )
    assert server.handler.connections == 1 and len(server.received) == 30


# --- anymail ----------------------------------------------------------------------------------------


class TestAnymail:
    @pytest.fixture(autouse=True)
    def anymail_backend(self, settings):
        settings.EMAIL_BACKEND = "tests.campaigns.anymail_backend.EmailBackend"
        settings.ANYMAIL = {}
        mail.outbox = []

    def test_the_esp_message_id_becomes_the_provider_message_id(self):
        results = provider().send_batch([outgoing(1), outgoing(2)], now=NOW)
        assert [r.outcome for r in results] == [Outcome.SENT, Outcome.SENT]
        assert [r.provider_message_id for r in results] == [
            "esp-member1@example.com",
            "esp-member2@example.com",
        ]
        sent = mail.outbox[0]
        assert sent.extra_headers["List-Unsubscribe"] == "<https://shop.example.com/u/1>"
        assert sent.metadata == {"message_id": "1"}
        assert sent.alternatives[0][1] == "text/html"

    def test_esp_answers_are_classified(self):
        batch = [
            outgoing(1, "rejected@example.com"),
            outgoing(2, "e429@example.com"),
            outgoing(3, "e400@example.com"),
            outgoing(4, "ok@example.com"),
        ]
        r = provider().send_batch(batch, now=NOW)
        assert (r[0].outcome, r[0].address_problem) == (Outcome.PERMANENT, "invalid")
        assert (r[1].outcome, r[1].error_code, r[1].retry_after, r[1].cool_down) == (
            Outcome.RETRY,
            "429",
            30.0,
            True,
        )
        # A 429 pauses the provider: the rest of the batch is not tried, so nothing is spent or duplicated.
        assert [x.outcome for x in r[2:]] == [Outcome.RETRY, Outcome.RETRY]
        assert r[2].error_code == r[3].error_code == "not_attempted"

    def test_a_client_error_is_permanent_and_the_batch_goes_on(self):
        r = provider().send_batch([outgoing(1, "e400@example.com"), outgoing(2, "ok@example.com")], now=NOW)
        assert (r[0].outcome, r[0].error_code, r[0].address_problem) == (Outcome.PERMANENT, "400", "")
        assert r[1].outcome == Outcome.SENT
