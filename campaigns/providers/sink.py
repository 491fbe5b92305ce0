"""An in-process sink provider: accepts every message and keeps it, for tests and the benchmark.

It is the far side of the wire standing in for a real provider, so the choices it offers are a real
provider's behaviours a test needs to provoke, all set in OPTIONS:

- `supports_idempotency` (default True): a message whose idempotency key it has already accepted is
  accepted again without being delivered twice (the WeChat client_msg_id behaviour); False delivers
  whatever it is given, as an SMS gateway without client references would.
- `record_path`: deliveries are appended to this file, one JSON line each, under an exclusive lock, and
  the dedupe reads it: that shares one "provider" between worker processes in a test. Without it the sink
  keeps its deliveries in memory (`SinkProvider.delivered`, per process): the benchmark's mode.
- `fail_while_path`: while this file exists, every message is answered "retry later" (a provider down).
- `stall_after` with `stall_marker`: after delivering that many messages in this process, it writes the
  marker file and hangs mid-batch (until the test kills the process).

Local files are fine here: this is a test double for the remote side; nothing on the real send path
uses one."""

from __future__ import annotations

import fcntl
import json
import os
import threading
import time
from datetime import datetime

from campaigns.providers.base import Outcome, OutgoingMessage, Provider, SendResult


class SinkProvider(Provider):
    # Per process, for in-memory mode: idempotency key -> delivered message.
    delivered: dict[str, OutgoingMessage] = {}
    deliveries = 0  # every delivery, duplicates included (supports_idempotency=False)
    _lock = threading.Lock()
    _delivered_here = 0

    def __init__(self, *, code: str = "sink", channel: str = "", options: dict | None = None):
        super().__init__(code=code, channel=channel, options=options)
        self.supports_idempotency = bool(self.options.get("supports_idempotency", True))

    @classmethod
    def reset(cls) -> None:
        with cls._lock:
            cls.delivered = {}
            cls.deliveries = 0
            cls._delivered_here = 0

    def send_batch(self, messages: list[OutgoingMessage], *, now: datetime) -> list[SendResult]:
        fail_while = self.options.get("fail_while_path")
        if fail_while and os.path.exists(fail_while):
            return [
                SendResult(
                    message_id=m.message_id, outcome=Outcome.RETRY, error_code="503", error_detail="down"
                )
                for m in messages
            ]
        if self.options.get("record_path"):
            return self._send_recorded(messages)
        results = []
        with self._lock:
            for m in messages:
                if not (self.supports_idempotency and m.idempotency_key in SinkProvider.delivered):
                    SinkProvider.deliveries += 1
                SinkProvider.delivered[m.idempotency_key] = m
                results.append(
                    SendResult(m.message_id, Outcome.SENT, provider_message_id=f"sink-{m.idempotency_key}")
                )
        return results

    def _send_recorded(self, messages: list[OutgoingMessage]) -> list[SendResult]:
        path = self.options["record_path"]
        stall_after = self.options.get("stall_after")
        results = []
        with open(path, "a+", encoding="utf-8") as f:
            for m in messages:
                if stall_after is not None and SinkProvider._delivered_here >= int(stall_after):
                    with open(self.options["stall_marker"], "w") as marker:
                        marker.write(str(os.getpid()))
                    while True:  # hang with the batch half delivered, until killed
                        time.sleep(1)
                fcntl.flock(f, fcntl.LOCK_EX)
                try:
                    f.seek(0)
                    known = (
                        {json.loads(line)["key"] for line in f if line.strip()}
                        if self.supports_idempotency
                        else set()
                    )
                    deduped = m.idempotency_key in known
                    if not deduped:
                        f.write(
                            json.dumps({"key": m.idempotency_key, "address": m.address, "pid": os.getpid()})
                            + "\n"
                        )
                        f.flush()
                        SinkProvider._delivered_here += 1
                finally:
                    fcntl.flock(f, fcntl.LOCK_UN)
                results.append(
                    SendResult(m.message_id, Outcome.SENT, provider_message_id=f"sink-{m.idempotency_key}")
                )
        return results
