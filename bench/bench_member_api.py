"""Member API read path: GET /api/v1/me/points under 50 concurrent clients, and bulk coupon generation.

    flock /tmp/bench.lock .venv/bin/python bench/bench_member_api.py          # about 4 minutes
    flock /tmp/bench.lock .venv/bin/python bench/bench_member_api.py --help

Target (issue): >= 800 requests/s with p99 <= 50 ms at 50 concurrent clients.

What it does:
1. creates the database `mo_bench_member` on the server of DATABASE_URL (default: postgres on
   127.0.0.1:5432, user postgres), migrates it, and seeds --customers customers, each with a loyalty account
   at the entry tier (3 tiers), 4 ledger entries and lots (3 available, one expiring within 30 days for a
   third of them, 1 pending) and 2 paid orders in the tier window; then makes --tokens member API tokens
   (one per member, spread over the customers);
2. times `coupon_codes_generate` for --coupons codes (median of --coupon-runs, each into a fresh batch);
3. starts the app under gunicorn (--workers sync workers, DJANGO_ENV=production, DEBUG off, persistent
   database connections) and drives it with `wrk` (--connections connections on --threads threads), each
   request carrying the next member's bearer token; a warm-up, then --runs measured runs of --duration s;
4. prints per run: requests/s, p50/p99 latency (wrk --latency), non-2xx responses, and the CPU the server
   spent (gunicorn workers + their PostgreSQL backends, from /proc) per request, with the rate two idle
   cores would sustain at that cost: wrk itself runs on the same 2 cores;
5. stops gunicorn and drops the database (unless --keep-db).

Until config/urls.py includes the member API, gunicorn serves `bench.bench_member_api:application`: the
project's WSGI app with ROOT_URLCONF pointing at this module's `urlpatterns` (the project's plus the
member portal and API). Once config/urls.py includes them, that is exactly config.urls.
"""

from __future__ import annotations

import argparse
import http.client
import os
import re
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DB_NAME = "mo_bench_member"
RESULTS = ROOT / "bench" / "results"


def parse_args():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument(
        "--tokens", type=int, default=5_000, help="members whose tokens the load rotates over"
    )
    parser.add_argument("--coupons", type=int, default=100_000, help="codes per generation run (0: skip)")
    parser.add_argument("--coupon-runs", type=int, default=3)
    parser.add_argument(
        "--workers",
        default=str(os.cpu_count() or 2),
        help="gunicorn workers: N sync workers, or NxT gthread workers with T threads each; a comma-separated "
        "list measures each in turn (e.g. 2,3,4,4x4). Default: one per core, as gunicorn.conf.py",
    )
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument(
        "--think-ms",
        type=int,
        default=0,
        help="each connection waits this long between a response and its next request (0: saturate). "
        "With 50 connections, 50 ms offers about 800 requests/s: the target rate, from 50 clients",
    )
    parser.add_argument("--duration", type=int, default=20, help="seconds per measured run")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--port", type=int, default=8771)
    parser.add_argument("--keep-db", action="store_true")
    parser.add_argument(
        "--reuse-db",
        action="store_true",
        help="use the database and tokens a --keep-db run left (skips migrate and seed; implies --keep-db)",
    )
    return parser.parse_args()


# --- Database -------------------------------------------------------------------------------------


def server_url() -> str:
    return os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")


def bench_url() -> str:
    parts = urllib.parse.urlsplit(server_url())
    return urllib.parse.urlunsplit(parts._replace(path=f"/{DB_NAME}"))


def _connect(url: str):
    import psycopg

    return psycopg.connect(url.replace("postgres://", "postgresql://", 1), autocommit=True)


def admin_sql(statement: str) -> None:
    with _connect(server_url()) as conn:
        conn.execute(statement)


def sql(statement: str, params=()):
    with _connect(bench_url()) as conn:
        cursor = conn.execute(statement, params)
        return cursor.fetchall() if cursor.description else None


def server_env() -> dict:
    return {
        **os.environ,
        "DATABASE_URL": bench_url(),
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DJANGO_ENV": "production",
        "DJANGO_SECRET_KEY": "bench-only-secret-key-" + "x" * 40,
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
        "DJANGO_SECURE_SSL_REDIRECT": "false",
        "LOG_LEVEL": "WARNING",
        # Workers keep their database connection for the whole benchmark (the default recycles it every
        # 60 s): the CPU of each PostgreSQL backend is read from /proc at the start and end of a run.
        "DB_CONN_MAX_AGE": "3600",
    }


def django_run(code: str) -> str:
    out = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", code],
        cwd=ROOT,
        env=server_env(),
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout


def seed(customers: int) -> None:
    django_run(
        "from decimal import Decimal as D; from loyalty.models import ProgrammeSettings, Tier, EarnRule; "
        "ProgrammeSettings.objects.update_or_create(pk=1, defaults={'tier_basis': 'spend'}); "
        "[Tier.objects.create(code=c, name=n, rank=r, threshold_spend=D(s)) for r, (c, n, s) in "
        "enumerate([('member', '会员', '0'), ('silver', '银卡', '1000'), ('gold', '金卡', '5000')])]; "
        "EarnRule.objects.create(name='1 point per CNY', kind='base', points_per_unit=1)"
    )
    sql(
        """
        INSERT INTO crm_customer (external_id, name, email, phone, gender, city, region, time_zone,
            acquisition_channel, utm_source, utm_medium, utm_campaign, created_at, updated_at)
        SELECT 'C' || lpad(g::text, 7, '0'), '会员 ' || g, 'm' || g || '@example.cn', '', '', '', '',
            'Asia/Shanghai', 'web', '', '', '', now(), now()
        FROM generate_series(1, %s) g
        """,
        [customers],
    )
    entry_tier = sql("SELECT id FROM loyalty_tier WHERE rank = 0")[0][0]
    sql(
        """
        INSERT INTO loyalty_loyaltyaccount (customer_id, status, tier_id, tier_since, available, pending, owed, created_at)
        SELECT id, 'active', %s, now(), 600, 50, 0, now() FROM crm_customer
        """,
        [entry_tier],
    )
    # Four earnings per account: 100, 200, 300 available and 50 pending.
    sql(
        """
        INSERT INTO loyalty_ledgerentry (account_id, kind, points, pending_delta, owed_delta, idempotency_key,
            payload_hash, reason, reference, parts, occurred_at, created_at)
        SELECT a.id, 'earn', CASE WHEN k < 4 THEN 100 * k ELSE 0 END, CASE WHEN k = 4 THEN 50 ELSE 0 END, 0,
            'bench-' || a.id || '-' || k, 'bench', 'bench earning', '', '{}'::jsonb,
            now() - make_interval(days => 40 * k), now()
        FROM loyalty_loyaltyaccount a, generate_series(1, 4) k
        """
    )
    # A third of the accounts have their oldest lot expiring within 30 days.
    sql(
        """
        INSERT INTO loyalty_pointlot (account_id, earn_entry_id, state, points, remaining, consumed, expired,
            earned_at, available_at, expires_at)
        SELECT e.account_id, e.id,
            CASE WHEN e.pending_delta > 0 THEN 'pending' ELSE 'available' END,
            e.points + e.pending_delta, e.points + e.pending_delta, 0, 0, e.occurred_at,
            CASE WHEN e.pending_delta > 0 THEN now() + interval '10 days' ELSE e.occurred_at END,
            CASE WHEN e.points = 300 AND e.account_id %% 3 = 0 THEN now() + interval '20 days'
                 ELSE now() + make_interval(days => (200 + e.account_id %% 300)::int) END
        FROM loyalty_ledgerentry e
        """
    )
    sql(
        """
        INSERT INTO crm_order (external_id, customer_id, channel, store, placed_at, currency, total,
            refunded_amount, status, fingerprint, created_at)
        SELECT 'B' || c.id || '-' || k, c.id, 'tmall', '', now() - make_interval(days => 30 * k), 'CNY',
            (99 + (c.id * k) %% 400)::numeric, 0, 'paid', repeat('0', 64), now()
        FROM crm_customer c, generate_series(1, 2) k
        """
    )
    for table in (
        "crm_customer",
        "crm_order",
        "loyalty_loyaltyaccount",
        "loyalty_ledgerentry",
        "loyalty_pointlot",
    ):
        sql(f"VACUUM ANALYZE {table}")


def make_tokens(count: int, customers: int, path: Path) -> None:
    code = (
        "from crm.models import Customer; from loyalty.services.members import member_token_create; "
        f"ids = list(Customer.objects.order_by('id').values_list('id', flat=True)[::max(1, {customers} // {count})][:{count}]); "
        "customers = Customer.objects.in_bulk(ids); "
        f"open({str(path)!r}, 'w').write(''.join(member_token_create(customer=customers[i], name='bench')[1] + chr(10) for i in ids))"
    )
    django_run(code)


def time_coupons(quantity: int, runs: int) -> list[float]:
    code = (
        "import time; from decimal import Decimal as D; from loyalty.models.rewards import CouponProgramme; "
        "from loyalty.services.coupons import coupon_codes_generate; "
        "p = CouponProgramme.objects.create(name='bench', discount_value=D('10'), uses_per_code=1); "
        f"ts = []\nfor _ in range({runs}):\n    t = time.perf_counter(); "
        f"coupon_codes_generate(programme=p, quantity={quantity}); ts.append(time.perf_counter() - t)\n"
        "print('TIMES', *ts)"
    )
    out = django_run(code)
    return [float(x) for x in re.search(r"TIMES (.*)", out).group(1).split()]


# --- Server ---------------------------------------------------------------------------------------


def start_gunicorn(args, workers: str) -> subprocess.Popen:
    count, _x, threads = workers.partition("x")
    kind = ["--worker-class", "gthread", "--threads", threads] if threads else ["--worker-class", "sync"]
    process = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "gunicorn"),
            "bench.bench_member_api:application",
            "--bind",
            f"127.0.0.1:{args.port}",
            "--workers",
            count,
            *kind,
            "--timeout",
            "60",
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env=server_env(),
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", args.port, timeout=5)
            conn.request("GET", "/api/v1/me/points")
            status = conn.getresponse().status
            if status != 401:
                raise SystemExit(f"GET /api/v1/me/points without a token answered {status}, not 401")
            return process
        except OSError:
            time.sleep(0.3)
    process.terminate()
    raise SystemExit("gunicorn did not answer within 60 s")


def stop_gunicorn(process: subprocess.Popen) -> None:
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / CLOCK_TICKS


def server_pids(gunicorn: subprocess.Popen) -> tuple[list[int], list[int]]:
    """The gunicorn processes, and the PostgreSQL backends serving the benchmark database."""
    pids = [gunicorn.pid]
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == gunicorn.pid:
                pids.append(int(stat.parent.name))
        except (OSError, ValueError):
            continue
    backends = sql(
        "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()", [DB_NAME]
    )
    return pids, [pid for (pid,) in backends]


# --- Load -----------------------------------------------------------------------------------------

WRK_SCRIPT = r"""
local tokens = {}
local counter = 0
local threads = {}

setup = function(thread)
  thread:set("tid", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

init = function(args)
  for line in io.lines(args[1]) do
    if #line > 0 then tokens[#tokens + 1] = "Bearer " .. line end
  end
  i = tid * 7919
  think = tonumber(args[2]) or 0
end

-- Think time: each connection waits this long before its next request (a client app, not a flood).
delay = function()
  return think
end

request = function()
  i = i + 1
  return wrk.format("GET", nil, {["Authorization"] = tokens[(i % #tokens) + 1]})
end
"""


def _ms(value: str) -> float:
    number, unit = re.match(r"([\d.]+)(us|ms|s)", value).groups()
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def wrk(args, script: Path, tokens: Path, duration: int) -> dict:
    out = subprocess.run(
        [
            "wrk",
            f"-t{args.threads}",
            f"-c{args.connections}",
            f"-d{duration}s",
            "--timeout",
            "10s",
            "--latency",
            "-s",
            str(script),
            f"http://127.0.0.1:{args.port}/api/v1/me/points",
            "--",
            str(tokens),
            str(args.think_ms),
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "requests": int(re.search(r"(\d+) requests in", out).group(1)),
        "p50_ms": _ms(re.search(r"\s50%\s+(\S+)", out).group(1)),
        "p99_ms": _ms(re.search(r"\s99%\s+(\S+)", out).group(1)),
        "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
        "socket_errors": errors.group(1) if errors else "",
        "raw": out,
    }


def describe(workers: str) -> str:
    count, _x, threads = workers.partition("x")
    return f"{count} gthread workers × {threads} threads" if threads else f"{count} sync workers"


def measure(args, workers: str, gunicorn, script: Path, tokens: Path) -> None:
    print(
        f"gunicorn: {describe(workers)}; wrk: {args.threads} threads, {args.connections} connections, "
        f"{args.tokens:,} members' tokens in rotation"
        + (f", {args.think_ms} ms think time per connection" if args.think_ms else ", no think time"),
        flush=True,
    )
    wrk(args, script, tokens, args.warmup)
    results = []
    for run in range(1, args.runs + 1):
        app_pids, db_pids = server_pids(gunicorn)
        app_before, db_before = cpu_seconds(app_pids), cpu_seconds(db_pids)
        children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        result = wrk(args, script, tokens, args.duration)
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        wrk_cpu = (children.ru_utime + children.ru_stime) - (
            children_before.ru_utime + children_before.ru_stime
        )
        result["wrk_cpu_ms_per_req"] = wrk_cpu / result["requests"] * 1000
        app_cpu, db_cpu = cpu_seconds(app_pids) - app_before, cpu_seconds(db_pids) - db_before
        result["cpu_ms_per_req"] = (app_cpu + db_cpu) / result["requests"] * 1000
        result["db_cpu_ms_per_req"] = db_cpu / result["requests"] * 1000
        result["capacity_2_cores"] = 2000 / result["cpu_ms_per_req"]
        results.append(result)
        print(
            f"  run {run}: {result['rps']:.0f} req/s, p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms, "
            f"non-2xx {result['non_2xx']}, server CPU {result['cpu_ms_per_req']:.2f} ms/request "
            f"(PostgreSQL {result['db_cpu_ms_per_req']:.2f}), wrk {result['wrk_cpu_ms_per_req']:.2f} ms/request "
            f"(~{result['capacity_2_cores']:.0f} req/s on 2 idle cores) {result['socket_errors']}",
            flush=True,
        )
    print(
        f"  median ({describe(workers)}): {statistics.median(r['rps'] for r in results):.0f} req/s, "
        f"p50 {statistics.median(r['p50_ms'] for r in results):.1f} ms, "
        f"p99 {statistics.median(r['p99_ms'] for r in results):.1f} ms, "
        f"server CPU {statistics.median(r['cpu_ms_per_req'] for r in results):.2f} ms/request",
        flush=True,
    )


def main() -> None:
    args = parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    tokens = RESULTS / "member_tokens.txt"
    gunicorn = None
    if args.reuse_db:
        args.keep_db = True
        print(f"database {DB_NAME}: reusing it and {tokens}", flush=True)
    else:
        print(f"database {DB_NAME}: creating, migrating, seeding {args.customers:,} members", flush=True)
        admin_sql(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")
        admin_sql(f"CREATE DATABASE {DB_NAME}")
    try:
        if not args.reuse_db:
            subprocess.run(
                [sys.executable, "manage.py", "migrate", "--no-input"],
                cwd=ROOT,
                env=server_env(),
                check=True,
                capture_output=True,
            )
            started = time.monotonic()
            seed(args.customers)
            print(f"seeded in {time.monotonic() - started:.0f} s", flush=True)
            make_tokens(args.tokens, args.customers, tokens)

        if args.coupons:
            times = time_coupons(args.coupons, args.coupon_runs)
            print(
                f"coupon_codes_generate({args.coupons:,}): "
                + ", ".join(f"{t:.2f}" for t in times)
                + f" s; median {statistics.median(times):.2f} s "
                f"({args.coupons / statistics.median(times):,.0f} codes/s)",
                flush=True,
            )

        with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
            f.write(WRK_SCRIPT)
            script = Path(f.name)
        for workers in str(args.workers).split(","):
            gunicorn = start_gunicorn(args, workers)
            measure(args, workers, gunicorn, script, tokens)
            stop_gunicorn(gunicorn)
            gunicorn = None
        script.unlink()
    finally:
        if gunicorn is not None:
            stop_gunicorn(gunicorn)
        if not args.keep_db:
            admin_sql(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")


# --- The WSGI app gunicorn serves -----------------------------------------------------------------


def _urlpatterns():
    from django.urls import include, path

    from config.urls import urlpatterns as project

    def included(module):
        return any(getattr(getattr(p, "urlconf_name", None), "__name__", None) == module for p in project)

    return [
        *([] if included("loyalty.urls") else [path("member/", include("loyalty.urls"))]),
        *([] if included("loyalty.api.urls") else [path("api/v1/", include("loyalty.api.urls"))]),
        *project,
    ]


def __getattr__(name):
    # Lazy (PEP 562): importing this module to run the benchmark must not set Django up.
    if name == "urlpatterns":
        return _urlpatterns()
    if name == "application":
        import django
        from django.conf import settings

        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
        django.setup()
        settings.ROOT_URLCONF = __name__
        from django.core.wsgi import get_wsgi_application

        return get_wsgi_application()
    raise AttributeError(name)


if __name__ == "__main__":
    main()
