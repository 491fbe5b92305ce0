"""SMTP delivery through the email provider to a real SMTP server on loopback (aiosmtpd), with connection
reuse (one connection per batch) and, for the ratio, without (a connection per message).

    flock /tmp/bench.lock .venv/bin/python bench/bench_smtp_delivery.py             # about a minute
    flock /tmp/bench.lock .venv/bin/python bench/bench_smtp_delivery.py --messages 20000 --runs 5

Target (issue 14): >= 500 messages/s with connection reuse.

What it does: starts aiosmtpd in its own process (so the server's event loop does not share the client's
GIL; on the 2-core machine they share the cores), then, --runs times, sends --messages email-sized
messages (subject, a ~2 KB HTML part and its text part, List-Unsubscribe headers, Chinese text) through
`DjangoMailProvider.send_batch` in batches of --batch, one SMTP connection per batch, and checks that the
server received every one. Then the same without reuse (each message its own connection) on
--no-reuse-messages messages. Prints the median messages/s of each, and their ratio. No database.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
os.environ.setdefault("DJANGO_ENV", "test")


def parse_args():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=10_000, help="messages per run with reuse")
    parser.add_argument("--batch", type=int, default=500, help="messages per connection (a dispatch batch)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-reuse-messages", type=int, default=1_000, help="messages per run without reuse")
    parser.add_argument(
        "--clients",
        type=int,
        nargs="+",
        default=[1, 2],
        help="client processes sending at once (dispatch workers)",
    )
    return parser.parse_args()


def _serve(port: int, counter, ready) -> None:
    import logging

    from aiosmtpd.controller import Controller

    logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd logs every command at INFO

    class Counting:
        async def handle_DATA(self, server, session, envelope):
            with counter.get_lock():
                counter.value += 1
            return "250 2.0.0 queued"

    controller = Controller(Counting(), hostname="127.0.0.1", port=port)
    controller.start()
    ready.set()
    try:
        while True:
            time.sleep(3600)
    finally:
        controller.stop()


def _messages(start: int, count: int):
    from campaigns.providers.base import OutgoingMessage

    # An email template has lines (as staff write them): a single 2 KB line would be quoted-printable.
    paragraph = "<p>亲爱的会员，您的积分即将到期。Dear member, your points expire soon.</p>\n" * 20
    return [
        OutgoingMessage(
            message_id=n,
            idempotency_key=f"bench-{n}",
            channel="email",
            address=f"member{n}@example.com",
            content={
                "subject": f"您的 {n} 积分即将到期",
                "html": f"<html><body><h1>你好 {n}</h1>{paragraph}</body></html>",
                "text": f"你好 {n}\n" + "亲爱的会员，您的积分即将到期。\n" * 20,
            },
            headers={
                "List-Unsubscribe": f"<https://shop.example.com/u/{n}>",
                "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
            },
            language="zh-hans",
        )
        for n in range(start, start + count)
    ]


def _client(start: int, count: int, batch: int, barrier, queue) -> None:
    from campaigns.providers.base import Outcome
    from campaigns.providers.email import DjangoMailProvider

    provider = DjangoMailProvider(code="email", channel="email", options={})
    messages = _messages(start, count)
    now = datetime.now(UTC)
    barrier.wait(60)
    cpu, started = time.process_time(), time.time()
    sent = 0
    for i in range(0, count, batch):
        results = provider.send_batch(messages[i : i + batch], now=now)
        sent += sum(r.outcome == Outcome.SENT for r in results)
    queue.put((sent, started, time.time(), time.process_time() - cpu))


def main() -> int:
    args = parse_args()
    import django

    django.setup()
    from django.conf import settings

    from tests.campaigns.smtp_server import free_port

    port = free_port()
    spawn = multiprocessing.get_context("spawn")
    counter, ready = spawn.Value("i", 0), spawn.Event()
    server = spawn.Process(target=_serve, args=(port, counter, ready), daemon=True)
    server.start()
    if not ready.wait(30):
        print("the SMTP server did not start", file=sys.stderr)
        return 1
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_TIMEOUT = "127.0.0.1", port, 30
    print(f"aiosmtpd on 127.0.0.1:{port} in its own process; load {os.getloadavg()[0]:.2f}", flush=True)

    def server_cpu() -> float:
        fields = Path(f"/proc/{server.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def run(count: int, batch: int, clients: int) -> tuple[float, float, float]:
        """messages/s, client CPU ms and server CPU ms a message, `clients` processes at once (as that many
        dispatch workers would), each with its own connection per batch."""
        fork = multiprocessing.get_context("fork")
        barrier, queue = fork.Barrier(clients), fork.Queue()
        share = count // clients
        procs = [
            fork.Process(target=_client, args=(1 + k * share, share, batch, barrier, queue))
            for k in range(clients)
        ]
        before, server_before = counter.value, server_cpu()
        for p in procs:
            p.start()
        answers = [queue.get(timeout=600) for _ in procs]
        for p in procs:
            p.join(60)
        elapsed = max(a[2] for a in answers) - min(a[1] for a in answers)
        deadline = time.monotonic() + 10
        while counter.value - before < share * clients and time.monotonic() < deadline:
            time.sleep(0.01)
        sent, received = sum(a[0] for a in answers), counter.value - before
        if sent != share * clients or received != sent:
            raise SystemExit(f"sent {sent}, server received {received}, of {share * clients}")
        client_ms = sum(a[3] for a in answers) * 1000 / sent
        server_ms = (server_cpu() - server_before) * 1000 / sent
        return sent / elapsed, client_ms, server_ms

    figures = {}
    try:
        run(min(500, args.messages), args.batch, 1)  # warm-up
        cases = [
            (f"reuse, {k} client{'s' if k > 1 else ''}", args.messages, args.batch, k) for k in args.clients
        ]
        cases.append(("no reuse, 1 client", args.no_reuse_messages, 1, 1))
        for name, count, batch, clients in cases:
            rows = []
            for n in range(args.runs):
                rate, client_ms, server_ms = run(count, batch, clients)
                rows.append((rate, client_ms, server_ms))
                print(
                    f"{name:>20} run {n + 1}: {count} messages, {batch} a connection: {rate:,.0f} messages/s;"
                    f" CPU a message: client {client_ms:.2f} ms, server {server_ms:.2f} ms;"
                    f" load {os.getloadavg()[0]:.2f}",
                    flush=True,
                )
            figures[name] = tuple(statistics.median(r[i] for r in rows) for i in range(3))
    finally:
        server.terminate()
    print("\nmedians (target >= 500 messages/s with reuse):")
    for name, (rate, client_ms, server_ms) in figures.items():
        print(
            f"  {name:>20}: {rate:,.0f} messages/s; CPU a message client {client_ms:.2f} ms + server {server_ms:.2f} ms"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
