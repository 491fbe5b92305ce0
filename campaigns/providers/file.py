"""Appends each message as one JSON line to a file, for development and for looking at what would have
gone out (`tail -f var/messages.jsonl | jq`).

Not for several hosts: the file is local to the machine that writes it, so a message sent by a worker on
another host lands in that host's file. Processes on one host may share it (each batch is one locked
append)."""

from __future__ import annotations

import fcntl
import json
import os
from datetime import datetime
from pathlib import Path

from django.conf import settings

from campaigns.providers.base import Outcome, OutgoingMessage, Provider, SendResult


def default_path() -> Path:
    return Path(getattr(settings, "VAR_DIR", Path.cwd() / "var")) / "messages.jsonl"


class FileProvider(Provider):
    """OPTIONS: {"PATH": "/some/file.jsonl"} (default var/messages.jsonl)."""

    supports_idempotency = True  # each line carries the idempotency key: a resend is visible as such

    @classmethod
    def options_problems(cls, options: dict) -> list[str]:
        unknown = set(options) - {"PATH"}
        problems = [f"unknown options {sorted(unknown)}; FileProvider takes PATH"] if unknown else []
        if "PATH" in options and not isinstance(options["PATH"], str | os.PathLike):
            problems.append(f"PATH must be a file path, not {options['PATH']!r}")
        return problems

    @property
    def path(self) -> Path:
        return Path(self.options.get("PATH") or default_path())

    def send_batch(self, messages: list[OutgoingMessage], *, now: datetime) -> list[SendResult]:
        lines = []
        for m in messages:
            record = {
                "at": now.isoformat(),
                "message_id": m.message_id,
                "idempotency_key": m.idempotency_key,
                "channel": m.channel,
                "address": m.address,
                "language": m.language,
                "content": m.content,
                "headers": m.headers,
            }
            lines.append(json.dumps(record, ensure_ascii=False, default=str) + "\n")
        path = self.path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("a", encoding="utf-8") as f:
                fcntl.flock(f, fcntl.LOCK_EX)  # one batch's lines stay together between processes
                f.write("".join(lines))
                f.flush()
        except OSError as exc:
            return [
                SendResult(
                    message_id=m.message_id,
                    outcome=Outcome.RETRY,
                    error_code="file_error",
                    error_detail=f"{path}: {exc}",
                )
                for m in messages
            ]
        return [
            SendResult(message_id=m.message_id, outcome=Outcome.SENT, provider_message_id=m.idempotency_key)
            for m in messages
        ]
