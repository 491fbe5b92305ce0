"""The provider interface the delivery pipeline sends through."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True)
class OutgoingMessage:
    """A rendered message, ready to hand over. `idempotency_key` is stable across every attempt of the
    same message (the outbox row's id), so a provider that dedupes by it (WeChat client_msg_id, an SMS
    gateway's client reference, an ESP's idempotency header) turns a resend after a crash into a no-op."""

    message_id: int
    idempotency_key: str
    channel: str
    address: str  # an email address, an E.164 phone number, an openid, a push token
    content: dict  # the rendered fields: subject/html/text, text, title/body, template_id/data/page
    headers: dict = field(default_factory=dict)  # e.g. List-Unsubscribe for marketing email
    language: str = ""


class Outcome(enum.StrEnum):
    SENT = "sent"  # the provider accepted it
    RETRY = "retry"  # try again later: timeout, 5xx, rate limited, WeChat -1 / 45009
    PERMANENT = "permanent"  # never retry: invalid address, not subscribed, bad template
    UNKNOWN = "unknown"  # handed over, no answer, and no idempotency key to ask again with


@dataclass(frozen=True)
class SendResult:
    message_id: int
    outcome: Outcome
    provider_message_id: str = ""
    error_code: str = ""  # the provider's own code: "43004", "550", "timeout"
    error_detail: str = ""
    # For PERMANENT: what the failure says about the address, so the pipeline marks it ("invalid" puts the
    # address on the suppression list, "unsubscribed" withdraws the consent, "" marks nothing: a bad template).
    address_problem: str = ""
    retry_after: float | None = None  # seconds the provider asked us to wait, when it said
    cool_down: bool = False  # the provider as a whole is unwell: every worker should pause it


class Provider:
    """One configured provider (settings.MESSAGING_PROVIDERS). Subclasses set `code` and
    `supports_idempotency`, and implement `send_batch`; `open`/`close` bracket a batch (an SMTP connection
    is opened once per batch, not once per message)."""

    code: str = ""
    channel: str = ""
    supports_idempotency: bool = False

    def __init__(self, *, code: str, channel: str, options: dict | None = None):
        self.code = code
        self.channel = channel
        self.options = dict(options or {})

    def open(self) -> None:
        pass

    def close(self) -> None:
        pass

    def send_batch(self, messages: list[OutgoingMessage], *, now: datetime) -> list[SendResult]:
        raise NotImplementedError

    def __enter__(self):
        self.open()
        return self

    def __exit__(self, *exc):
        self.close()
        return False
