"""The development provider `make run` sends to: each message is written to the log (and so to the
terminal), readably, Chinese as Chinese (never \\u escapes). It accepts everything."""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime

from campaigns.providers.base import Outcome, OutgoingMessage, Provider, SendResult

logger = logging.getLogger("campaigns.providers.console")

# The fields worth a line of their own, in the order a reader looks for them; the rest follow as JSON.
_LEADING = ("subject", "title", "text", "body", "template_id", "page", "url")


def message_as_text(message: OutgoingMessage) -> str:
    lines = [f"[{message.channel}] #{message.message_id} to {message.address} ({message.language or '-'})"]
    content = dict(message.content or {})
    for key in _LEADING:
        if key in content:
            lines.append(f"  {key}: {content.pop(key)}")
    html = content.pop("html", None)
    for key, value in content.items():
        lines.append(f"  {key}: {json.dumps(value, ensure_ascii=False, default=str)}")
    if html:
        lines.append(f"  html: {len(html)} characters")
    for name, value in (message.headers or {}).items():
        lines.append(f"  header {name}: {value}")
    return "\n".join(lines)


class ConsoleProvider(Provider):
    """OPTIONS: {"STREAM": "stdout"} also prints each message to standard output (the log alone by
    default)."""

    supports_idempotency = True  # nothing leaves the process: a resend is only a second log line

    @classmethod
    def options_problems(cls, options: dict) -> list[str]:
        unknown = set(options) - {"STREAM"}
        problems = [f"unknown options {sorted(unknown)}; ConsoleProvider takes STREAM"] if unknown else []
        if options.get("STREAM") not in (None, "stdout", "stderr"):
            problems.append(f"STREAM must be 'stdout' or 'stderr', not {options['STREAM']!r}")
        return problems

    def send_batch(self, messages: list[OutgoingMessage], *, now: datetime) -> list[SendResult]:
        stream = {"stdout": sys.stdout, "stderr": sys.stderr}.get(self.options.get("STREAM"))
        results = []
        for message in messages:
            text = message_as_text(message)
            logger.info("message %s\n%s", message.message_id, text)
            if stream is not None:
                print(text, file=stream, flush=True)
            results.append(
                SendResult(
                    message_id=message.message_id,
                    outcome=Outcome.SENT,
                    provider_message_id=f"console-{message.idempotency_key}",
                )
            )
        return results
