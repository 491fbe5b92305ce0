"""Benchmark: the analytics dashboard endpoints, the nightly summaries behind them, and recommendations.

Uses the database bench_segments.py builds (mo_bench_segments: N customers, 3N orders, 10N events,
one metrics row per customer) and times:

- the nightly refresh, chart by chart: what each figure costs to compute from the raw tables (this
  is also what an endpoint costs the first time, before any summary exists);
- every JSON endpoint as the dashboard calls it, through a logged-in Django test client, served from
  the stored summaries (median of `--requests`);
- rebuilding the product affinities, and `recommendations_for_customer` for random customers.

    flock /tmp/bench.lock env DJANGO_ENV=test .venv/bin/python bench/bench_dashboards.py --customers 1000000
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_segments import bench_now, build, setup_django  # noqa: E402


def mount_endpoints() -> None:
    """The endpoints as config/urls.py mounts them, whether or not it does yet."""
    from django.conf import settings
    from django.urls import clear_url_caches, include, path

    import crm.admin.analytics  # noqa: F401

    module = types.ModuleType("bench_dashboard_urls")
    module.urlpatterns = [path("analytics/", include("crm.urls_analytics"))]
    sys.modules[module.__name__] = module
    settings.ROOT_URLCONF = module.__name__
    clear_url_caches()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--db", default="mo_bench_segments")
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--skip-refresh", action="store_true", help="reuse the summaries of an earlier run")
    args = parser.parse_args()
    setup_django(args.db, rebuild=False)
    build(args.customers)
    mount_endpoints()

    from django.contrib.auth import get_user_model
    from django.test import Client

    from crm.analytics.services import analytics_refresh
    from crm.models import Customer
    from crm.recommendations.selectors import recommendations_for_customer
    from crm.recommendations.services import recommendations_refresh

    now = bench_now()
    print(f"dashboards at {args.customers:,} customers; times in ms")
    if not args.skip_refresh:
        print("\nnightly refresh (computing each figure from the raw tables):")
        started = time.perf_counter()
        timings = analytics_refresh(full=True, now=now)
        total = (time.perf_counter() - started) * 1000
        attribution = [ms for key, ms in timings.items() if key.startswith("attribution:")]
        for key, ms in timings.items():
            if not key.startswith("attribution:"):
                print(f"  {key:40} {ms:9.0f}")
        print(
            f"  {'attribution, one month (median of ' + str(len(attribution)) + ')':40} {statistics.median(attribution):9.0f}"
        )
        print(f"  {'attribution, all months':40} {sum(attribution):9.0f}")
        print(f"  {'total':40} {total:9.0f}", flush=True)

    user, _ = get_user_model().objects.get_or_create(
        username="bench-admin", defaults={"is_staff": True, "is_superuser": True}
    )
    client = Client()
    client.force_login(user)
    month = f"{now:%Y-%m}"
    endpoints = {
        "lifecycle": "/analytics/lifecycle.json",
        "cohorts": "/analytics/cohorts.json",
        "orders (AOV, repeat rate)": "/analytics/orders.json",
        "ltv and ltv:cac": "/analytics/ltv.json",
        "funnel, last 30 days": "/analytics/funnel.json?days=30",
        "attribution, 3 months, 30-day lookback": f"/analytics/attribution.json?to={month}&lookback=30",
        "attribution, 12 months, 7-day lookback": f"/analytics/attribution.json?from=2025-12&to={month}&lookback=7",
    }
    print(f"\nendpoints from the summaries ({args.requests} requests each):")
    print(f"  {'endpoint':40} {'median':>9} {'p90':>7}")
    for name, url in endpoints.items():
        client.get(url)  # warm-up
        times = []
        for _ in range(args.requests):
            started = time.perf_counter()
            response = client.get(url)
            times.append((time.perf_counter() - started) * 1000)
            if response.status_code != 200:
                raise SystemExit(f"{url} answered {response.status_code}: {response.content[:300]}")
        times.sort()
        p90 = times[max(0, int(len(times) * 0.9) - 1)]
        print(f"  {name:40} {statistics.median(times):9.1f} {p90:7.1f}", flush=True)

    print("\nrecommendations:")
    started = time.perf_counter()
    result = recommendations_refresh(now=now)
    print(
        f"  {'rebuild product affinities':40} {(time.perf_counter() - started) * 1000:9.0f}  ({result['pairs']:,} pairs)"
    )
    rng = random.Random(20261123)
    top = Customer.objects.order_by("-pk").values_list("pk", flat=True).first()
    times = []
    for _ in range(200):
        customer_id = rng.randint(1, top)
        started = time.perf_counter()
        recommendations_for_customer(customer_id, 5)
        times.append((time.perf_counter() - started) * 1000)
    print(f"  {'recommendations_for_customer(id, 5)':40} {statistics.median(times):9.1f}  (median of 200)")


if __name__ == "__main__":
    main()
