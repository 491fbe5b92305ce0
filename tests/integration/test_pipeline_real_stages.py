"""The delivery pipeline end to end with every real stage, in a real Celery worker woken by the beat
entry's task: the rules screen (consent, the suppression list, frequency caps with priority, quiet hours
in the customer's own time zone), the Jinja2 sandbox rendering the demo templates (campaigns/
demo_templates.py) with a coupon issued per message, link tracking and the unsubscribe headers, and the
file provider (the only thing configured for the test: where the messages are written).

The worker runs on the real clock, so quiet hours are made true by the customers' time zones, chosen
from the test's own `now`: a zone where it is about 13:00 (hours from any quiet-hours or day boundary)
and one where it is about 02:00."""

from __future__ import annotations

import json
import time
from collections import Counter
from datetime import datetime, timedelta
from datetime import time as clock

import pytest
from django.conf import settings as django_settings
from django.utils import timezone

from campaigns.demo_templates import demo_templates_seed
from campaigns.models import FrequencyCap, Message, MessageCoupon, MessageTemplate, Suppression
from campaigns.services.outbox import MessageRequest, messages_enqueue
from campaigns.services.rules import local_to_utc
from crm.models import Event
from tests.campaigns.rules.helpers import customer, quiet_hours, sent
from tests.integration.conftest import zone_at_local_hour

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

TASK = django_settings.CELERY_BEAT_SCHEDULE["campaigns-dispatch"]["task"]


@pytest.fixture
def outbox_file(tmp_path, monkeypatch):
    path = tmp_path / "messages.jsonl"
    providers = {
        channel: {"BACKEND": "campaigns.providers.file.FileProvider", "OPTIONS": {"PATH": str(path)}}
        for channel in ("sms", "email", "wechat", "push")
    }
    monkeypatch.setenv("MESSAGING_TEST_PROVIDERS", json.dumps(providers))
    return path


def _request(person, template, *, ref, priority=0, on_cap="defer", label="", data=None):
    return MessageRequest(
        customer_id=person.pk,
        channel=template.channel,
        template_id=template.pk,
        purpose=template.purpose,
        source_kind="campaign",
        source_ref=ref,
        occurrence="1",
        source_label=label or template.name,
        priority=priority,
        on_cap=on_cap,
        data=data or {},
    )


def _drain(worker) -> None:
    """Wake the dispatcher until no message is due or being sent."""
    deadline = time.monotonic() + 240
    while Message.objects.filter(status__in=["queued", "sending"], due_at__lte=timezone.now()).exists():
        assert time.monotonic() < deadline, worker.output()[-3000:]
        result = worker.app.send_task(TASK)
        worker.wait_for_log(rf"Task {TASK}\[{result.id}\] succeeded", timeout=120)


def _wake_once(worker) -> None:
    result = worker.app.send_task(TASK)
    worker.wait_for_log(rf"Task {TASK}\[{result.id}\] succeeded", timeout=120)


@pytest.mark.celery_worker_include("tests.integration.providers_from_env")
def test_every_message_ends_sent_or_held_with_its_reason_through_the_real_stages_once(
    outbox_file, celery_worker_process
):
    now = timezone.now()
    day, night = zone_at_local_hour(now, 13), zone_at_local_hour(now, 2)
    demo_templates_seed()
    birthday_sms = MessageTemplate.objects.get(code="birthday_wish.sms")
    shipped_sms = MessageTemplate.objects.get(code="order_shipped.sms")
    winback_email = MessageTemplate.objects.get(code="winback_miss_you.email")
    FrequencyCap.objects.all().delete()
    FrequencyCap.objects.create(channel="sms", period="day", limit=2)
    quiet_hours(clock(21, 0), clock(8, 0))
    earlier = now - timedelta(minutes=10)  # the same local day in the day zone (about 13:00 there)

    def people(n, **kwargs):
        return [
            customer(tz=str(kwargs.pop("tz", day)), language=("zh-hans", "en")[i % 2], **kwargs)
            for i in range(n)
        ]

    sendable = people(100, consents=("sms", "email"))
    no_consent = people(40, consents=("email",))
    capped = people(60, consents=("sms",))
    for person in capped:
        sent(birthday_sms, person, earlier)
        sent(birthday_sms, person, earlier)
    asleep = [customer(tz=str(night), consents=("sms",)) for _ in range(40)]
    colliding = people(10, consents=("sms",))
    for person in colliding:
        sent(birthday_sms, person, earlier)
    suppressed = people(10, consents=("sms",))
    Suppression.objects.bulk_create(
        [Suppression(channel="sms", address=p.phone, reason="complained") for p in suppressed]
    )

    requests = [
        _request(p, birthday_sms, ref="birthday") for p in sendable + no_consent + asleep + suppressed
    ]
    requests += [_request(p, winback_email, ref="winback") for p in sendable[:50]]
    requests += [_request(p, birthday_sms, ref="birthday") for p in capped[:40]]
    requests += [_request(p, birthday_sms, ref="birthday", on_cap="drop") for p in capped[40:]]
    requests += [
        _request(p, shipped_sms, ref="shipped", data={"order_id": f"SO-{p.pk}", "tracking_no": "SF100"})
        for p in asleep
    ]
    requests += [_request(p, birthday_sms, ref="double11", priority=10, label="双11大促") for p in colliding]
    requests += [
        _request(p, birthday_sms, ref="journey", priority=1, on_cap="drop", label="生日旅程")
        for p in colliding
    ]
    enqueued = messages_enqueue(rows=requests, now=now)
    assert enqueued.created == len(requests) == 360

    _drain(celery_worker_process)

    rows = {
        (m.customer_id, m.source_ref): m
        for m in Message.objects.filter(created_at=now).select_related("template")
    }

    def outcome(person, ref):
        m = rows[(person.pk, ref)]
        return m.status, m.reason

    assert {outcome(p, "birthday") for p in sendable} == {("sent", "")}
    assert {outcome(p, "winback") for p in sendable[:50]} == {("sent", "")}
    assert {outcome(p, "birthday") for p in no_consent} == {("suppressed", "no_consent")}
    assert {outcome(p, "birthday") for p in suppressed} == {("suppressed", "suppressed_address")}
    assert {outcome(p, "birthday") for p in capped[40:]} == {("suppressed", "capped")}
    # Capped for today: due again at the next local day's start, which quiet hours push to 08:00.
    assert {outcome(p, "birthday") for p in capped[:40]} == {("deferred", "capped_deferred")}
    tomorrow_8 = local_to_utc(datetime.combine(now.astimezone(day).date() + timedelta(days=1), clock(8)), day)
    assert {rows[(p.pk, "birthday")].due_at for p in capped[:40]} == {tomorrow_8}
    # Quiet hours hold the marketing message to 08:00 local; the transactional one goes at once.
    assert {outcome(p, "birthday") for p in asleep} == {("deferred", "quiet_hours")}
    today_8 = local_to_utc(datetime.combine(now.astimezone(night).date(), clock(8)), night)
    assert {rows[(p.pk, "birthday")].due_at for p in asleep} == {today_8}
    assert {outcome(p, "shipped") for p in asleep} == {("sent", "")}
    # One slot left today: the higher priority takes it, the other is dropped naming the winner.
    assert {outcome(p, "double11") for p in colliding} == {("sent", "")}
    assert {outcome(p, "journey") for p in colliding} == {("suppressed", "lower_priority")}
    assert {rows[(p.pk, "journey")].reason_params.get("than") for p in colliding} == {"双11大促"}

    sent_ids = {m.pk for m in rows.values() if m.status == "sent"}
    assert len(sent_ids) == 100 + 50 + 40 + 10

    # What the provider received: each sent message once, rendered in the customer's language.
    lines = [json.loads(line) for line in outbox_file.read_text(encoding="utf-8").splitlines()]
    assert Counter(line["message_id"] for line in lines) == Counter(sent_ids)
    by_id = {line["message_id"]: line for line in lines}
    for person in sendable:
        sms = by_id[rows[(person.pk, "birthday")].pk]
        assert sms["address"] == person.phone
        assert person.name in sms["content"]["text"]
        if person.language == "en":
            assert (
                sms["content"]["text"].startswith("Happy birthday")
                and "Reply T to opt out" in sms["content"]["text"]
            )
        else:
            assert "生日快乐" in sms["content"]["text"] and sms["content"]["text"].endswith("回T退订")
    coupons = dict(
        MessageCoupon.objects.filter(message_id__in=sent_ids).values_list("message_id", "coupon__code")
    )
    assert len(coupons) == 50
    for person in sendable[:50]:
        email = by_id[rows[(person.pk, "winback")].pk]
        assert email["address"] == person.email
        assert "{{" not in email["content"]["html"] and person.name in email["content"]["subject"]
        # The coupon issued for this very message, and every link a signed redirect of this site's.
        assert coupons[email["message_id"]].replace("-", "")[:6] in email["content"]["html"].replace("-", "")
        assert f"{django_settings.SITE_URL}/member/" not in email["content"]["html"]
        assert "/m/c/" in email["content"]["html"] and "/m/o/" in email["content"]["html"]
        assert email["headers"]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert "/m/u/" in email["headers"]["List-Unsubscribe"]
    for person in asleep:
        shipped = by_id[rows[(person.pk, "shipped")].pk]
        assert f"SO-{person.pk}" in shipped["content"]["text"] and "退订" not in shipped["content"]["text"]

    # The crm event log: one message_sent per sent message, nothing failed.
    events = Event.objects.filter(type="message_sent", occurred_at__gte=now - timedelta(minutes=1))
    assert Counter(e.properties["message_id"] for e in events) == Counter(sent_ids)
    assert {e.customer_id for e in events} == {
        rows_m.customer_id for rows_m in rows.values() if rows_m.pk in sent_ids
    }
    assert not Event.objects.filter(type="message_failed").exists()

    # The dispatcher run twice more (as beat and a second worker would) sends nothing again.
    _wake_once(celery_worker_process)
    _wake_once(celery_worker_process)
    again = [json.loads(line) for line in outbox_file.read_text(encoding="utf-8").splitlines()]
    assert len(again) == len(lines)
    assert Event.objects.filter(type="message_sent").count() == len(sent_ids)
