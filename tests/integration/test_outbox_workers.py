"""Exactly once, with real threads and worker processes on PostgreSQL: two workers claiming the same
batch, a worker SIGKILLed mid-batch (provider with and without idempotency), a provider down for a while
then back, concurrent enqueues of the same keys.

The workers are `tests/campaigns/outbox_worker.py` processes: the outbox with the stand-in stages of
tests/campaigns/pipeline_doubles.py and the sink provider recording every delivery to a shared file (the
far side of the wire), which is what "sent once" is counted on."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter

import pytest
from django.db import connection, connections
from django.utils import timezone

from campaigns.models import Message, MessageTemplate
from campaigns.services import outbox
from tests.campaigns import pipeline_doubles
from tests.campaigns.outbox_helpers import requests_for
from tests.conftest import REPO_ROOT, _database_url
from tests.factories import CustomerFactory

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

DEADLINE = 180.0  # how long a test waits for the workers before it fails with their output
LEASE = 3  # seconds: the killed worker's claim lapses quickly


@pytest.fixture
def template():
    return MessageTemplate.objects.create(code="notice", name="Notice", channel="sms")


def customers_bulk(n: int) -> list:
    from crm.models import Customer

    rows = [CustomerFactory.build() for _ in range(n)]
    return Customer.objects.bulk_create(rows, batch_size=1000)


def queue(template, n: int, **extra) -> list[int]:
    customers = customers_bulk(n)
    return outbox.messages_enqueue(
        rows=requests_for(customers, template, **extra), now=timezone.now()
    ).created_ids


def sink_spec(tmp_path, **options) -> dict:
    return {
        "sms": {
            "BACKEND": "campaigns.providers.sink.SinkProvider",
            "CODE": "sms-sink",
            "OPTIONS": {"record_path": str(tmp_path / "delivered.jsonl"), **options},
        }
    }


def delivered(tmp_path) -> Counter:
    path = tmp_path / "delivered.jsonl"
    if not path.exists():
        return Counter()
    return Counter(int(json.loads(line)["key"]) for line in path.read_text().splitlines() if line.strip())


class Worker:
    def __init__(
        self, tmp_path, providers: dict, *, name: str, reap: bool = True, extra_env: dict | None = None
    ):
        env = {
            **os.environ,
            "DATABASE_URL": _database_url(connections["default"].settings_dict),
            "DJANGO_ENV": os.environ.get("DJANGO_ENV", "test"),
            "OUTBOX_TEST_PROVIDERS": json.dumps(providers),
            "MESSAGING_CLAIM_SECONDS": str(LEASE),
            "PYTHONUNBUFFERED": "1",
            "LOG_LEVEL": "WARNING",
            **(extra_env or {}),
        }
        command = [
            sys.executable,
            "-m",
            "tests.campaigns.outbox_worker",
            "--name",
            name,
            "--seconds",
            str(DEADLINE),
        ]
        if reap:
            command.append("--reap")
        self.log = tmp_path / f"{name}.log"
        self._out = open(self.log, "w")
        self.process = subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            env=env,
            stdout=self._out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait(self) -> dict:
        try:
            self.process.wait(timeout=DEADLINE)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"worker did not finish:\n{self.log.read_text()[-3000:]}")
        self._out.close()
        text = self.log.read_text()
        assert self.process.returncode == 0, text[-3000:]
        return json.loads(text.strip().splitlines()[-1])

    def kill(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        self._out.close()


def wait_for(path, what: str, workers=()) -> None:
    deadline = time.monotonic() + DEADLINE
    while not path.exists():
        if time.monotonic() > deadline:
            logs = "\n".join(w.log.read_text()[-2000:] for w in workers)
            pytest.fail(f"{what} did not happen within {DEADLINE}s\n{logs}")
        time.sleep(0.1)


def statuses() -> Counter:
    return Counter(Message.objects.values_list("status", flat=True))


def test_the_same_batch_claimed_by_two_threads_at_once_is_sent_once(template, monkeypatch, settings):
    from campaigns.providers.sink import SinkProvider

    settings.MESSAGING_PROVIDERS = {
        "sms": {"BACKEND": "campaigns.providers.sink.SinkProvider", "OPTIONS": {}}
    }
    pipeline_doubles.install(monkeypatch)
    SinkProvider.reset()
    ids = queue(template, 600)
    now = timezone.now()
    start = threading.Barrier(4)
    claims, errors = [], []

    def claimer():
        try:
            start.wait()
            claim = outbox.messages_claim(now=now, batch_size=600)
            claims.append(claim)
            outbox.batch_process(claim=claim, now=now)
        except Exception as exc:  # reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=claimer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    claimed = [m.pk for c in claims for m in c.messages]
    assert sorted(claimed) == sorted(ids)  # every row claimed by exactly one thread
    assert SinkProvider.deliveries == 600 and len(SinkProvider.delivered) == 600
    assert statuses() == {"sent": 600}
    SinkProvider.reset()


def test_two_worker_processes_draining_one_queue_send_each_message_once(template, tmp_path):
    ids = queue(template, 3000)
    # No idempotency at the sink: a message handed twice would show up twice in the file.
    spec = sink_spec(tmp_path, supports_idempotency=False)
    workers = [Worker(tmp_path, spec, name=f"w{n}") for n in (1, 2)]
    totals = [w.wait() for w in workers]
    counts = delivered(tmp_path)
    assert sorted(counts) == sorted(ids) and set(counts.values()) == {1}
    assert statuses() == {"sent": 3000}
    assert sum(t["sent"] for t in totals) == 3000 and sum(t["claimed"] for t in totals) == 3000


@pytest.mark.parametrize("idempotent", [True, False], ids=["provider-dedupes", "no-idempotency"])
def test_a_worker_killed_mid_batch_then_a_new_worker_ends_with_every_message_sent_once(
    template, tmp_path, idempotent
):
    ids = queue(template, 400)
    marker = tmp_path / "stalled"
    # The first worker delivers 2 batches and 20 of its third (batch size 50), then hangs there: 30
    # messages of that batch are handed over and not delivered, 20 delivered and not recorded.
    stalling = sink_spec(tmp_path, supports_idempotency=idempotent, stall_after=120, stall_marker=str(marker))
    first = Worker(tmp_path, stalling, name="doomed", reap=False)
    wait_for(marker, "the first worker's stall", [first])
    first.kill()
    assert statuses()["sending"] == 50

    second = Worker(tmp_path, sink_spec(tmp_path, supports_idempotency=idempotent), name="second")
    second.wait()
    counts = delivered(tmp_path)
    assert set(counts.values()) == {1}, "a message reached the provider twice"
    rows = {m.pk: m for m in Message.objects.all()}
    lapsed = {pk for pk, m in rows.items() if any(h["reason"].startswith("claim_lapsed") for h in m.history)}
    if idempotent:
        # The stalled batch was handed again with the same keys: the 20 already delivered were deduped.
        assert statuses() == {"sent": 400}
        assert sorted(counts) == sorted(ids)
        assert len(lapsed) == 50
        assert all(rows[pk].attempts == 2 for pk in lapsed)
    else:
        # Handed over, no answer, no key to ask again with: unknown, to reconcile, never resent.
        assert statuses() == {"sent": 350, "unknown": 50}
        unknown = {pk for pk, m in rows.items() if m.status == "unknown"}
        assert all(rows[pk].reason == "no_answer" and rows[pk].attempts == 1 for pk in unknown)
        assert len(set(counts) & unknown) == 20  # the ones the doomed worker got out before it hung
        assert set(counts) == (set(ids) - unknown) | (set(counts) & unknown)
        assert lapsed == set()


def test_a_provider_down_for_a_while_then_back_delivers_everything_once_with_back_off(template, tmp_path):
    ids = queue(template, 300)
    down = tmp_path / "provider-down"
    down.write_text("503")
    spec = sink_spec(tmp_path, supports_idempotency=False, fail_while_path=str(down))
    env = {
        "MESSAGING_RETRY_BASE_SECONDS": "0.5",
        "MESSAGING_RETRY_MAX_SECONDS": "4",
        "MESSAGING_MAX_ATTEMPTS": "50",
    }
    workers = [Worker(tmp_path, spec, name=f"w{n}", extra_env=env) for n in (1, 2)]
    # Down until every message has been refused at least twice (a machine 3x slower only waits longer).
    deadline = time.monotonic() + DEADLINE
    while (
        Message.objects.filter(attempts__lt=2).exists() or Message.objects.filter(status="sending").exists()
    ):
        assert time.monotonic() < deadline, "the workers never retried every message"
        time.sleep(0.2)
    assert delivered(tmp_path) == Counter()
    down.unlink()  # the provider recovers
    for w in workers:
        w.wait()
    counts = delivered(tmp_path)
    assert sorted(counts) == sorted(ids) and set(counts.values()) == {1}
    assert statuses() == {"sent": 300}
    for m in Message.objects.all():
        retries = [h for h in m.history if h["reason"] == "provider_retry"]
        assert retries and m.attempts == len(retries) + 1
        # Back-off: each wait is at least the jittered lower half of base * 2^(n-1), capped.
        times = [h["at"] for h in m.history if h["status"] in ("queued", "sent")][1:]
        assert len(times) >= 2
        gaps = [
            (timezone.datetime.fromisoformat(b) - timezone.datetime.fromisoformat(a)).total_seconds()
            for a, b in zip(times, times[1:], strict=False)
        ]
        for n, gap in enumerate(gaps, start=1):
            assert gap >= min(4, 0.5 * 2 ** (n - 1)) * 0.5 - 0.05, (m.pk, gaps)


def test_enqueue_is_idempotent_under_concurrency(template):
    customers = customers_bulk(2000)
    start = threading.Barrier(4)
    results, errors = [], []

    def enqueue(offset):
        try:
            rows = requests_for(customers[offset:] + customers[:offset], template)
            start.wait()
            results.append(outbox.messages_enqueue(rows=rows, now=timezone.now()))
        except Exception as exc:  # reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=enqueue, args=(n * 500,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert Message.objects.count() == 2000
    assert sum(r.created for r in results) == 2000
    created = [pk for r in results for pk in r.created_ids]
    assert len(set(created)) == 2000
    for r in results:
        assert sorted(r.created_ids + r.existing_ids) == sorted(Message.objects.values_list("id", flat=True))
