"""`provider_for(channel)`: the configured provider of a channel, from settings.MESSAGING_PROVIDERS.

    MESSAGING_PROVIDERS = {
        "email": {"BACKEND": "campaigns.providers.email.DjangoMailProvider", "OPTIONS": {}, "RATE": 50},
        "sms": {"BACKEND": "campaigns.providers.http.HttpProvider", "OPTIONS": {...}, "RATE": 100},
        ...
    }

Each entry may also name its provider `CODE` (the ProviderState row and the rate limit key; the channel
by default), so two deployments of one backend keep separate rates and cool-downs.

Instances are kept one per thread and channel: a provider holds connections (an HTTP session's pool)
that are worth keeping between batches, but is not shared between threads (an SMTP connection is one
conversation). A change of the setting (override_settings in tests) drops them."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.utils.module_loading import import_string

from campaigns.models import Channel
from campaigns.providers.base import Provider

ALLOWED_KEYS = {"BACKEND", "OPTIONS", "RATE", "BURST", "CODE"}


@dataclass(frozen=True)
class ProviderConfig:
    channel: str
    code: str
    backend: type[Provider]
    options: dict
    rate: float  # messages per second across every process and host; 0: unlimited
    burst: float  # the bucket's size: how many may go at once after a quiet spell


def _problems_of(channel: object, entry: object) -> tuple[list[str], ProviderConfig | None]:
    where = f"MESSAGING_PROVIDERS[{channel!r}]"
    if channel not in Channel.values:
        return [f"{where}: unknown channel; the channels are {', '.join(Channel.values)}"], None
    if not isinstance(entry, dict):
        return [f"{where} must be a dict with BACKEND, OPTIONS and RATE, not {type(entry).__name__}"], None
    problems = []
    unknown = set(entry) - ALLOWED_KEYS
    if unknown:
        problems.append(f"{where}: unknown keys {sorted(unknown)}; allowed: {sorted(ALLOWED_KEYS)}")
    backend_path = entry.get("BACKEND")
    backend = None
    if not isinstance(backend_path, str) or not backend_path:
        problems.append(f"{where}['BACKEND'] must be the dotted path of a Provider class")
    else:
        try:
            backend = import_string(backend_path)
        except ImportError as exc:
            problems.append(f"{where}['BACKEND'] = {backend_path!r} cannot be imported: {exc}")
        else:
            if not (isinstance(backend, type) and issubclass(backend, Provider)):
                problems.append(f"{where}['BACKEND'] = {backend_path!r} is not a Provider subclass")
                backend = None
    options = entry.get("OPTIONS", {})
    if not isinstance(options, dict):
        problems.append(f"{where}['OPTIONS'] must be a dict, not {type(options).__name__}")
        options = {}
    elif backend is not None and hasattr(backend, "options_problems"):
        problems.extend(f"{where}['OPTIONS']: {p}" for p in backend.options_problems(options))
    rates = {}
    for key, default in (("RATE", 0), ("BURST", None)):
        value = entry.get(key, default)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            problems.append(f"{where}['{key}'] must be a number ≥ 0 (messages per second), not {value!r}")
        else:
            rates[key] = float(value)
    code = entry.get("CODE", channel)
    if not isinstance(code, str) or not code or len(code) > 64:
        problems.append(f"{where}['CODE'] must be a non-empty string of at most 64 characters")
    if problems:
        return problems, None
    rate = rates.get("RATE", 0.0)
    burst = rates.get("BURST", max(rate, 1.0))
    return [], ProviderConfig(
        channel=channel, code=code, backend=backend, options=options, rate=rate, burst=burst
    )


def providers_problems() -> list[str]:
    """Every problem of settings.MESSAGING_PROVIDERS, in words that name the entry (the system check and
    provider_for both use it)."""
    setting = getattr(settings, "MESSAGING_PROVIDERS", None)
    if not isinstance(setting, dict):
        return [f"MESSAGING_PROVIDERS must be a dict of channel -> provider, not {type(setting).__name__}"]
    problems = []
    codes: dict[str, str] = {}
    for channel, entry in setting.items():
        found, config = _problems_of(channel, entry)
        problems.extend(found)
        if config is not None:
            if config.code in codes:
                problems.append(
                    f"MESSAGING_PROVIDERS[{channel!r}]: CODE {config.code!r} is already the code of "
                    f"{codes[config.code]!r}; each provider needs its own (its rate and cool-down)"
                )
            codes[config.code] = channel
    return problems


def provider_config(channel: str) -> ProviderConfig:
    setting = getattr(settings, "MESSAGING_PROVIDERS", None)
    if not isinstance(setting, dict) or channel not in setting:
        configured = ", ".join(setting) if isinstance(setting, dict) else "none"
        raise ImproperlyConfigured(
            f"No provider for channel {channel!r} in MESSAGING_PROVIDERS (configured: {configured})"
        )
    problems, config = _problems_of(channel, setting[channel])
    if problems:
        raise ImproperlyConfigured("; ".join(problems))
    return config


def provider_config_by_code(code: str) -> ProviderConfig | None:
    setting = getattr(settings, "MESSAGING_PROVIDERS", None)
    if not isinstance(setting, dict):
        return None
    for channel, entry in setting.items():
        if channel == code or (isinstance(entry, dict) and entry.get("CODE") == code):
            _problems, config = _problems_of(channel, entry)
            if config is not None and config.code == code:
                return config
    return None


_local = threading.local()


def provider_for(channel: str) -> Provider:
    """The provider of `channel`, configured from settings.MESSAGING_PROVIDERS (ImproperlyConfigured, naming
    the entry, when the setting is wrong)."""
    cache = getattr(_local, "providers", None)
    if cache is None:
        cache = _local.providers = {}
    provider = cache.get(channel)
    if provider is None:
        config = provider_config(channel)
        provider = config.backend(code=config.code, channel=channel, options=config.options)
        cache[channel] = provider
    return provider


def _forget(*, setting, **kwargs):
    if setting in ("MESSAGING_PROVIDERS", "EMAIL_BACKEND", "CACHES"):
        # Only this thread's instances can be reached; other threads' are rebuilt when theirs changes.
        _local.providers = {}


setting_changed.connect(_forget)
