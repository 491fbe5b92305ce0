"""The providers' global send rate holds across processes (Redis and PostgreSQL), tokens go in batches,
and cool-downs are shared, grow on consecutive failures and start again after a success."""

import multiprocessing
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import redis
from django.core.exceptions import ImproperlyConfigured
from django.db import connections

from campaigns.models import ProviderState
from campaigns.services.rate_limits import (
    MAX_COOL_DOWN,
    provider_cool_down,
    provider_cooling,
    provider_recovered,
    rate_limit_take,
)

T0 = datetime(2026, 12, 7, 2, 0, tzinfo=UTC)
RATE = 200
REDIS_URL = "redis://127.0.0.1:6379/5"


@pytest.fixture
def limited(settings):
    settings.MESSAGING_PROVIDERS = {
        "sms": {"BACKEND": "campaigns.providers.console.ConsoleProvider", "OPTIONS": {}, "RATE": RATE},
        "email": {"BACKEND": "campaigns.providers.console.ConsoleProvider", "OPTIONS": {}, "RATE": 0},
        "push": {
            "BACKEND": "campaigns.providers.console.ConsoleProvider",
            "OPTIONS": {},
            "RATE": 10,
            "BURST": 5,
            "CODE": "fcm",
        },
    }
    return settings


@pytest.fixture
def on_redis(limited):
    prefix = f"providers-test:{uuid.uuid4().hex}:"
    limited.MESSAGING_RATE_LIMIT_URL = REDIS_URL
    limited.MESSAGING_RATE_LIMIT_PREFIX = prefix
    yield limited
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(f"{prefix}*"))
    if keys:
        client.delete(*keys)


def _take_for(seconds: float, batch: int, queue) -> None:
    granted, first, last = 0, None, None
    try:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            started = time.time()
            got = rate_limit_take("sms", batch, datetime.now(UTC))
            first = started if first is None else first
            last = time.time()
            granted += got
            if got < batch:
                time.sleep(0.005)
        queue.put((granted, first, last))
    except Exception as exc:  # noqa: BLE001 - reported to the parent
        queue.put(repr(exc))
    finally:
        connections.close_all()


def _four_processes_for_two_seconds() -> tuple[int, float]:
    connections.close_all()  # forked children open their own
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_take_for, args=(2.0, 10, queue)) for _ in range(4)]
    for p in procs:
        p.start()
    answers = [queue.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert all(isinstance(a, tuple) for a in answers), answers
    total = sum(a[0] for a in answers)
    elapsed = max(a[2] for a in answers) - min(a[1] for a in answers)
    return total, elapsed


def _assert_within_rate(total: int, elapsed: float) -> None:
    # The bucket starts full (one burst of RATE) and refills at RATE per second: never more than that.
    assert total <= RATE + RATE * elapsed + 1, (total, elapsed)
    # ... and the limiter does hand tokens out: well over the first burst in two seconds, even slowly.
    assert total >= RATE + RATE * 0.5, (total, elapsed)


@pytest.mark.django_db(transaction=True)
def test_four_processes_never_exceed_the_rate_on_postgresql(limited):
    limited.MESSAGING_RATE_LIMIT_URL = "db"
    _assert_within_rate(*_four_processes_for_two_seconds())


def test_four_processes_never_exceed_the_rate_on_redis(on_redis):
    _assert_within_rate(*_four_processes_for_two_seconds())


@pytest.mark.django_db
def test_the_database_bucket_grants_batches_and_refills_at_the_rate(limited):
    limited.MESSAGING_RATE_LIMIT_URL = "db"
    assert rate_limit_take("sms", 150, T0) == 150  # the bucket starts full: 200
    assert rate_limit_take("sms", 150, T0) == 50  # what is left
    assert rate_limit_take("sms", 150, T0) == 0
    assert rate_limit_take("sms", 150, T0 + timedelta(seconds=0.5)) == 100  # 0.5 s at 200/s
    assert rate_limit_take("sms", 500, T0 + timedelta(seconds=10)) == 200  # never more than one burst
    assert rate_limit_take("sms", 10, T0 + timedelta(seconds=9)) == 0  # a clock behind refills nothing
    assert rate_limit_take("fcm", 100, T0) == 5  # BURST 5, looked up by its CODE
    assert rate_limit_take("email", 10_000, T0) == 10_000  # RATE 0: unlimited
    assert ProviderState.objects.get(code="sms").tokens == pytest.approx(0)


def test_the_redis_bucket_grants_batches_and_refills(on_redis):
    assert rate_limit_take("sms", 150, T0) == 150
    assert rate_limit_take("sms", 150, T0) <= 51  # what is left, plus what a few ms refilled
    time.sleep(0.25)
    assert 40 <= rate_limit_take("sms", 200, T0) <= 200


def test_an_unknown_provider_is_named(limited):
    with pytest.raises(ImproperlyConfigured, match="'nope'"):
        rate_limit_take("nope", 1, T0)


@pytest.mark.django_db
def test_cool_downs_grow_on_consecutive_failures_and_restart_after_a_success(limited):
    assert provider_cooling("sms", T0) is None
    first = provider_cool_down("sms", 10, "-1", now=T0)
    assert first == T0 + timedelta(seconds=10) == provider_cooling("sms", T0 + timedelta(seconds=5))
    # Another worker's failure during the pause does not lengthen it.
    assert provider_cool_down("sms", 10, "-1", now=T0 + timedelta(seconds=5)) == first
    assert provider_cooling("sms", first) is None
    second = provider_cool_down("sms", 10, "45009", now=first)
    assert second == first + timedelta(seconds=20)
    third = provider_cool_down("sms", 10, "45009", now=second)
    assert third == second + timedelta(seconds=40)
    state = ProviderState.objects.get(code="sms")
    assert (state.consecutive_failures, state.cool_down_reason) == (3, "45009")
    provider_recovered("sms", now=third - timedelta(seconds=1))  # still pausing: nothing changes
    assert ProviderState.objects.get(code="sms").consecutive_failures == 3
    provider_recovered("sms", now=third)
    assert ProviderState.objects.get(code="sms").consecutive_failures == 0
    assert provider_cool_down("sms", 10, "-1", now=third) == third + timedelta(seconds=10)


@pytest.mark.django_db
def test_a_cool_down_never_exceeds_the_maximum(limited):
    now = T0
    for _ in range(40):
        until = provider_cool_down("sms", 60, "-1", now=now)
        assert until - now <= timedelta(seconds=MAX_COOL_DOWN)
        now = until
    assert until - (now - (until - now)) <= timedelta(seconds=MAX_COOL_DOWN)
