"""Frequency caps hold when two workers screen messages of the same customer at the same time, on
PostgreSQL with two real threads (two connections)."""

from __future__ import annotations

import threading

import pytest
from django.db import connection

from campaigns.models import Message
from campaigns.services import outbox, rules, stages
from campaigns.services.rules import messages_screen
from tests.campaigns import pipeline_doubles
from tests.campaigns.outbox_helpers import requests_for
from tests.campaigns.rules.helpers import customer, quiet_hours, utc

pytestmark = pytest.mark.django_db(transaction=True)


def _run_in_threads(*calls):
    errors: list[BaseException] = []

    def run(call):
        try:
            call()
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(call,)) for call in calls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads), "a worker hung"
    assert not errors, errors


@pytest.mark.parametrize("locks", ["per customer", "one for the whole screen"])
def test_a_cap_of_two_a_day_holds_when_two_workers_screen_the_same_customer_at_once(
    monkeypatch, settings, caps, template, locks
):
    if locks == "one for the whole screen":  # what a batch of more customers than the limit takes
        monkeypatch.setattr(rules, "_CUSTOMER_LOCKS_MAX", 0)
    settings.MESSAGING_PROVIDERS = {
        channel: {"BACKEND": "campaigns.providers.sink.SinkProvider", "OPTIONS": {}, "RATE": 0}
        for channel in ("email", "sms", "wechat", "push")
    }
    pipeline_doubles.install(monkeypatch)  # sink provider, plain render; the screen is the real one below
    caps(("sms", "day", 2))
    quiet_hours(None, None)
    now = utc(2026, 12, 7, 4, 0)  # noon in Shanghai
    person = customer()
    for n in range(5):
        outbox.messages_enqueue(rows=requests_for([person], template, ref=f"campaign-{n}"), now=now)
    ids = sorted(Message.objects.values_list("id", flat=True))
    first = outbox.messages_claim(now=now, ids=ids[:3], batch_size=3)
    second = outbox.messages_claim(now=now, ids=ids[3:], batch_size=2)
    assert (len(first.messages), len(second.messages)) == (3, 2)

    # Both workers are inside the screen before either counts, and neither records a send before the
    # other has screened: without a lock both count nothing sent and let two through each.
    entered, screened = threading.Barrier(2, timeout=20), threading.Barrier(2, timeout=20)

    def racing_screen(*, messages, now):
        entered.wait()
        decisions = messages_screen(messages=messages, now=now)
        screened.wait()
        return decisions

    monkeypatch.setattr(stages, "screen", racing_screen)
    _run_in_threads(
        lambda: outbox.batch_process(claim=first, now=now),
        lambda: outbox.batch_process(claim=second, now=now),
    )

    statuses = dict(Message.objects.values_list("id", "status"))
    assert sorted(statuses.values()) == ["deferred"] * 3 + ["sent"] * 2
    deferred = Message.objects.filter(status="deferred")
    assert {m.reason for m in deferred} == {"capped_deferred"}
    assert all(m.due_at == utc(2026, 12, 7, 16, 0) for m in deferred)  # Shanghai's next midnight
    assert not Message.objects.filter(screened_at__isnull=False, status="sending").exists()


def test_a_message_taken_back_and_claimed_again_is_screened_again_not_counted_twice(caps, template):
    caps(("sms", "day", 1))
    quiet_hours(None, None)
    now = utc(2026, 12, 7, 4, 0)
    person = customer()
    outbox.messages_enqueue(rows=requests_for([person], template), now=now)
    claim = outbox.messages_claim(now=now, batch_size=10)
    (decision,) = messages_screen(messages=claim.messages, now=now)
    assert decision.action == "send"
    assert Message.objects.get().screened_at == now
    # The worker died; the reaper put the message back and another worker claims it.
    Message.objects.update(status="queued", claim_token=None, claimed_until=None)
    again = outbox.messages_claim(now=now, batch_size=10)
    assert again.messages[0].screened_at is None
    (decision,) = messages_screen(messages=again.messages, now=now)
    assert decision.action == "send"
