"""Email through Django's mail backends: SMTP (settings EMAIL_HOST, EMAIL_PORT, ...) or any django-anymail
ESP by setting EMAIL_BACKEND (e.g. "anymail.backends.mailgun.EmailBackend" with its ANYMAIL settings).

One connection per batch: `open()` (or the first message of a batch) opens it with `get_connection()`, each
message goes through `send_messages([message])` on that open connection (Django's backends reuse a
connection that is already open), so a batch of 500 costs one TCP+TLS handshake and one login, and each
message still gets its own answer. When the server drops the connection mid-batch (many servers close
after N messages, or on idle), the provider reconnects and carries on with the message it was on.

Guarantees (what a crash or a dropped connection can do):
- SMTP has no idempotency key. A message is "handed over" once its final "." went out; if the server hung
  up or went silent before the first message's reply came back, nobody knows whether it was accepted, and
  that message is answered UNKNOWN (to reconcile), never resent blindly. A message refused or cut off
  before its content was complete was not accepted, and is resent on the new connection at once.
  Each message carries a Message-ID built from its idempotency key, so the same message always has the
  same Message-ID.
- Anymail ESPs answer with their own message id (message.anymail_status), kept as provider_message_id; the
  tracking webhooks find the message by it (and by the "message_id" metadata sent along).
"""

from __future__ import annotations

import logging
import secrets
import smtplib
import ssl
from datetime import datetime

from django.conf import settings
from django.core.mail import BadHeaderError, EmailMultiAlternatives, get_connection
from django.core.mail.backends.smtp import EmailBackend as DjangoSMTPBackend
from django.utils.html import strip_tags

from campaigns.providers.base import Outcome, OutgoingMessage, Provider, SendResult
from campaigns.providers.results import not_attempted, truncate_detail

logger = logging.getLogger("campaigns.providers.email")

DJANGO_SMTP = "django.core.mail.backends.smtp.EmailBackend"


class _HandOverTracking:
    """Knows whether the current message's content was completely sent (the server may have accepted it) or
    not (it certainly did not): the difference between UNKNOWN and a safe resend."""

    handed_over = False
    _in_data = False

    def sendmail(self, *args, **kwargs):
        self.handed_over = False
        self._in_data = False
        try:
            return super().sendmail(*args, **kwargs)
        finally:
            self._in_data = False

    def data(self, msg):
        self._in_data = True
        return super().data(msg)

    def send(self, s):
        super().send(s)
        if self._in_data and isinstance(s, bytes) and s.endswith(b"\r\n.\r\n"):
            self.handed_over = True


class _Email(EmailMultiAlternatives):
    """Django's email with its multipart boundaries chosen here. Left unset, the standard library's
    generator makes a random boundary and then, to prove it absent from the parts, joins every part's text
    and compiles a regular expression for it: a fresh pattern per message (the `re` cache never hits),
    a fifth of building an email-sized message (BENCHMARKS.md, SMTP delivery). 128 random bits after
    "=_" (which quoted-printable and base64 never write) cannot occur in a part by chance, and no one can
    aim at a boundary drawn at send time."""

    def message(self):
        msg = super().message()
        for part in msg.walk():
            if part.is_multipart() and not part.get_boundary():
                part.set_boundary(f"=_{secrets.token_hex(16)}")
        return msg


class _SMTP(_HandOverTracking, smtplib.SMTP):
    pass


class _SMTPSSL(_HandOverTracking, smtplib.SMTP_SSL):
    pass


class SMTPBackend(DjangoSMTPBackend):
    """Django's SMTP backend, whose connection says whether a failed message had been handed over. Used in
    place of DJANGO_SMTP; every EMAIL_* setting applies as usual."""

    @property
    def connection_class(self):
        return _SMTPSSL if self.use_ssl else _SMTP


# The errors that mean "this connection is gone": reconnect and carry on.
_DISCONNECTS = (smtplib.SMTPServerDisconnected, ConnectionError, ssl.SSLError, BrokenPipeError)


def _smtp_code(exc: Exception) -> int | None:
    return getattr(exc, "smtp_code", None)


class DjangoMailProvider(Provider):
    """OPTIONS (all optional):
    - BACKEND: a Django mail backend path (default settings.EMAIL_BACKEND; Django's SMTP backend is used
      through SMTPBackend above);
    - CONNECTION: keyword arguments for get_connection (host, port, username, password, use_tls, timeout);
    - FROM_EMAIL (default settings.DEFAULT_FROM_EMAIL), REPLY_TO (an address or a list);
    - RECONNECTS: how many times a batch may reconnect after a dropped connection (default 5).

    Content: subject, text, html (either or both; text is derived from html when absent). Headers
    (List-Unsubscribe, List-Unsubscribe-Post, ...) are passed as they are."""

    supports_idempotency = False  # SMTP has none; an ESP's message id only helps reconcile

    OPTION_KEYS = {"BACKEND", "CONNECTION", "FROM_EMAIL", "REPLY_TO", "RECONNECTS"}

    @classmethod
    def options_problems(cls, options: dict) -> list[str]:
        problems = []
        unknown = set(options) - cls.OPTION_KEYS
        if unknown:
            problems.append(
                f"unknown options {sorted(unknown)}; DjangoMailProvider takes {sorted(cls.OPTION_KEYS)}"
            )
        if "CONNECTION" in options and not isinstance(options["CONNECTION"], dict):
            problems.append("CONNECTION must be a dict of get_connection() arguments")
        reconnects = options.get("RECONNECTS", 5)
        if isinstance(reconnects, bool) or not isinstance(reconnects, int) or reconnects < 0:
            problems.append(f"RECONNECTS must be a whole number ≥ 0, not {reconnects!r}")
        return problems

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._connection = None

    # --- the connection ---------------------------------------------------------------------------

    @property
    def backend_path(self) -> str:
        path = self.options.get("BACKEND") or settings.EMAIL_BACKEND
        return "campaigns.providers.email.SMTPBackend" if path == DJANGO_SMTP else path

    @property
    def is_anymail(self) -> bool:
        return self.backend_path.startswith("anymail.")

    def open(self) -> None:
        if self._connection is None:
            connection = get_connection(
                self.backend_path, fail_silently=False, **self.options.get("CONNECTION", {})
            )
            connection.open()
            self._connection = connection

    def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            try:
                connection.close()
            except (smtplib.SMTPException, OSError):
                pass  # it was gone already

    def _reconnect(self) -> None:
        self.close()
        self.open()

    # --- a batch -------------------------------------------------------------------------------

    def send_batch(self, messages: list[OutgoingMessage], *, now: datetime) -> list[SendResult]:
        opened_here = self._connection is None
        results: list[SendResult] = []
        reconnects_left = self.options.get("RECONNECTS", 5)
        try:
            try:
                self.open()
            except Exception as exc:  # noqa: BLE001 - any failure to connect means: not now, for everyone
                if not messages:
                    return []
                first = self._unreachable(messages[0], exc)
                return [first, *not_attempted(messages[1:], because=first)]
            for index, message in enumerate(messages):
                tries = 0
                while True:
                    tries += 1
                    result, connection_gone = self._send_one(message)
                    if not connection_gone:
                        break
                    if reconnects_left <= 0:
                        result = result or _disconnected(message, "the server kept dropping the connection")
                        return [*results, result, *not_attempted(messages[index + 1 :], because=result)]
                    reconnects_left -= 1
                    try:
                        self._reconnect()
                    except Exception as exc:  # noqa: BLE001
                        down = self._unreachable(message, exc)
                        return [*results, result or down, *not_attempted(messages[index + 1 :], because=down)]
                    if result is not None:  # answered (unknown, retry): carry on with the next message
                        break
                    if tries >= 2:  # nothing handed over, twice: leave it for a later batch
                        result = _disconnected(message, "the connection dropped twice on this message")
                        break
                results.append(result)
                if result.cool_down:
                    return [*results, *not_attempted(messages[index + 1 :], because=result)]
            return results
        finally:
            if opened_here:
                self.close()

    def _unreachable(self, message: OutgoingMessage, exc: Exception) -> SendResult:
        code = _smtp_code(exc)
        return SendResult(
            message_id=message.message_id,
            outcome=Outcome.RETRY,
            error_code=str(code) if code else "connect_failed",
            error_detail=truncate_detail(f"cannot reach the mail server: {exc}"),
            cool_down=True,
        )

    def _build(self, message: OutgoingMessage) -> EmailMultiAlternatives:
        content = message.content or {}
        html = content.get("html") or ""
        text = content.get("text") or (strip_tags(html) if html else "")
        from_email = (
            content.get("from_email") or self.options.get("FROM_EMAIL") or settings.DEFAULT_FROM_EMAIL
        )
        reply_to = self.options.get("REPLY_TO") or None
        if isinstance(reply_to, str):
            reply_to = [reply_to]
        headers = dict(message.headers or {})
        if not any(k.lower() == "message-id" for k in headers):
            domain = from_email.rpartition("@")[2].strip("> ") or "localhost"
            headers["Message-ID"] = f"<{message.idempotency_key}.{self.code}@{domain}>"
        email = _Email(
            subject=content.get("subject", ""),
            body=text,
            from_email=from_email,
            to=[message.address],
            reply_to=reply_to,
            headers=headers,
            connection=self._connection,
        )
        if html:
            email.attach_alternative(html, "text/html")
        # Anymail sends this along; its tracking webhooks give it back, naming our message.
        email.metadata = {"message_id": str(message.message_id)}
        return email

    def _send_one(self, message: OutgoingMessage) -> tuple[SendResult | None, bool]:
        """(result, reconnect). A result of None with reconnect=True: the connection was gone and nothing
        was handed over, so the message may be sent again on a new connection."""
        mid = message.message_id

        def result(outcome, code="", detail="", **kw):
            return SendResult(
                message_id=mid,
                outcome=outcome,
                error_code=str(code),
                error_detail=truncate_detail(detail),
                **kw,
            )

        try:
            email = self._build(message)
        except (ValueError, TypeError) as exc:
            return result(Outcome.PERMANENT, "bad_message", f"cannot build the email: {exc}"), False
        try:
            self._connection.send_messages([email])
        except BadHeaderError as exc:  # found while the backend serialises it, before anything goes out
            return result(Outcome.PERMANENT, "bad_message", f"cannot build the email: {exc}"), False
        except smtplib.SMTPRecipientsRefused as exc:
            code, reply = next(iter(exc.recipients.values()), (None, b""))
            detail = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)
            if code and 400 <= code < 500:
                return result(Outcome.RETRY, code, f"recipient refused for now: {detail}"), code == 421
            return result(
                Outcome.PERMANENT,
                code or "refused",
                f"recipient refused: {detail}",
                address_problem="invalid",
            ), False
        except smtplib.SMTPResponseException as exc:  # sender refused, data error, ...
            code = exc.smtp_code
            detail = (
                exc.smtp_error.decode("utf-8", "replace")
                if isinstance(exc.smtp_error, bytes)
                else str(exc.smtp_error)
            )
            if code == 421:  # "closing the channel": smtplib already hung up
                return (None if not self._handed_over() else self._unknown(mid, f"{code} {detail}")), True
            if isinstance(exc, smtplib.SMTPSenderRefused):
                # The sender is refused for every message: this is the provider's configuration or standing.
                return result(Outcome.RETRY, code, f"sender refused: {detail}", cool_down=True), False
            if 400 <= code < 500:
                return result(Outcome.RETRY, code, detail), False
            return result(Outcome.PERMANENT, code, detail), False
        except _DISCONNECTS as exc:
            if self._handed_over():
                return self._unknown(mid, f"connection lost after the message was sent: {exc}"), True
            return None, True
        except TimeoutError as exc:
            if self._handed_over():
                return self._unknown(mid, f"no answer after the message was sent: {exc}"), True
            return result(Outcome.RETRY, "timeout", str(exc)), True
        except smtplib.SMTPException as exc:
            return result(Outcome.RETRY, "smtp_error", str(exc)), True
        except Exception as exc:  # noqa: BLE001 - an ESP backend's own errors, classified below
            return self._esp_error(message, exc), False
        return self._accepted(message, email), False

    def _handed_over(self) -> bool:
        smtp = getattr(self._connection, "connection", None)
        return bool(getattr(smtp, "handed_over", False))

    @staticmethod
    def _unknown(mid: int, detail: str) -> SendResult:
        return SendResult(
            message_id=mid,
            outcome=Outcome.UNKNOWN,
            error_code="no_answer",
            error_detail=truncate_detail(detail),
        )

    def _accepted(self, message: OutgoingMessage, email: EmailMultiAlternatives) -> SendResult:
        status = getattr(email, "anymail_status", None)
        if (
            status is None
        ):  # plain SMTP: the server's queue id is not reported by smtplib; the Message-ID is ours
            return SendResult(
                message_id=message.message_id,
                outcome=Outcome.SENT,
                provider_message_id=email.extra_headers["Message-ID"],
            )
        recipient = status.recipients.get(message.address) or next(iter(status.recipients.values()), None)
        esp_id = str(getattr(recipient, "message_id", None) or status.message_id or "")
        state = getattr(recipient, "status", None) or "unknown"
        if state in ("invalid", "rejected"):
            return SendResult(
                message_id=message.message_id,
                outcome=Outcome.PERMANENT,
                provider_message_id=esp_id,
                error_code=state,
                error_detail=f"the ESP refused the recipient ({state})",
                address_problem="invalid",
            )
        if state == "failed":
            return SendResult(
                message_id=message.message_id,
                outcome=Outcome.RETRY,
                provider_message_id=esp_id,
                error_code="failed",
                error_detail="the ESP could not send it",
            )
        return SendResult(message_id=message.message_id, outcome=Outcome.SENT, provider_message_id=esp_id)

    def _esp_error(self, message: OutgoingMessage, exc: Exception) -> SendResult:
        mid = message.message_id
        try:
            from anymail.exceptions import (
                AnymailAPIError,
                AnymailError,
                AnymailInvalidAddress,
                AnymailRecipientsRefused,
            )
        except ImportError:  # pragma: no cover - anymail is locked
            AnymailError = AnymailAPIError = AnymailInvalidAddress = AnymailRecipientsRefused = ()  # noqa: N806
        detail = truncate_detail(exc)
        if isinstance(exc, AnymailRecipientsRefused | AnymailInvalidAddress):
            return SendResult(
                message_id=mid,
                outcome=Outcome.PERMANENT,
                error_code="refused",
                error_detail=detail,
                address_problem="invalid",
            )
        if isinstance(exc, AnymailAPIError):
            status = exc.status_code
            if status is None:
                cause = exc.__cause__
                try:
                    import requests

                    if isinstance(cause, requests.Timeout) and not isinstance(cause, requests.ConnectTimeout):
                        return self._unknown(mid, f"the ESP did not answer in time: {detail}")
                except ImportError:  # pragma: no cover
                    pass
                return SendResult(
                    message_id=mid, outcome=Outcome.RETRY, error_code="connection", error_detail=detail
                )
            retry_after = _retry_after_of(exc.response)
            if status == 429 or status >= 500:
                return SendResult(
                    message_id=mid,
                    outcome=Outcome.RETRY,
                    error_code=str(status),
                    error_detail=detail,
                    retry_after=retry_after,
                    cool_down=status == 429 or status == 503,
                )
            return SendResult(
                message_id=mid, outcome=Outcome.PERMANENT, error_code=str(status), error_detail=detail
            )
        if isinstance(exc, AnymailError):  # unsupported feature, serialisation: the message itself is wrong
            return SendResult(
                message_id=mid, outcome=Outcome.PERMANENT, error_code="esp_refused", error_detail=detail
            )
        if isinstance(exc, OSError):
            return SendResult(
                message_id=mid, outcome=Outcome.RETRY, error_code="os_error", error_detail=detail
            )
        logger.exception("unexpected error from mail backend %s", self.backend_path)
        return SendResult(
            message_id=mid, outcome=Outcome.RETRY, error_code=type(exc).__name__, error_detail=detail
        )


def _disconnected(message: OutgoingMessage, detail: str) -> SendResult:
    return SendResult(
        message_id=message.message_id, outcome=Outcome.RETRY, error_code="disconnected", error_detail=detail
    )


def _retry_after_of(response) -> float | None:
    value = getattr(response, "headers", {}).get("Retry-After") if response is not None else None
    try:
        return max(0.0, float(value)) if value is not None else None
    except (TypeError, ValueError):
        return None
