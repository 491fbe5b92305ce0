"""Each provider's global send rate, and its cool-down, shared by every worker process on every host.

Celery's `rate_limit` counts per worker process, so four workers on two hosts would send eight times a
provider's limit. Here one token bucket per provider lives where every process sees it:

- in Redis when settings.MESSAGING_RATE_LIMIT_URL is a redis:// URL (production): one Lua script takes
  the tokens atomically, reading the clock of the Redis server, so hosts whose clocks disagree still
  share one bucket;
- otherwise in the database, the provider's ProviderState row (the embedded default): the row is locked
  (`SELECT … FOR UPDATE` on PostgreSQL; SQLite's write lock, which `transaction_mode=IMMEDIATE` takes at
  BEGIN) for the few statements of one take. The callers' `now` is the clock there: a host whose clock
  runs ahead can take at most its lead's worth of tokens early, once.

Tokens are taken in batches (`rate_limit_take(code, 100, now)` grants up to 100): one round trip per batch,
not per message. The bucket holds BURST tokens (one second's worth, RATE, unless the setting says), and
starts full. Call it with no transaction open: the row lock would last as long as the caller's
transaction.

Cool-downs (`provider_cool_down`, `provider_cooling`) always live in the database: they are rare, and the
staff pages show them. Consecutive failures grow the pause exponentially (base × 2^(n-1), at most
MAX_COOL_DOWN); the first batch that succeeds after it (`provider_recovered`) starts the count again."""

from __future__ import annotations

import math
import threading
from datetime import datetime, timedelta

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction
from django.utils import timezone

from campaigns.models import ProviderState
from campaigns.providers.registry import provider_config_by_code

MAX_COOL_DOWN = 3600.0  # seconds: a provider down for hours is retried at least once an hour
DEFAULT_PREFIX = "messaging:rate:"

# KEYS[1]: the bucket's hash. ARGV: rate (tokens/s), burst (bucket size), tokens wanted.
# Returns the tokens granted (0..wanted). The clock is the Redis server's (TIME), the same for all hosts.
_TAKE_LUA = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1])
local at = tonumber(state[2])
if tokens == nil or at == nil then
  tokens = burst
  at = now
elseif now > at then
  tokens = math.min(burst, tokens + (now - at) * rate)
  at = now
end
local granted = math.min(want, math.floor(tokens + 1e-9))
if granted < 0 then granted = 0 end
tokens = tokens - granted
redis.call('HSET', KEYS[1], 'tokens', string.format('%.6f', tokens), 'at', string.format('%.6f', at))
redis.call('EXPIRE', KEYS[1], math.ceil(burst / rate) + 60)
return granted
"""

_clients: dict[str, object] = {}
_clients_lock = threading.Lock()


def _redis(url: str):
    # One client (and connection pool) per process and URL; redis-py's pool notices a fork and reconnects.
    client = _clients.get(url)
    if client is None:
        import redis

        with _clients_lock:
            client = _clients.get(url)
            if client is None:
                client = redis.Redis.from_url(url)
                client._campaigns_take = client.register_script(_TAKE_LUA)
                _clients[url] = client
    return client


def _config(provider_code: str):
    config = provider_config_by_code(provider_code)
    if config is None:
        raise ImproperlyConfigured(
            f"No provider with code {provider_code!r} in MESSAGING_PROVIDERS (its CODE, or its channel)"
        )
    return config


def rate_limit_take(provider_code: str, n: int, now: datetime) -> int:
    """Take up to `n` send tokens of the provider; returns how many were granted (0 when the bucket is
    empty: try again in about 1/RATE s). A provider with RATE 0 is unlimited."""
    config = _config(provider_code)
    if n <= 0:
        return 0
    if config.rate <= 0:
        return n
    url = getattr(settings, "MESSAGING_RATE_LIMIT_URL", "db") or "db"
    if url == "db":
        return _db_take(provider_code, config.rate, config.burst, n, now)
    if url.startswith(("redis://", "rediss://", "unix://")):
        prefix = getattr(settings, "MESSAGING_RATE_LIMIT_PREFIX", DEFAULT_PREFIX)
        client = _redis(url)
        return int(
            client._campaigns_take(keys=[f"{prefix}{provider_code}"], args=[config.rate, config.burst, n])
        )
    raise ImproperlyConfigured(f"MESSAGING_RATE_LIMIT_URL must be 'db' or a redis:// URL, not {url!r}")


def _locked_state(provider_code: str, now: datetime) -> ProviderState:
    """The provider's row, locked until the end of the caller's transaction (created on first use)."""
    row = ProviderState.objects.select_for_update().filter(code=provider_code).first()
    if row is None:
        # Two first takes at once: ON CONFLICT DO NOTHING lets the second wait for the first's row.
        ProviderState.objects.bulk_create([ProviderState(code=provider_code)], ignore_conflicts=True)
        row = ProviderState.objects.select_for_update().get(code=provider_code)
    return row


def _db_take(provider_code: str, rate: float, burst: float, n: int, now: datetime) -> int:
    with transaction.atomic():
        row = _locked_state(provider_code, now)
        tokens, at = row.tokens, row.tokens_at
        if at is None:  # a new row, or one only a cool-down wrote: the bucket starts full
            tokens, at = burst, now
        elif now > at:
            tokens = min(burst, tokens + (now - at).total_seconds() * rate)
            at = now
        granted = max(0, min(n, math.floor(tokens + 1e-9)))
        ProviderState.objects.filter(code=provider_code).update(tokens=tokens - granted, tokens_at=at)
    return granted


def provider_cool_down(
    provider_code: str, seconds: float, reason: str, *, now: datetime | None = None
) -> datetime:
    """Pause the provider for every worker: `seconds` for a first failure, doubled for each consecutive one
    (at most MAX_COOL_DOWN). A failure reported while a pause is already on (a send that started before
    it) does not lengthen it. `reason` is the provider's error code ("45009", "429"), shown to staff as
    such, not a sentence. Returns the end of the pause."""
    now = now or timezone.now()
    with transaction.atomic():
        row = _locked_state(provider_code, now)
        if row.cool_down_until is not None and row.cool_down_until > now:
            return row.cool_down_until
        failures = row.consecutive_failures + 1
        length = min(MAX_COOL_DOWN, max(0.0, float(seconds)) * 2 ** min(failures - 1, 30))
        until = now + timedelta(seconds=length)
        ProviderState.objects.filter(code=provider_code).update(
            cool_down_until=until, cool_down_reason=str(reason)[:200], consecutive_failures=failures
        )
    return until


def provider_cooling(provider_code: str, now: datetime) -> datetime | None:
    """The end of the provider's pause, or None when it may send."""
    return (
        ProviderState.objects.filter(code=provider_code, cool_down_until__gt=now)
        .values_list("cool_down_until", flat=True)
        .first()
    )


def provider_recovered(provider_code: str, *, now: datetime) -> None:
    """A batch went through: the next failure starts the back-off from its base again. One cheap UPDATE
    that touches nothing while the count is already 0 or a pause is still on."""
    ProviderState.objects.filter(code=provider_code, consecutive_failures__gt=0).exclude(
        cool_down_until__gt=now
    ).update(consecutive_failures=0)
