"""Fixtures shared by the whole suite: a real browser and a real Celery worker.

Browser tests (Playwright driving Debian's headless chromium, as DESIGN.md asks)

    def test_admin_login(page, admin_user):
        page.goto("/admin/login/")          # relative to live_server.url
        page.fill("#id_username", "admin")
        ...

- ``page`` (function scope): a new browser context (own cookies and storage) and tab for each test,
  with ``base_url=live_server.url`` and a 15 s default timeout; closed after the test.
- ``browser`` (session scope): the one chromium of the run. Use it directly only when a test needs
  several independent users at once: ``ctx = browser.new_context(base_url=live_server.url)`` and close
  ``ctx`` yourself.

Both use pytest-django's ``live_server``, which makes the test use ``transactional_db``: rows a test
creates are committed, so the server thread sees them, and every table is emptied after the test.
Tests using either fixture get the ``e2e`` marker automatically (``PYTEST_ARGS='-m "not e2e"'``).

Integration tests with a real Celery worker

    def test_export_runs_in_the_worker(celery_worker_process):
        result = export_customers.delay(segment_id=segment.pk)
        celery_worker_process.wait_for_log(rf"Task [\\w.]+\\[{result.id}\\] succeeded")
        assert Export.objects.get(...).status == "done"

- ``celery_worker_process`` (function scope, uses ``transactional_db``): starts
  ``celery -A config worker --pool=solo`` as a subprocess on the test database, with a file-system
  broker in a fresh temporary directory that only this test and this worker share. While it runs,
  ``config.celery.app`` (and so ``task.delay()``, ``send_task``) publishes there; the previous broker
  configuration comes back after the test. It yields a ``CeleryWorker``: ``wait_for_log(pattern)``,
  ``output()``, ``app``, ``broker_dir``, ``process``. No result backend is configured, so wait on the
  worker's log line (or on the rows the task writes), not on ``result.get()``.
  Tests using it get the ``integration`` marker automatically. Extra task modules that only tests
  define can be loaded into the worker with ``@pytest.mark.celery_worker_include("tests.x.tasks")``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

import pytest
from django.utils import timezone
from hypothesis import settings as hypothesis_settings

# The suite decides whether a change lands, so property tests draw the same examples on every run
# (HYPOTHESIS_PROFILE=explore draws new ones, to look for bugs on purpose).
hypothesis_settings.register_profile("ci", derandomize=True, database=None)
hypothesis_settings.register_profile("explore", max_examples=500)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# Playwright's sync API runs an asyncio event loop in the test thread, and Django then refuses ORM
# calls there (SynchronousOnlyOperation). The calls really are synchronous, so the guard is lifted.
os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-quic",
    "--disable-sync",
]
PAGE_TIMEOUT_MS = 15_000

REPO_ROOT = Path(__file__).resolve().parent.parent
WORKER_READY_TIMEOUT = 60.0
WORKER_PING_TIMEOUT = 20.0  # the file-system transport polls once a second


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "celery_worker_include(*modules): extra task modules the celery_worker_process worker imports",
    )


# While pytest collects, timezone.now() answers this instant: a parametrize argument computed from it
# then shows up close to it, and collection stops naming the test (`_stale_times`). At run time
# timezone.now() is the real clock again. An instant no test would choose as a fixed date.
COLLECTION_NOW = datetime(1984, 2, 29, 12, 34, 56, tzinfo=UTC)
_collecting = False
_real_now = timezone.now


def _now() -> datetime:
    return COLLECTION_NOW if _collecting else _real_now()


timezone.now = _now


@pytest.hookimpl(wrapper=True)
def pytest_collection(session):
    global _collecting
    _collecting = True
    try:
        return (yield)
    finally:
        _collecting = False


@pytest.fixture(autouse=True)
def _fresh_process_state():
    """Each test starts in the default language and with empty per-process caches, whatever ran before.

    A request through LocaleMiddleware (the test client, a view called directly) leaves its language
    active in the test thread: a later test reading a command's output would see Chinese or English by
    the order tests ran in. The compiled template and journey caches are keyed by row id, which never
    comes back in a real database but does here, where migration tests recreate tables and restart
    their sequences: a test would render another test's template."""
    from django.conf import settings
    from django.utils import translation

    from campaigns.rendering import compiled_cache_clear as templates_cache_clear
    from journeys.services.engine import compiled_cache_clear as journeys_cache_clear

    translation.activate(settings.LANGUAGE_CODE)
    templates_cache_clear()
    journeys_cache_clear()
    yield
    translation.activate(settings.LANGUAGE_CODE)


def pytest_collection_modifyitems(items):
    stale = []
    for item in items:
        if {"page", "browser"} & set(item.fixturenames):
            item.add_marker(pytest.mark.e2e)
        if "celery_worker_process" in item.fixturenames:
            item.add_marker(pytest.mark.integration)
        callspec = getattr(item, "callspec", None)
        if callspec is not None and any(_stale_time(value) for value in callspec.params.values()):
            stale.append(item.nodeid)
    if stale:
        raise pytest.UsageError(
            "These tests are parametrized with a time computed at collection, stale by the time a long "
            "run reaches them; write tests.moments.FromNow and resolve it inside the test:\n  "
            + "\n  ".join(stale)
        )


def _stale_time(value, depth: int = 0) -> bool:
    """Whether `value` holds (in dicts, lists, tuples) a time within 400 days of COLLECTION_NOW, as an
    aware datetime or an ISO 8601 string: a time computed from timezone.now() during collection."""
    if depth > 5:
        return False
    if isinstance(value, str) and 10 <= len(value) <= 40 and value[4:5] == "-":
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return False
    if isinstance(value, datetime):
        aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return abs(aware - COLLECTION_NOW) < timedelta(days=400)
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list | tuple):
        return any(_stale_time(v, depth + 1) for v in value)
    return False


# --- Browser --------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def browser(live_server):
    """The session's headless Debian chromium (a Playwright ``Browser``); see the module docstring."""
    from playwright.sync_api import expect, sync_playwright

    # expect()'s own wait (5 s by default) follows the page's, so a loaded machine waits as long for an
    # assertion as for a click.
    expect.set_options(timeout=PAGE_TIMEOUT_MS)
    playwright = sync_playwright().start()
    try:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()
    finally:
        playwright.stop()


@pytest.fixture
def page(browser, live_server):
    """A fresh context and tab per test, ``base_url`` = the live server, 15 s default timeout."""
    context = browser.new_context(base_url=live_server.url)
    context.set_default_timeout(PAGE_TIMEOUT_MS)
    try:
        yield context.new_page()
    finally:
        context.close()


# --- Real Celery worker ---------------------------------------------------------------------------


@dataclass
class CeleryWorker:
    """A running ``celery worker`` subprocess and what it has logged so far."""

    app: object
    broker_dir: Path
    process: subprocess.Popen
    _lines: list[str] = field(default_factory=list)
    _changed: threading.Condition = field(default_factory=threading.Condition)

    def __post_init__(self) -> None:
        self._reader = threading.Thread(target=self._read, name="celery-worker-log", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        # Reading all the time also keeps the pipe drained, so a chatty worker never blocks on it.
        for line in self.process.stdout:
            with self._changed:
                self._lines.append(line)
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def output(self) -> str:
        """Everything the worker has written (stdout and stderr) so far."""
        with self._changed:
            return "".join(self._lines)

    def wait_for_log(self, pattern: str, timeout: float = 30.0) -> re.Match:
        """Wait until the worker's output matches the regex ``pattern``; fail the test with the log otherwise."""
        return self._wait(pattern, timeout, hint="")

    def _wait(self, pattern: str, timeout: float, hint: str) -> re.Match:
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                match = regex.search("".join(self._lines))
                if match:
                    return match
                if not self._reader.is_alive():
                    self._fail(f"the worker exited ({self.process.poll()}) before logging {pattern!r}", hint)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self._fail(f"the worker did not log {pattern!r} within {timeout:g}s", hint)
                self._changed.wait(min(remaining, 0.5))

    def _fail(self, message: str, hint: str) -> None:
        tail = "".join(self._lines[-60:])
        pytest.fail(f"{message}. {hint}\n--- celery worker output (last 60 lines) ---\n{tail}", pytrace=False)

    def stop(self) -> None:
        # SIGKILL, not a warm shutdown: the solo worker notices SIGTERM only between two 2-second polls
        # of the file-system broker, and there is nothing left to finish. Its broker directory is thrown
        # away, and PostgreSQL rolls back whatever transaction the dead process still had open.
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        self._reader.join(5)


def _database_url(db: dict) -> str:
    """A DATABASE_URL (as django-environ reads it) for the connection settings ``db``."""
    if db["ENGINE"] != "django.db.backends.postgresql":
        pytest.fail(
            "celery_worker_process needs PostgreSQL: the worker is another process and cannot see an "
            "in-memory SQLite test database. Run the suite with `make test`.",
            pytrace=False,
        )
    credentials = quote(db.get("USER") or "", safe="")
    if db.get("PASSWORD"):
        credentials += ":" + quote(db["PASSWORD"], safe="")
    host = db.get("HOST") or ""
    if host.startswith("/"):
        host = quote(host, safe="")  # a Unix socket directory travels percent-encoded in the host part
    port = f":{db['PORT']}" if db.get("PORT") else ""
    at = "@" if credentials else ""
    return f"postgres://{credentials}{at}{host}{port}/{quote(db['NAME'], safe='')}"


def _filesystem_broker_options(broker_dir: Path) -> dict:
    # The same shape as config/settings.py builds from CELERY_BROKER_DIR.
    for sub in ("queue", "processed", "control"):
        (broker_dir / sub).mkdir(parents=True, exist_ok=True)
    return {
        "data_folder_in": str(broker_dir / "queue"),
        "data_folder_out": str(broker_dir / "queue"),
        "processed_folder": str(broker_dir / "processed"),
        "store_processed": False,
        "control_folder": str(broker_dir / "control"),
    }


def _drop_cached_publishers(app) -> None:
    # Celery caches its connection and producer pools with the broker options they were made with.
    app._pool = None
    app.amqp._producer_pool = None


@pytest.fixture
def celery_worker_process(request, transactional_db, settings, tmp_path):
    """A real Celery worker subprocess on the test database and a private broker; see the module docstring."""
    from django.db import connections

    from config.celery import app

    database_url = _database_url(connections["default"].settings_dict)
    broker_dir = tmp_path / "broker"
    options = _filesystem_broker_options(broker_dir)

    # celery.ping (from celery.contrib.testing) lets the fixture prove the worker reads this broker.
    include = ["celery.contrib.testing.tasks"]
    for marker in request.node.iter_markers("celery_worker_include"):
        include.extend(marker.args)

    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "CELERY_BROKER_URL": "filesystem://",
        "CELERY_BROKER_DIR": str(broker_dir),
        "CELERY_TASK_ALWAYS_EAGER": "false",
        "DJANGO_ENV": os.environ.get("DJANGO_ENV", "test"),
        "PYTHONUNBUFFERED": "1",
    }
    command = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "config",
        "worker",
        "--pool=solo",
        "-l",
        "info",
        # Mingle, gossip and heartbeats talk to other workers; there are none, and they slow the start.
        "--without-mingle",
        "--without-gossip",
        "--without-heartbeat",
        "-n",
        f"pytest-{uuid.uuid4().hex[:8]}@%h",
        "-I",
        ",".join(include),
    ]

    settings.CELERY_BROKER_URL = "filesystem://"
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = options
    saved = {key: app.conf[key] for key in ("broker_url", "broker_transport_options", "task_always_eager")}
    app.conf.update(broker_url="filesystem://", broker_transport_options=options, task_always_eager=False)
    _drop_cached_publishers(app)

    process = subprocess.Popen(
        command,
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        errors="replace",
        start_new_session=True,  # a Ctrl-C at the terminal reaches pytest, which then stops the worker
    )
    worker = CeleryWorker(app=app, broker_dir=broker_dir, process=process)
    try:
        worker.wait_for_log(r"\bready\.", timeout=WORKER_READY_TIMEOUT)
        ping = app.send_task("celery.ping")
        worker._wait(
            rf"Task celery\.ping\[{ping.id}\] succeeded",
            WORKER_PING_TIMEOUT,
            hint=f"It did not take the message sent to {broker_dir}: config/settings.py must build the "
            "file-system broker folders from the CELERY_BROKER_DIR environment variable.",
        )
        yield worker
    finally:
        worker.stop()
        app.conf.update(saved)
        _drop_cached_publishers(app)
