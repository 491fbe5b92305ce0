"""Shared set-up of the loyalty benchmarks (and of the messaging ones, which pass their own database name):
a private database, `mo_bench_loyalty` by default (created, migrated, dropped), Django configured against
it, and SQL builders for customers, orders and lots at scale."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DB_NAME = "mo_bench_loyalty"
sys.path.insert(0, str(ROOT))


def server_url() -> str:
    """DATABASE_URL's server, else the one PGHOST/PGPORT/PGUSER name (default 127.0.0.1:5432, postgres)."""
    if os.environ.get("DATABASE_URL"):
        return os.environ["DATABASE_URL"]
    host = os.environ.get("PGHOST", "127.0.0.1")
    port = os.environ.get("PGPORT", "5432")
    user = os.environ.get("PGUSER", "postgres")
    return f"postgres://{user}@{host}:{port}/postgres"


def bench_url(db_name: str = DB_NAME) -> str:
    parts = urllib.parse.urlsplit(server_url())
    return urllib.parse.urlunsplit(parts._replace(path=f"/{db_name}"))


def _admin(sql: str) -> None:
    import psycopg

    parts = urllib.parse.urlsplit(server_url())
    with psycopg.connect(urllib.parse.urlunsplit(parts._replace(path="/postgres")), autocommit=True) as conn:
        conn.execute(sql)


def database_create(db_name: str = DB_NAME) -> None:
    _admin(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')
    _admin(f'CREATE DATABASE "{db_name}"')
    env = {**os.environ, "DATABASE_URL": bench_url(db_name), "DJANGO_ENV": "test"}
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "migrate", "-v", "0"], cwd=ROOT, env=env, check=True
    )
    print(f"database {db_name} migrated in {time.perf_counter() - started:.1f}s", flush=True)


def database_drop(db_name: str = DB_NAME) -> None:
    from django.db import connections

    connections.close_all()
    _admin(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')


def django_setup(db_name: str = DB_NAME) -> None:
    os.environ["DATABASE_URL"] = bench_url(db_name)
    os.environ.setdefault("DJANGO_ENV", "test")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    import django

    django.setup()


def cluster_cpu_seconds() -> float:
    """CPU seconds (user + system) the whole PostgreSQL server has used so far: the postmaster's own, its
    reaped children's (cutime/cstime: backends that ended, as Django's CONN_MAX_AGE ends them every 60 s)
    and its live children's. The server must run on this machine and serve only this bench meanwhile."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SHOW data_directory")
        data_directory = cursor.fetchone()[0]
    postmaster = int(Path(data_directory, "postmaster.pid").read_text().split()[0])
    tick = os.sysconf("SC_CLK_TCK")

    def fields(pid: int) -> list[str]:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()

    own = fields(postmaster)
    total = sum(int(v) for v in own[11:15])  # utime, stime, cutime, cstime
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                f = fields(int(entry.name))
            except OSError:
                continue
            if int(f[1]) == postmaster:  # ppid
                total += int(f[11]) + int(f[12])
    return total / tick


def sql(statement: str, params=None) -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(statement, params or [])


def programme_seed(*, return_window_days: int = 15, expiry_policy: str = "end_of_following_year") -> None:
    """The demo programme: four tiers by rolling spend, 1 point per CNY, formula ×2, Double 11."""
    from datetime import datetime
    from decimal import Decimal
    from zoneinfo import ZoneInfo

    from loyalty.models import EarnRule, ProgrammeSettings, Promotion, Tier

    ProgrammeSettings.objects.update_or_create(
        pk=1, defaults={"return_window_days": return_window_days, "expiry_policy": expiry_policy}
    )
    for rank, (code, spend, mult) in enumerate(
        [("member", "0", "1"), ("silver", "2000", "1.2"), ("gold", "8000", "1.5"), ("platinum", "20000", "2")]
    ):
        Tier.objects.create(
            code=code,
            name=code.title(),
            rank=rank,
            threshold_spend=Decimal(spend),
            earn_multiplier=Decimal(mult),
        )
    EarnRule.objects.create(name="1 point per CNY", kind="base", points_per_unit=Decimal("1"))
    EarnRule.objects.create(name="formula x2", kind="category", category="formula", multiplier=Decimal("2"))
    shanghai = ZoneInfo("Asia/Shanghai")
    Promotion.objects.create(
        name="Double 11",
        multiplier=Decimal("2"),
        starts_at=datetime(2026, 11, 11, tzinfo=shanghai),
        ends_at=datetime(2026, 11, 12, tzinfo=shanghai),
    )


def customers_seed(count: int) -> None:
    sql(
        """INSERT INTO crm_customer (external_id, name, email, phone, gender, city, region, time_zone,
                                     acquisition_channel, utm_source, utm_medium, utm_campaign, created_at, updated_at)
           SELECT 'B' || g, 'Bench ' || g, '', '', '', '', '', 'Asia/Shanghai', '', '', '', '', now(), now()
             FROM generate_series(1, %s) g""",
        [count],
    )


def orders_seed(*, customers: int, orders: int, lines_per_order: int = 2, with_events: bool = True) -> None:
    """`orders` paid orders over the last 60 days spread over the customers, each with its lines and its
    order_placed event (as crm writes them: named by external id)."""
    sql(
        """INSERT INTO crm_order (external_id, customer_id, channel, store, placed_at, currency, total,
                                  refunded_amount, status, fingerprint, created_at)
           SELECT 'BO' || g, (SELECT min(id) FROM crm_customer) + (g * 7919) %% %(customers)s, 'tmall', '',
                  now() - ((g %% 60) || ' days')::interval - ((g %% 86400) || ' seconds')::interval, 'CNY',
                  (50 + (g * 37) %% 900) * %(lines)s, 0, 'paid', md5(g::text), now()
             FROM generate_series(1, %(orders)s) g""",
        {"customers": customers, "orders": orders, "lines": lines_per_order},
    )
    sql(
        """INSERT INTO crm_orderline (order_id, line_no, sku, name, category, quantity, unit_price, line_total,
                                      refunded_quantity)
           SELECT o.id, n, 'SKU-' || (o.id %% 500), 'item',
                  CASE WHEN (o.id + n) %% 4 = 0 THEN 'formula' ELSE 'baby' END,
                  1, o.total / %(lines)s, o.total / %(lines)s, 0
             FROM crm_order o CROSS JOIN generate_series(1, %(lines)s) n""",
        {"lines": lines_per_order},
    )
    if with_events:
        sql(
            """INSERT INTO crm_event (customer_id, type, properties, occurred_at, channel, received_at)
               SELECT customer_id, 'order_placed',
                      jsonb_build_object('order_external_id', external_id, 'total', total::text, 'currency', 'CNY'),
                      placed_at, 'tmall', now() - interval '1 minute'
                 FROM crm_order ORDER BY id"""
        )
    sql("ANALYZE")


def percentile(values: list[float], p: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def median(values):
    return statistics.median(values) if values else 0.0


def audit_or_die() -> None:
    from loyalty.services.audit import ledger_audit

    breaches = ledger_audit(max_per_check=20)
    if breaches:
        for b in breaches:
            print("AUDIT BREACH:", b)
        raise SystemExit(1)
    print("loyalty_audit: all checks passed", flush=True)


def accounts_seed() -> None:
    """One loyalty account per customer, at the entry tier."""
    sql(
        """INSERT INTO loyalty_loyaltyaccount (customer_id, status, tier_id, tier_since, available, pending, owed,
                                               created_at)
           SELECT c.id, 'active', (SELECT id FROM loyalty_tier ORDER BY rank LIMIT 1), now(), 0, 0, 0, now()
             FROM crm_customer c ORDER BY c.id"""
    )


def lots_seed(
    *,
    account_ids: list[int] | None,
    lots: int,
    points: int,
    expires_in: str,
    earned_ago: str = "400 days",
    tag: str = "a",
):
    """`lots` available lots of `points` per account (all accounts when account_ids is None), each with its
    earn entry, written set-based; the accounts' cached balances are then recomputed from the entries."""
    where = "" if account_ids is None else "WHERE a.id = ANY(%(ids)s)"
    sql(
        f"""WITH e AS (
                INSERT INTO loyalty_ledgerentry (account_id, kind, points, pending_delta, owed_delta, idempotency_key,
                                                 payload_hash, reason, reference, parts, occurred_at, created_at)
                SELECT a.id, 'adjust', %(points)s, 0, 0, 'seed:' || %(tag)s || ':' || a.id || ':' || n, '', 'seed', '', '{{}}'::jsonb,
                       now() - %(earned_ago)s::interval + (n || ' minutes')::interval, now()
                  FROM loyalty_loyaltyaccount a CROSS JOIN generate_series(1, %(lots)s) n {where}
             RETURNING id, account_id, occurred_at
            )
            INSERT INTO loyalty_pointlot (account_id, earn_entry_id, state, points, remaining, consumed, expired,
                                          earned_at, available_at, expires_at)
            SELECT account_id, id, 'available', %(points)s, %(points)s, 0, 0, occurred_at, occurred_at,
                   now() + %(expires_in)s::interval + (id %% 1000 || ' seconds')::interval
              FROM e""",
        {
            "ids": account_ids,
            "lots": lots,
            "points": points,
            "expires_in": expires_in,
            "earned_ago": earned_ago,
            "tag": tag,
        },
    )
    sql(
        f"""UPDATE loyalty_loyaltyaccount a SET available = s.points
              FROM (SELECT account_id, SUM(points) AS points FROM loyalty_ledgerentry GROUP BY account_id) s
             WHERE a.id = s.account_id {"" if account_ids is None else "AND a.id = ANY(%(ids)s)"}""",
        {"ids": account_ids},
    )
    sql("ANALYZE")


def backend_cpu_seconds() -> float:
    """CPU seconds (user + system) the PostgreSQL backend serving this process's connection has used so far,
    from /proc (the server runs on this machine)."""
    import os as _os

    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        pid = cursor.fetchone()[0]
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _os.sysconf("SC_CLK_TCK")
    except OSError:
        return float("nan")
