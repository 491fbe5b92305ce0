"""gunicorn settings for production (`gunicorn config.wsgi` reads this file from the working directory).

Workers: one sync worker per core by default. A request here is CPU work in Python around one or two
short database round trips, so more workers than cores only add context switches: on the 2-core bench
machine, 2 workers gave GET /api/v1/me/points the lowest p99 at about the throughput of 3 or 4 (see
BENCHMARKS.md, member API). WEB_CONCURRENCY overrides it (e.g. where PostgreSQL is on another host
and the workers wait longer on it)."""

import os

bind = f"0.0.0.0:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", os.cpu_count() or 2))
worker_class = "sync"
timeout = 60
accesslog = "-" if os.environ.get("GUNICORN_ACCESS_LOG") else None
