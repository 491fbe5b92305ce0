"""The webhook node's network call: a signed POST, nothing else (never called under a lock or inside a
transaction: the engine claims, commits, calls, then records in a second transaction).

The receiver checks `X-Journey-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">` with
the shared secret (settings.JOURNEYS_WEBHOOK_SECRET) and de-duplicates on `Idempotency-Key`, which is the
same on every retry of one step (a worker killed after the call but before recording it calls again).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass

import requests
from django.conf import settings

TIMEOUT_SECONDS = 10.0


def webhook_secret() -> bytes:
    secret = getattr(settings, "JOURNEYS_WEBHOOK_SECRET", "") or f"journeys-webhook:{settings.SECRET_KEY}"
    return secret.encode()


def signature(*, body: bytes, timestamp: int, secret: bytes | None = None) -> str:
    mac = hmac.new(secret or webhook_secret(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def signature_valid(*, header: str, body: bytes, secret: bytes | None = None) -> bool:
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    try:
        timestamp = int(parts.get("t", ""))
    except ValueError:
        return False
    return hmac.compare_digest(signature(body=body, timestamp=timestamp, secret=secret), header)


@dataclass(frozen=True)
class WebhookResult:
    ok: bool
    status: int | None
    error: str = ""
    permanent: bool = False  # a 4xx other than 408/429: retrying the same request will not help


def webhook_post(*, url: str, payload: dict, idempotency_key: str, timestamp: int) -> WebhookResult:
    body = json.dumps(payload, sort_keys=True, ensure_ascii=False, default=str).encode()
    headers = {
        "Content-Type": "application/json",
        "Idempotency-Key": idempotency_key,
        "X-Journey-Signature": signature(body=body, timestamp=timestamp),
    }
    try:
        response = requests.post(
            url, data=body, headers=headers, timeout=TIMEOUT_SECONDS, allow_redirects=False
        )
    except requests.RequestException as exc:
        return WebhookResult(ok=False, status=None, error=type(exc).__name__)
    if 200 <= response.status_code < 300:
        return WebhookResult(ok=True, status=response.status_code)
    permanent = 400 <= response.status_code < 500 and response.status_code not in (408, 409, 425, 429)
    return WebhookResult(
        ok=False, status=response.status_code, error=f"http_{response.status_code}", permanent=permanent
    )
