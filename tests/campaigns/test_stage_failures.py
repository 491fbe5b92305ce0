"""Messages that fail before the provider (the screen or the renderer raises, a staff template cannot
render for one customer) end as dead letters with their reason instead of looping, and a dead-letter
retry after the template is fixed sends them; waiting one's turn (rate limit, rules) is not an attempt."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from campaigns.models import Message
from campaigns.reasons import reason_text
from campaigns.selectors import dead_letters
from campaigns.services import outbox, stages
from campaigns.services.dead_letters import dead_letters_retry
from campaigns.services.dispatch import dispatch_run
from campaigns.services.templates import template_save
from tests.campaigns.helpers import template_make
from tests.campaigns.outbox_helpers import requests_for
from tests.factories import CustomerFactory

pytestmark = pytest.mark.django_db

REAL_RENDER = stages.render  # before the pipeline fixture puts its stand-in in place


def _poison(stage_name: str, monkeypatch, poison_customer_id: int):
    """Make the stage raise for any batch holding the poison customer's message."""
    stand_in = getattr(stages, stage_name)

    def stage(*, messages, now):
        if any(m.customer_id == poison_customer_id for m in messages):
            raise RuntimeError(f"{stage_name} exploded")
        return stand_in(messages=messages, now=now)

    monkeypatch.setattr(stages, stage_name, stage)


@pytest.mark.parametrize("stage_name", ["screen", "render"])
def test_a_message_that_makes_a_stage_raise_fails_after_the_attempts_limit_and_the_others_go(
    pipeline, template, monkeypatch, settings, stage_name
):
    settings.MESSAGING_MAX_ATTEMPTS = 3
    customers = CustomerFactory.create_batch(5)
    poison = customers[2]
    _poison(stage_name, monkeypatch, poison.pk)
    now = timezone.now()
    outbox.messages_enqueue(rows=requests_for(customers, template), now=now)

    stats = dispatch_run(worker="t", now_fn=lambda: now)
    # The batch was halved around the poison message: the other four went at once.
    assert stats.sent == 4 and pipeline.deliveries == 4
    bad = Message.objects.get(customer=poison)
    assert bad.status == "queued" and bad.reason == f"{stage_name}_error" and bad.due_at > now
    assert f"{stage_name} exploded" in bad.error_detail and bad.attempts == 1

    for attempt in (2, 3):
        now = Message.objects.get(pk=bad.pk).due_at
        dispatch_run(worker="t", now_fn=lambda at=now: at)
        bad.refresh_from_db()
        assert bad.attempts == attempt
    assert bad.status == "failed" and bad.reason == f"{stage_name}_failed"
    assert bad.reason_params == {"error": f"RuntimeError: {stage_name} exploded", "attempts": 3}
    assert list(dead_letters()) == [bad]
    assert "exploded" in reason_text(bad.reason, bad.reason_params)
    # Nothing is due any more: the dispatcher does not come back to it.
    later = now + timedelta(days=1)
    assert dispatch_run(worker="t", now_fn=lambda: later).claimed == 0
    assert pipeline.deliveries == 4


def test_a_staff_template_that_cannot_render_for_one_customer_is_a_dead_letter_and_its_retry_sends(
    pipeline, monkeypatch
):
    monkeypatch.setattr(stages, "render", REAL_RENDER)
    template = template_make(
        code="per_order", channel="sms", content={"zh-hans": {"text": "每件 {{ 100 // data.items }} 元"}}
    )
    good, bad = CustomerFactory.create_batch(2)
    now = timezone.now()
    outbox.messages_enqueue(rows=requests_for([good], template, data={"items": 4}), now=now)
    outbox.messages_enqueue(rows=requests_for([bad], template, data={"items": 0}), now=now)

    stats = dispatch_run(worker="t", now_fn=lambda: now)
    assert (stats.sent, stats.failed) == (1, 1) and pipeline.deliveries == 1
    letter = Message.objects.get(customer=bad)
    # Failed for good at once: rendering it again would fail the same way.
    assert letter.status == "failed" and letter.reason == "render_failed" and letter.attempts == 1
    assert letter.handed_at is None and letter.provider == ""
    assert "ZeroDivisionError" in letter.error_detail and "ZeroDivisionError" in letter.reason_params["error"]
    assert letter.error_code == "render_error"
    assert list(dead_letters()) == [letter]

    # Staff fix the template, then retry the dead letter: the retry renders from the fixed version.
    template_save(
        template=template,
        content={"zh-hans": {"text": "每件 {{ 100 // (data.items or 1) }} 元"}},
        now=now,
    )
    staff = get_user_model().objects.create_user("ops", password="x")
    result = dead_letters_retry(message_ids=[letter.pk], user=staff, now=now)
    dispatch_run(worker="t", now_fn=lambda: now)
    retry = Message.objects.get(pk=result.queued[0])
    assert retry.status == "sent" and pipeline.deliveries == 2
    assert pipeline.delivered[str(retry.pk)].content["text"] == "每件 100 元"


def test_waiting_for_the_rate_limit_is_not_an_attempt(pipeline, template, monkeypatch, settings):
    settings.MESSAGING_MAX_ATTEMPTS = 2
    monkeypatch.setattr(stages, "rate_limit_take", lambda code, n, now: 0)
    now = timezone.now()
    (pk,) = outbox.messages_enqueue(rows=requests_for([CustomerFactory()], template), now=now).created_ids
    for _ in range(4):
        now = Message.objects.get(pk=pk).due_at
        dispatch_run(worker="t", now_fn=lambda at=now: at)
    m = Message.objects.get(pk=pk)
    assert m.status == "queued" and m.reason == "rate_limited" and m.attempts == 0


def test_a_database_that_went_away_during_the_screen_puts_the_batch_back_and_raises(
    pipeline, template, monkeypatch
):
    from django.db import OperationalError

    now = timezone.now()
    outbox.messages_enqueue(rows=requests_for(CustomerFactory.create_batch(4), template), now=now)
    calls = []

    def unreachable(*, messages, now):
        calls.append(len(messages))
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(stages, "screen", unreachable)
    with pytest.raises(OperationalError):
        dispatch_run(worker="t", now_fn=lambda: now)
    assert calls == [4]  # not halved: no message is to blame
    assert set(Message.objects.values_list("status", flat=True)) == {"queued"}
    assert not Message.objects.filter(claim_token__isnull=False).exists()
