"""PostgreSQL's CPU for each write the outbox makes, measured on the backend itself: enqueue, claim, hand,
record (status, history and the `message_sent` events), one process, no screen or render.

    flock /tmp/bench.lock env DJANGO_ENV=test PGPORT=5505 .venv/bin/python bench/bench_outbox_writes.py \
        --messages 100000 [--hand] [--fillfactor 70] [--no-fk]

What it does: creates and migrates `mo_bench_outbox_writes`, seeds --messages customers with SQL and one
email template, then
1. enqueues one message a customer through `messages_enqueue` (one call);
2. in batches of --batch: `messages_claim`, then (with --hand, the path of a provider that ignores repeats)
   the hand UPDATE, then the record of every message as sent with its event, as `batch_process` does
   after a deduping provider answered;
and prints, for each step, the backend's CPU seconds (utime + stime of the server process serving this
connection, read from /proc: the server must run on this machine), per message, beside the wall time.
--fillfactor sets campaigns_message's fillfactor before the enqueue (the table is empty, so every page
is written with it); --no-fk drops the foreign keys of campaigns_message (customer, template, template
version) first, to see what their checks cost. Neither changes the schema of any other database.
Drops the database unless --keep-db.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_loyalty_common import database_create, database_drop, django_setup, sql  # noqa: E402
from bench_render import CONTENT  # noqa: E402

DB_NAME = "mo_bench_outbox_writes"
BENCH_NOW = datetime(2026, 12, 9, 7, 0, tzinfo=UTC)


class BackendClock:
    """CPU seconds of the PostgreSQL backend behind Django's connection."""

    def __init__(self):
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            self.pid = cursor.fetchone()[0]
        self.tick = os.sysconf("SC_CLK_TCK")

    def cpu(self) -> float:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / self.tick


class Step:
    def __init__(self, name: str):
        self.name, self.backend, self.python, self.wall = name, 0.0, 0.0, 0.0

    def timed(self, clock: BackendClock, call, *args, **kwargs):
        b, p, w = clock.cpu(), time.process_time(), time.perf_counter()
        result = call(*args, **kwargs)
        self.backend += clock.cpu() - b
        self.python += time.process_time() - p
        self.wall += time.perf_counter() - w
        return result

    def line(self, n: int) -> str:
        return (
            f"{self.name:<8} backend {self.backend:6.2f}s ({self.backend / n * 1e6:5.1f} µs a message)  "
            f"python {self.python:6.2f}s ({self.python / n * 1e6:5.1f} µs)  wall {self.wall:6.2f}s"
        )


def seed(n: int):
    from campaigns.models import MessageTemplate
    from campaigns.services.templates import template_save

    sql(
        """INSERT INTO crm_customer (external_id, name, email, phone, gender, city, region, time_zone,
              acquisition_channel, utm_source, utm_medium, utm_campaign, language, preferred_channel,
              created_at, updated_at)
           SELECT 'W' || i, '顾客' || i, 'w' || i || '@example.cn', '139' || lpad(i::text, 8, '0'), '',
              '上海', '', 'Asia/Shanghai', '', '', '', '', 'zh-hans', '', now(), now()
           FROM generate_series(1, %s) i""",
        [n],
    )
    sql("ANALYZE")
    template = template_save(template=MessageTemplate(code="w", name="w", channel="email"), content=CONTENT)
    return template.template.pk, template.template.current_version_id


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--hand", action="store_true", help="the hand UPDATE before the send, as before")
    parser.add_argument("--fillfactor", type=int, default=0)
    parser.add_argument("--no-fk", action="store_true")
    parser.add_argument("--keep-db", action="store_true")
    args = parser.parse_args()

    database_create(DB_NAME)
    django_setup(DB_NAME)
    from django.db import connection

    from campaigns.models import MessageStatus
    from campaigns.services import outbox
    from campaigns.services.outbox import MessageRequest, messages_enqueue

    template_id, version_id = seed(args.messages)
    if args.fillfactor:
        sql(f"ALTER TABLE campaigns_message SET (fillfactor = {int(args.fillfactor)})")
    if args.no_fk:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT conname FROM pg_constraint WHERE conrelid = 'campaigns_message'::regclass AND contype = 'f'"
            )
            for (name,) in cursor.fetchall():
                cursor.execute(f'ALTER TABLE campaigns_message DROP CONSTRAINT "{name}"')
    clock = BackendClock()
    due = BENCH_NOW - timedelta(minutes=1)
    with connection.cursor() as cursor:
        cursor.execute("SELECT id FROM crm_customer ORDER BY id")
        ids = [row[0] for row in cursor.fetchall()]
    requests = [
        MessageRequest(
            customer_id=cid,
            channel="email",
            template_id=template_id,
            source_kind="campaign",
            source_ref="double11",
            occurrence="1",
            source_label="双11大促",
            priority=10,
            data={"order_id": f"TM{cid:09d}"},
            due_at=due,
        )
        for cid in ids
    ]
    enqueue = Step("enqueue")
    created = enqueue.timed(clock, lambda: messages_enqueue(rows=requests, now=BENCH_NOW)).created
    sql("VACUUM ANALYZE campaigns_message")
    clock = BackendClock()  # VACUUM may have run on a new connection

    claim_step, hand_step, record_step = Step("claim"), Step("hand"), Step("record")
    done = 0
    while True:
        claim = claim_step.timed(clock, lambda: outbox.messages_claim(now=BENCH_NOW, batch_size=args.batch))
        if not claim.messages:
            break
        items = []
        for m in claim.messages:
            m.address, m.subject, m.links, m.language = (
                f"w{m.customer_id}@example.cn",
                "主题",
                ["https://x.cn/a"],
                "zh-hans",
            )
            m.template_version_id = version_id
            items.append((m, None))
        if args.hand:
            handed = hand_step.timed(clock, outbox._hand, items, "sink", claim, BENCH_NOW)
            assert len(handed) == len(items)
        outcomes = []
        for m, _ in items:
            m.provider = "sink"
            o = outbox._Outcome(
                m,
                MessageStatus.SENT,
                provider_message_id=f"sink-{m.pk}",
                sent=True,
                final=True,
                event="message_sent",
            )
            o.handed_here = not args.hand
            outcomes.append(o)
        stats = outbox.BatchStats()
        record_step.timed(clock, outbox._record, outcomes, claim, BENCH_NOW, stats)
        assert stats.sent == len(outcomes), stats
        done += len(outcomes)

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM campaigns_message WHERE status = 'sent' AND handed_at IS NOT NULL"
        )
        sent = cursor.fetchone()[0]
        cursor.execute(
            "SELECT n_tup_upd, n_tup_hot_upd, pg_relation_size('campaigns_message') / 8192 FROM pg_stat_user_tables "
            "WHERE relname = 'campaigns_message'"
        )
        updates, hot, pages = cursor.fetchone()
    print(
        f"{created:,} enqueued, {done:,} claimed and recorded ({sent:,} sent); hand {'on' if args.hand else 'off'}, "
        f"fillfactor {args.fillfactor or 100}, foreign keys {'dropped' if args.no_fk else 'kept'}; "
        f"load {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    print(enqueue.line(created))
    for step in (claim_step, hand_step, record_step):
        if step.wall:
            print(step.line(done))
    total = claim_step.backend + hand_step.backend + record_step.backend
    print(
        f"dispatch writes: backend {total:.2f}s = {total / done * 1e6:.1f} µs a message; "
        f"{updates:,} row updates, {hot:,} HOT; table {pages:,} pages",
        flush=True,
    )
    ok = created == done == sent == args.messages
    if not args.keep_db:
        database_drop(DB_NAME)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
