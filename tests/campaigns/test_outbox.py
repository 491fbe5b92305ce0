"""The outbox on its own (stand-in stages, the in-process sink): enqueue, claim, send, record, retry with
back-off, permanent failures, render errors, cancellation and the reaper, on PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from campaigns.models import Message, MessageStatus
from campaigns.providers.base import Outcome, SendResult
from campaigns.services import outbox
from campaigns.services.dispatch import dispatch_run
from crm.models import Event
from tests.campaigns.outbox_helpers import requests_for
from tests.factories import CustomerFactory

pytestmark = pytest.mark.django_db


def test_enqueue_is_idempotent_on_the_key_and_reports_existing_and_conflicting_rows(template):
    customers = CustomerFactory.create_batch(3)
    now = timezone.now()
    first = outbox.messages_enqueue(rows=requests_for(customers, template, payload_fingerprint="a"), now=now)
    assert first.created == 3 and first.existing_ids == []

    again = requests_for(customers[:2], template, payload_fingerprint="a") + requests_for(
        customers[2:], template, payload_fingerprint="b"
    )
    second = outbox.messages_enqueue(rows=again, now=now)
    assert second.created_ids == []
    assert sorted(second.existing_ids) == sorted(first.created_ids)
    assert second.conflicting_ids == [Message.objects.get(customer=customers[2]).pk]
    assert Message.objects.count() == 3
    row = Message.objects.get(pk=first.created_ids[0])
    assert row.status == MessageStatus.QUEUED and row.attempts == 0 and row.history[0]["status"] == "queued"


def test_enqueue_with_a_duplicate_inside_one_call_writes_it_once(template):
    customer = CustomerFactory()
    result = outbox.messages_enqueue(rows=requests_for([customer, customer], template), now=timezone.now())
    assert result.created == 1 and Message.objects.count() == 1


def test_the_send_api_key_is_unique_whatever_customer_the_replay_names(template):
    a, b = CustomerFactory.create_batch(2)
    now = timezone.now()
    outbox.messages_enqueue(
        rows=requests_for([a], template, source_kind="api", ref="key-1", occurrence="K"), now=now
    )
    replay = outbox.messages_enqueue(
        rows=requests_for([b], template, source_kind="api", ref="key-1", occurrence="K"), now=now
    )
    assert replay.created_ids == [] and len(replay.existing_ids) == 1
    assert Message.objects.count() == 1


def test_enqueue_refuses_a_bad_request_naming_it_and_writes_nothing(template):
    customer = CustomerFactory()
    rows = requests_for([customer], template) + requests_for([customer], template, channel="fax", ref="c2")
    with pytest.raises(outbox.EnqueueRefused, match="message 1: channel 'fax'"):
        outbox.messages_enqueue(rows=rows, now=timezone.now())
    assert Message.objects.count() == 0


def test_dispatch_sends_every_due_message_once_records_it_and_writes_the_events(pipeline, template):
    customers = CustomerFactory.create_batch(7)
    now = timezone.now()
    outbox.messages_enqueue(rows=requests_for(customers, template, data={"name": "王芳"}), now=now)
    later = outbox.messages_enqueue(
        rows=requests_for(customers[:2], template, ref="later", due_at=now + timedelta(hours=1)), now=now
    )

    stats = dispatch_run(worker="t", now_fn=lambda: now, batch_size=3)

    assert stats.sent == 7 and stats.batches == 3
    assert pipeline.deliveries == 7
    assert sorted(int(k) for k in pipeline.delivered) == sorted(
        Message.objects.filter(source_ref="c1").values_list("id", flat=True)
    )
    sent = Message.objects.filter(source_ref="c1")
    assert all(m.status == MessageStatus.SENT and m.sent_at == now and m.handed_at == now for m in sent)
    assert all(m.provider == "sms-sink" and m.provider_message_id == f"sink-{m.pk}" for m in sent)
    assert all([h["status"] for h in m.history] == ["queued", "sent"] for m in sent)
    assert set(Message.objects.filter(pk__in=later.created_ids).values_list("status", flat=True)) == {
        "queued"
    }
    events = Event.objects.filter(type="message_sent")
    assert events.count() == 7
    assert {e.properties["message_id"] for e in events} == set(sent.values_list("id", flat=True))


def test_claim_takes_the_highest_priority_first_then_the_longest_due(pipeline, template):
    customers = CustomerFactory.create_batch(3)
    now = timezone.now()
    outbox.messages_enqueue(
        rows=requests_for(customers[:1], template, ref="old", due_at=now - timedelta(hours=2)), now=now
    )
    outbox.messages_enqueue(
        rows=requests_for(customers[1:2], template, ref="new", due_at=now - timedelta(hours=1)), now=now
    )
    outbox.messages_enqueue(
        rows=requests_for(customers[2:], template, ref="vip", priority=10, due_at=now), now=now
    )
    claim = outbox.messages_claim(now=now, batch_size=2)
    assert [m.source_ref for m in claim.messages] == ["vip", "old"]
    assert all(
        m.status == "sending" and m.attempts == 1 and m.claim_token == claim.token for m in claim.messages
    )


def test_the_claim_uses_the_claim_index_on_postgresql(template):
    with connection.cursor() as cursor:
        # An empty table: tell the planner to avoid what it would avoid on a big one.
        cursor.execute(
            "SET LOCAL enable_seqscan = off; SET LOCAL enable_sort = off; SET LOCAL enable_bitmapscan = off"
        )
        cursor.execute(
            "EXPLAIN SELECT id FROM campaigns_message WHERE status IN ('queued', 'deferred') AND due_at <= now() "
            "ORDER BY priority DESC, due_at LIMIT 500 FOR UPDATE SKIP LOCKED"
        )
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "campaigns_message_claim" in plan and "Sort" not in plan, plan


class ScriptedProvider:
    """A provider whose answers the test writes: {message position in batch: SendResult factory}."""

    def __init__(self, answers, *, supports_idempotency=False, raises=None):
        self.code = "scripted"
        self.channel = "sms"
        self.supports_idempotency = supports_idempotency
        self.answers = answers
        self.raises = raises
        self.batches = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def send_batch(self, messages, *, now):
        self.batches.append([m.message_id for m in messages])
        if self.raises:
            raise self.raises
        return [self.answers(m) for m in messages]


def test_retry_backs_off_exponentially_with_jitter_then_gives_up(pipeline, template, monkeypatch, settings):
    settings.MESSAGING_RETRY_BASE_SECONDS = 10
    settings.MESSAGING_MAX_ATTEMPTS = 4
    provider = ScriptedProvider(lambda m: SendResult(m.message_id, Outcome.RETRY, error_code="503"))
    monkeypatch.setattr(outbox.stages, "provider_for", lambda channel: provider)
    customer = CustomerFactory()
    now = timezone.now()
    (pk,) = outbox.messages_enqueue(rows=requests_for([customer], template), now=now).created_ids
    delays = []
    for attempt in range(1, 5):
        stats = dispatch_run(worker="t", now_fn=lambda at=now: at, limit_seconds=30)
        assert stats.claimed == 1
        m = Message.objects.get(pk=pk)
        assert m.attempts == attempt
        if attempt < 4:
            assert m.status == "queued" and m.reason == "provider_retry" and m.handed_at is None
            assert m.claim_token is None and m.error_code == "503"
            delays.append((m.due_at - now).total_seconds())
            now = m.due_at
    assert m.status == "failed" and m.reason == "retries_exhausted" and m.reason_params["attempts"] == 4
    # base * 2^(n-1), jittered into its upper half
    for n, delay in enumerate(delays, start=1):
        assert 10 * 2 ** (n - 1) * 0.5 <= delay <= 10 * 2 ** (n - 1), delays
    assert Event.objects.filter(type="message_failed").count() == 1


def test_permanent_failure_is_final_and_a_raising_provider_leaves_unknown_without_idempotency(
    pipeline, template, monkeypatch
):
    customers = CustomerFactory.create_batch(2)
    now = timezone.now()
    outbox.messages_enqueue(rows=requests_for(customers, template), now=now)
    answers = {
        0: lambda m: SendResult(
            m.message_id, Outcome.PERMANENT, error_code="43004", address_problem="unsubscribed"
        ),
        1: lambda m: SendResult(m.message_id, Outcome.SENT, provider_message_id="p-1"),
    }
    order = {}
    provider = ScriptedProvider(lambda m: answers[order.setdefault(m.message_id, len(order))](m))
    monkeypatch.setattr(outbox.stages, "provider_for", lambda channel: provider)
    problems = []
    monkeypatch.setattr(
        outbox.stages,
        "address_problems_record",
        lambda *, problems, now, seen=problems: seen.extend(problems),
    )
    dispatch_run(worker="t", now_fn=lambda: now)
    statuses = dict(Message.objects.values_list("status", "reason"))
    assert statuses == {"failed": "provider_rejected", "sent": ""}
    failed = Message.objects.get(status="failed")
    assert failed.error_code == "43004" and failed.finished_at == now and failed.sent_at is None
    assert [(m.pk, r.address_problem) for m, r in problems] == [(failed.pk, "unsubscribed")]

    raising = ScriptedProvider(None, raises=ConnectionError("reset by peer"))
    monkeypatch.setattr(outbox.stages, "provider_for", lambda channel: raising)
    outbox.messages_enqueue(rows=requests_for(customers[:1], template, ref="c2"), now=now)
    dispatch_run(worker="t", now_fn=lambda: now)
    m = Message.objects.get(source_ref="c2")
    assert m.status == "unknown" and m.reason == "no_answer" and "reset by peer" in m.error_detail


def test_a_raising_provider_with_idempotency_is_retried(pipeline, template, monkeypatch):
    raising = ScriptedProvider(None, raises=TimeoutError("read timeout"), supports_idempotency=True)
    monkeypatch.setattr(outbox.stages, "provider_for", lambda channel: raising)
    now = timezone.now()
    outbox.messages_enqueue(rows=requests_for([CustomerFactory()], template), now=now)
    dispatch_run(worker="t", now_fn=lambda: now)
    m = Message.objects.get()
    assert m.status == "queued" and m.reason == "provider_retry" and m.due_at > now


def test_a_render_error_fails_the_message_with_its_reason_and_sends_nothing(pipeline, template):
    now = timezone.now()
    outbox.messages_enqueue(
        rows=requests_for([CustomerFactory()], template, data={"render_fails": True}), now=now
    )
    dispatch_run(worker="t", now_fn=lambda: now)
    m = Message.objects.get()
    assert m.status == "failed" and m.reason == "render_failed" and "undefined" in m.reason_params["error"]
    assert pipeline.deliveries == 0 and m.handed_at is None


def test_screen_decisions_defer_and_suppress_with_their_reasons(pipeline, template, monkeypatch):
    from tests.campaigns.pipeline_doubles import Decision

    customers = CustomerFactory.create_batch(3)
    now = timezone.now()
    ids = outbox.messages_enqueue(rows=requests_for(customers, template), now=now).created_ids
    until = now + timedelta(hours=9)
    decisions = {
        ids[0]: Decision(ids[0], "send", address="+8613800000000"),
        ids[1]: Decision(ids[1], "defer", until=until, reason="quiet_hours", params={"until": "08:00"}),
        ids[2]: Decision(ids[2], "suppress", reason="no_consent", params={"channel": "sms"}),
    }
    monkeypatch.setattr(outbox.stages, "screen", lambda *, messages, now: [decisions[m.pk] for m in messages])
    stats = dispatch_run(worker="t", now_fn=lambda: now)
    assert (stats.sent, stats.deferred, stats.suppressed) == (1, 1, 1)
    sent, deferred, suppressed = (Message.objects.get(pk=pk) for pk in ids)
    assert sent.address == "+8613800000000" and pipeline.delivered[str(ids[0])].address == "+8613800000000"
    assert deferred.status == "deferred" and deferred.due_at == until and deferred.reason == "quiet_hours"
    assert deferred.claim_token is None
    assert (
        suppressed.status == "suppressed"
        and suppressed.reason == "no_consent"
        and suppressed.finished_at == now
    )


def test_a_screen_that_raises_puts_the_batch_back_with_back_off_and_the_error(
    pipeline, template, monkeypatch
):
    now = timezone.now()
    outbox.messages_enqueue(rows=requests_for(CustomerFactory.create_batch(2), template), now=now)

    def broken(*, messages, now):
        raise RuntimeError("rules exploded")

    monkeypatch.setattr(outbox.stages, "screen", broken)
    stats = dispatch_run(worker="t", now_fn=lambda: now)
    assert stats.claimed == 2 and stats.sent == 0
    assert set(Message.objects.values_list("status", "reason")) == {("queued", "screen_error")}
    assert not Message.objects.filter(claim_token__isnull=False).exists()
    assert all(m.due_at > now and "rules exploded" in m.error_detail for m in Message.objects.all())


def test_expired_messages_are_suppressed_not_sent(pipeline, template):
    now = timezone.now()
    outbox.messages_enqueue(
        rows=requests_for(
            [CustomerFactory()],
            template,
            due_at=now - timedelta(hours=2),
            expires_at=now - timedelta(hours=1),
        ),
        now=now,
    )
    dispatch_run(worker="t", now_fn=lambda: now)
    m = Message.objects.get()
    assert m.status == "suppressed" and m.reason == "expired" and pipeline.deliveries == 0


def test_message_send_now_sends_one_through_the_pipeline_and_a_replay_sends_nothing(pipeline, template):
    customer = CustomerFactory()
    now = timezone.now()
    (request,) = requests_for([customer], template, source_kind="staff", ref="admin-1", occurrence="t1")
    message, created = outbox.message_send_now(request=request, now=now)
    assert created and message.status == "sent" and pipeline.deliveries == 1
    again, created_again = outbox.message_send_now(request=request, now=now)
    assert not created_again and again.pk == message.pk and pipeline.deliveries == 1


def test_cancel_withdraws_queued_and_deferred_marketing_only(pipeline, template):
    a, b = CustomerFactory.create_batch(2)
    now = timezone.now()
    outbox.messages_enqueue(rows=requests_for([a, b], template), now=now)
    outbox.messages_enqueue(rows=requests_for([a], template, ref="tx", purpose="transactional"), now=now)
    outbox.messages_enqueue(rows=requests_for([a], template, ref="mail", channel="email"), now=now)
    Message.objects.filter(customer=a, source_ref="c1").update(status="deferred")
    count = outbox.messages_cancel(
        customer_ids=[a.pk], channel="sms", reason="unsubscribed", params={"channel": "sms"}, now=now
    )
    assert count == 1
    cancelled = Message.objects.get(status="cancelled")
    assert cancelled.customer_id == a.pk and cancelled.reason == "unsubscribed"
    assert cancelled.history[-1]["status"] == "cancelled"
    assert Message.objects.filter(status="queued").count() == 3


def _lapse(ids):
    Message.objects.filter(pk__in=ids).update(claimed_until=timezone.now() - timedelta(seconds=1))


def test_reaper_requeues_unhanded_and_deduped_rows_and_marks_the_rest_unknown(pipeline, template, settings):
    customers = CustomerFactory.create_batch(3)
    now = timezone.now()
    outbox.messages_enqueue(rows=requests_for(customers, template), now=now)
    claim = outbox.messages_claim(now=now)
    unhanded, handed_sms, handed_push = claim.messages
    Message.objects.filter(pk=handed_sms.pk).update(handed_at=now, provider="sms-sink")
    Message.objects.filter(pk=handed_push.pk).update(handed_at=now, provider="push-sink", channel="push")
    settings.MESSAGING_PROVIDERS = {
        **settings.MESSAGING_PROVIDERS,
        "push": {
            "BACKEND": "campaigns.providers.sink.SinkProvider",
            "OPTIONS": {"supports_idempotency": False},
        },
    }
    assert outbox.messages_reap(now=now).requeued == 0  # the claims have not lapsed
    _lapse([m.pk for m in claim.messages])
    result = outbox.messages_reap(now=now)
    assert (result.requeued, result.unknown) == (2, 1)
    rows = {m.pk: m for m in Message.objects.all()}
    assert rows[unhanded.pk].status == "queued" and rows[unhanded.pk].claim_token is None
    assert rows[handed_sms.pk].status == "queued" and rows[handed_sms.pk].handed_at is None
    assert rows[handed_push.pk].status == "unknown" and rows[handed_push.pk].reason == "no_answer"

    # The first worker wakes up late: it can record nothing for the requeued rows, and its answer for the
    # unknown one (same claim token) resolves it.
    stats = outbox.BatchStats()
    outbox._record(
        [
            outbox._from_result(rows[pk], SendResult(pk, Outcome.SENT, provider_message_id="late"), now)
            for pk in rows
        ],
        claim,
        now,
        stats,
    )
    assert stats.sent == 1 and stats.lost == 2
    assert Message.objects.get(pk=handed_push.pk).status == "sent"
    assert Message.objects.filter(status="queued").count() == 2


def test_beat_wakes_the_dispatcher_every_few_seconds_and_runs_the_reaper(settings):
    from config.celery import app

    dispatch = settings.CELERY_BEAT_SCHEDULE["campaigns-dispatch"]
    reap = settings.CELERY_BEAT_SCHEDULE["campaigns-outbox-reap"]
    assert dispatch["schedule"] <= 5 and dispatch["options"]["expires"] == dispatch["schedule"]
    assert reap["schedule"] <= 60
    app.loader.import_default_modules()
    assert {dispatch["task"], reap["task"]} <= set(app.tasks)


def _not_deduping(settings, channel="sms"):
    settings.MESSAGING_PROVIDERS = {
        **settings.MESSAGING_PROVIDERS,
        channel: {
            "BACKEND": "campaigns.providers.sink.SinkProvider",
            "OPTIONS": {"supports_idempotency": False},
            "RATE": 0,
        },
    }


def _hand_calls(monkeypatch):
    calls = []
    real = outbox._hand

    def counting(items, code, claim, now):
        calls.append(len(items))
        return real(items, code, claim, now)

    monkeypatch.setattr(outbox, "_hand", counting)
    return calls


def test_a_deduping_provider_is_sent_to_without_a_hand_update_and_the_record_writes_its_columns(
    pipeline, template, monkeypatch
):
    customers = CustomerFactory.create_batch(3)
    now = timezone.now()
    outbox.messages_enqueue(rows=requests_for(customers, template, data={"name": "王芳"}), now=now)
    hands = _hand_calls(monkeypatch)

    stats = dispatch_run(worker="t", now_fn=lambda: now)

    assert stats.sent == 3 and hands == []  # claim -> send -> record: two writes a message
    for m in Message.objects.all():
        customer = next(c for c in customers if c.pk == m.customer_id)
        assert (m.status, m.handed_at, m.provider) == ("sent", now, "sms-sink")
        assert (m.address, m.subject, m.language) == (customer.phone or f"c{customer.pk}", "Hi", "zh-hans")
        assert m.claimed_until is None and [h["status"] for h in m.history] == ["queued", "sent"]
    assert pipeline.deliveries == 3 and Event.objects.filter(type="message_sent").count() == 3


def test_a_provider_that_ignores_repeats_is_still_handed_first(pipeline, template, monkeypatch, settings):
    _not_deduping(settings)
    now = timezone.now()
    outbox.messages_enqueue(rows=requests_for(CustomerFactory.create_batch(2), template), now=now)
    hands = _hand_calls(monkeypatch)

    assert dispatch_run(worker="t", now_fn=lambda: now).sent == 2
    assert hands == [2]
    assert all(m.handed_at == now and m.provider == "sms-sink" for m in Message.objects.all())


def test_a_batch_taken_over_before_sending_reaches_a_deduping_provider_once_and_is_recorded_once(
    pipeline, template
):
    # Given worker A's claim lapsed after its screen and render, and worker B took the batch over,
    customers = CustomerFactory.create_batch(4)
    now = timezone.now()
    outbox.messages_enqueue(rows=requests_for(customers, template), now=now)
    first = outbox.messages_claim(now=now)
    _lapse([m.pk for m in first.messages])
    reaped = outbox.messages_reap(now=now)
    assert reaped.requeued == 4
    assert {m.history[-1]["reason"] for m in Message.objects.all()} == {"claim_lapsed_maybe_sent"}
    second = outbox.messages_claim(now=now)
    assert {m.pk for m in second.messages} == {m.pk for m in first.messages}

    # when both workers send it (A, with no hand UPDATE, does not learn of B's claim before sending),
    late = outbox.batch_process(claim=first, now=now)
    on_time = outbox.batch_process(claim=second, now=now)

    # then the provider's dedupe keeps one delivery a message, only B records, one event a message.
    assert (late.sent, late.lost) == (0, 4)
    assert (on_time.sent, on_time.lost) == (4, 0)
    assert pipeline.deliveries == 4 and len(pipeline.delivered) == 4
    assert Event.objects.filter(type="message_sent").count() == 4
    for m in Message.objects.all():
        assert m.status == "sent" and [h["status"] for h in m.history] == ["queued", "queued", "sent"]


def test_a_batch_taken_over_before_sending_is_not_sent_by_a_provider_that_ignores_repeats(
    pipeline, template, settings
):
    _not_deduping(settings)
    now = timezone.now()
    outbox.messages_enqueue(rows=requests_for(CustomerFactory.create_batch(3), template), now=now)
    first = outbox.messages_claim(now=now)
    _lapse([m.pk for m in first.messages])
    assert outbox.messages_reap(now=now).requeued == 3
    assert {m.history[-1]["reason"] for m in Message.objects.all()} == {"claim_lapsed"}
    second = outbox.messages_claim(now=now)

    late = outbox.batch_process(claim=first, now=now)
    on_time = outbox.batch_process(claim=second, now=now)

    assert (late.sent, late.lost) == (0, 3) and on_time.sent == 3
    assert pipeline.deliveries == 3  # the hand UPDATE stopped A: nothing was sent twice


def test_a_retried_message_of_a_deduping_provider_keeps_what_it_was_sent_with(
    pipeline, template, monkeypatch
):
    raising = ScriptedProvider(None, raises=TimeoutError("read timeout"), supports_idempotency=True)
    monkeypatch.setattr(outbox.stages, "provider_for", lambda channel: raising)
    customer = CustomerFactory()
    now = timezone.now()
    outbox.messages_enqueue(rows=requests_for([customer], template), now=now)

    dispatch_run(worker="t", now_fn=lambda: now)

    # It may have gone out (no answer): its address and subject stay recorded, the hand-over is cleared
    # with the claim so that it is sent again with the same key.
    m = Message.objects.get()
    assert (m.status, m.reason, m.handed_at, m.claim_token) == ("queued", "provider_retry", None, None)
    assert (m.address, m.subject, m.provider) == (customer.phone or f"c{customer.pk}", "Hi", raising.code)
