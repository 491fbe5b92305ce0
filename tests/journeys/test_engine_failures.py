"""The engine under failure: a worker SIGKILLed mid-batch (its transaction open, steps and messages
written but not committed) never advances an enrollment twice, and its batch is picked up once its lease
ends; a worker that stalled past its lease finds its rows taken over and writes nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import timedelta

import pytest
from django.db import connections
from django.utils import timezone

from campaigns.models import Message
from crm.models import Customer
from journeys.models import Enrollment, EnrollmentState, EnrollmentStep
from journeys.services.engine import batch_process, enrollments_claim, lease_duration
from tests.campaigns.helpers import template_make
from tests.conftest import REPO_ROOT, _database_url
from tests.factories import CustomerFactory
from tests.journeys.engine_helpers import enter, published
from tests.journeys.graphs import chain, entry, node

DEADLINE = 120.0
LEASE_SECONDS = 3


def send_then_wait():
    return chain(
        entry(),
        node("s", "send_message", channel="email", template="hello"),
        node("w", "wait", mode="duration", duration={"value": 1, "unit": "hours"}),
        node("x", "exit"),
    )


def worker(tmp_path, name, *extra):
    env = {
        **os.environ,
        "DATABASE_URL": _database_url(connections["default"].settings_dict),
        "DJANGO_ENV": os.environ.get("DJANGO_ENV", "test"),
        "JOURNEYS_LEASE_SECONDS": str(LEASE_SECONDS),
        "PYTHONUNBUFFERED": "1",
        "LOG_LEVEL": "WARNING",
    }
    log = open(tmp_path / f"{name}.log", "w")
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.journeys.engine_worker", "--name", name, *extra],
        cwd=REPO_ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    return process, log


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_a_worker_killed_mid_batch_never_advances_an_enrollment_twice(tmp_path):
    template_make(code="hello", channel="email")
    version = published(send_then_wait())
    customers = Customer.objects.bulk_create([CustomerFactory.build() for _ in range(300)])
    enter(version, customers, now=timezone.now())

    stall = tmp_path / "stalled.json"
    doomed, doomed_log = worker(tmp_path, "doomed", "--batch", "100", "--stall-file", str(stall))
    deadline = time.monotonic() + DEADLINE
    while not stall.exists():
        assert doomed.poll() is None and time.monotonic() < deadline, (tmp_path / "doomed.log").read_text()
        time.sleep(0.05)
    os.killpg(doomed.pid, signal.SIGKILL)
    doomed.wait()
    doomed_log.close()
    # Killed with its transaction open: nothing it wrote for its batch survives.
    assert not EnrollmentStep.objects.exists() and not Message.objects.exists()

    survivor, survivor_log = worker(tmp_path, "survivor", "--batch", "100", "--idle", str(LEASE_SECONDS + 2))
    try:
        survivor.wait(timeout=DEADLINE)
    finally:
        if survivor.poll() is None:
            os.killpg(survivor.pid, signal.SIGKILL)
        survivor_log.close()
    assert survivor.returncode == 0, (tmp_path / "survivor.log").read_text()[-3000:]

    # Every enrollment went entry -> send -> wait exactly once, and each customer has one message.
    assert Counter(Enrollment.objects.values_list("state", "node_id")) == {
        (EnrollmentState.WAITING, "w"): 300
    }
    steps = Counter(EnrollmentStep.objects.values_list("enrollment_id", "node_id"))
    assert len(steps) == 900 and set(steps.values()) == {1}
    assert Counter(Message.objects.values_list("customer_id", flat=True)) == Counter(
        {c.pk: 1 for c in customers}
    )


@pytest.mark.django_db
def test_a_worker_whose_lease_was_taken_over_writes_nothing():
    template_make(code="hello", channel="email")
    version = published(send_then_wait())
    now = timezone.now()
    enter(version, [CustomerFactory() for _ in range(5)], now=now)
    stalled = enrollments_claim(now=now)
    later = now + lease_duration() + timedelta(seconds=1)
    taken_over = enrollments_claim(now=later)
    assert sorted(taken_over.ids) == sorted(stalled.ids)
    assert batch_process(claim=taken_over, now=later).steps == 15
    late = batch_process(claim=stalled, now=now)
    assert (late.lost, late.steps) == (5, 0)
    assert Message.objects.count() == 5 and EnrollmentStep.objects.count() == 15


@pytest.mark.django_db
def test_a_claimed_batch_is_not_claimed_again_while_its_lease_runs():
    template_make(code="hello", channel="email")
    version = published(send_then_wait())
    now = timezone.now()
    enter(version, [CustomerFactory() for _ in range(3)], now=now)
    assert len(enrollments_claim(now=now).ids) == 3
    assert enrollments_claim(now=now + lease_duration() - timedelta(seconds=1)).ids == []
