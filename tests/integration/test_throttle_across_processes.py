"""The per-member rate limit holds across web worker processes: gunicorn with three workers counting in
one Redis, a burst of three times the limit for one member from many threads at once, and exactly the
limit gets through; every other request is a 429 in the API's error shape with a Retry-After.

DRF's own SimpleRateThrottle fails this: each worker reads the member's request history, appends to it
and writes it back, so requests that arrive together in different workers all read the same history and
all pass. The workers run tests/integration/throttled_web_settings.py, the project's settings with a
limit of 10 per hour (an hour, so no window closes during the burst)."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter

import pytest
import redis
import requests
from django.db import connections

from tests.conftest import REPO_ROOT, _database_url
from tests.integration.throttled_web_settings import MEMBER_READ_LIMIT
from tests.loyalty.test_member_support import member_make, member_test_setup, member_token  # noqa: F401

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

REDIS_URL = os.environ.get("THROTTLE_TEST_REDIS_URL", "redis://127.0.0.1:6379/1")
WORKERS = 3
BOOT_TIMEOUT = 60.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Gunicorn:
    def __init__(self, process: subprocess.Popen, url: str):
        self.process, self.url = process, url
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line)

    def output(self) -> str:
        return "".join(self.lines[-80:])

    def worker_pids_since(self, start: int) -> set[str]:
        # The access log line is "<pid> <status> <path>" (see --access-logformat below).
        return {m.group(1) for line in self.lines[start:] if (m := re.match(r"<(\d+)> \d{3} /api/", line))}


@pytest.fixture
def gunicorn_server(transactional_db):
    """`gunicorn config.wsgi` with three sync workers on the test database, its cache a private key prefix
    in Redis (removed afterwards)."""
    prefix = f"rel-throttle-{uuid.uuid4().hex[:10]}"
    port = _free_port()
    env = {
        **os.environ,
        "DATABASE_URL": _database_url(connections["default"].settings_dict),
        "DJANGO_SETTINGS_MODULE": "tests.integration.throttled_web_settings",
        "DJANGO_ENV": os.environ.get("DJANGO_ENV", "test"),
        "CACHE_URL": f"{REDIS_URL}?key_prefix={prefix}",
        "PYTHONUNBUFFERED": "1",
    }
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "config.wsgi",
        "--workers",
        str(WORKERS),
        "--bind",
        f"127.0.0.1:{port}",
        "--access-logfile",
        "-",
        "--access-logformat",
        "%(p)s %(s)s %(U)s",
    ]
    process = subprocess.Popen(
        command,
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        errors="replace",
        start_new_session=True,
    )
    server = Gunicorn(process, f"http://127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + BOOT_TIMEOUT
        while True:
            if process.poll() is not None:
                pytest.fail(f"gunicorn exited ({process.returncode}):\n{server.output()}", pytrace=False)
            booted = sum("Booting worker" in line for line in server.lines)
            try:
                up = requests.get(f"{server.url}/api/v1/me/points", timeout=10).status_code == 401
            except requests.RequestException:  # not listening yet, or the first request still loading
                up = False
            if up and booted >= WORKERS:
                break
            if time.monotonic() > deadline:
                pytest.fail(
                    f"gunicorn did not come up in {BOOT_TIMEOUT:.0f} s:\n{server.output()}", pytrace=False
                )
            time.sleep(0.2)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(f"{prefix}:*"))
        if keys:
            client.delete(*keys)


def _burst(url: str, token: str, count: int) -> list[requests.Response]:
    """`count` GETs of `url` from as many threads, released together."""
    start = threading.Barrier(count)
    responses: list[requests.Response | Exception] = [None] * count

    def one(n: int) -> None:
        start.wait()
        try:
            responses[n] = requests.get(url, headers={"Authorization": token}, timeout=60)
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            responses[n] = exc

    threads = [threading.Thread(target=one, args=(n,)) for n in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    failed = [r for r in responses if isinstance(r, Exception)]
    assert not failed, failed
    return responses


def test_the_per_member_limit_lets_exactly_the_limit_through_across_web_workers(gunicorn_server):
    alice, warm_up = member_make(points=100), member_make()
    url = f"{gunicorn_server.url}/api/v1/me/points"
    # Every worker has imported the views and opened its database and Redis connections before the
    # burst, so the burst's requests really arrive together (another member's requests, another counter).
    _burst(url, member_token(warm_up), 4 * WORKERS)
    log_start = len(gunicorn_server.lines)

    responses = _burst(url, member_token(alice), 3 * MEMBER_READ_LIMIT)

    codes = Counter(r.status_code for r in responses)
    assert codes == {200: MEMBER_READ_LIMIT, 429: 2 * MEMBER_READ_LIMIT}, codes
    for refused in (r for r in responses if r.status_code == 429):
        assert 1 <= int(refused.headers["Retry-After"]) <= 3600
        assert refused.json()["errors"][0]["message"]
    assert all(r.json()["available"] == 100 for r in responses if r.status_code == 200)
    # The burst was served by more than one process, or it proved nothing about counting across them.
    time.sleep(0.5)  # the access log line is written after the response
    assert len(gunicorn_server.worker_pids_since(log_start)) >= 2, gunicorn_server.output()
