"""A real SMTP server (aiosmtpd) on loopback for the email provider's tests and bench, with the ways real
servers misbehave: refusing recipients, hanging up after N messages, hanging up in the middle of DATA."""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass, field
from email import message_from_bytes, policy

from aiosmtpd.controller import Controller


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    content: bytes

    @property
    def message(self):
        return message_from_bytes(self.content, policy=policy.default)


@dataclass
class Handler:
    """drop_after: hang up (no reply) on the MAIL command that follows the Nth accepted message, once per
    connection. drop_in_data: hang up instead of answering the DATA of the message to this address (it
    was complete: the client cannot know whether it was accepted)."""

    drop_after: int | None = None
    drop_in_data: set[str] = field(default_factory=set)
    received: list[Received] = field(default_factory=list)
    connections: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        with self.lock:
            self.connections += 1
        session.accepted_here = 0
        session.host_name = hostname
        return responses

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        if self.drop_after is not None and getattr(session, "accepted_here", 0) >= self.drop_after:
            server.transport.close()
            return "421 closing"  # never reaches the client: the transport is closed
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        local = address.split("@")[0]
        if local.startswith("nobody"):
            return f"550 5.1.1 <{address}>: no such user"
        if local.startswith("busy"):
            return "450 4.2.1 mailbox busy, try later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if set(envelope.rcpt_tos) & self.drop_in_data:
            server.transport.close()
            return "421 closing"
        if any(r.startswith("spam") for r in envelope.rcpt_tos):
            return "554 5.7.1 message refused as spam"
        with self.lock:
            self.received.append(
                Received(envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content)
            )
        session.accepted_here = getattr(session, "accepted_here", 0) + 1
        return "250 2.0.0 queued"


class SMTPServer:
    def __init__(self, handler: Handler | None = None):
        self.handler = handler or Handler()
        self.port = free_port()
        self.controller = Controller(self.handler, hostname="127.0.0.1", port=self.port)

    def __enter__(self):
        self.controller.start()
        return self

    def __exit__(self, *exc):
        self.controller.stop()
        return False

    @property
    def received(self) -> list[Received]:
        return self.handler.received
