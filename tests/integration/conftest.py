"""Helpers of the integration tests.

The embedded default's set-up, shared by the tests that run it for real (test_embedded_default.py,
test_outbox_embedded.py): an environment on a SQLite file and the file-system broker in a temporary
directory, `manage.py` steps as subprocesses, and a solo Celery worker on that environment.
`zone_at_local_hour` makes a local time true for a worker that runs on the real clock."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
import zoneinfo
from collections.abc import Sequence
from datetime import datetime

import pytest
from celery import Celery

from tests.conftest import REPO_ROOT, CeleryWorker, _filesystem_broker_options

STEP_TIMEOUT = 120


@pytest.fixture
def embedded_env(tmp_path):
    broker_dir = tmp_path / "broker"
    _filesystem_broker_options(broker_dir)  # creates the folders, as config/settings.py expects them
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DATABASE_", "CELERY_", "DJANGO_", "CACHE_"))
    }
    env.update(
        DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}",
        CELERY_BROKER_URL="filesystem://",
        CELERY_BROKER_DIR=str(broker_dir),
        DJANGO_ENV="development",
        PYTHONUNBUFFERED="1",
    )
    return env


def embedded_manage(env, *args: str) -> str:
    """Run one `manage.py` step in the embedded environment; fail the test with its output if it fails."""
    result = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=STEP_TIMEOUT,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, f"manage.py {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def embedded_worker(env, broker_dir, include: Sequence[str] = ()) -> CeleryWorker:
    """A solo Celery worker on the embedded environment (`include`: modules it imports first, celery -I)."""
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
        "--without-mingle",
        "--without-gossip",
        "--without-heartbeat",
        "-n",
        f"embedded-{uuid.uuid4().hex[:8]}@%h",
    ]
    if include:
        command += ["-I", ",".join(include)]
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
    return CeleryWorker(app=None, broker_dir=broker_dir, process=process)


def embedded_sender(name: str, broker_dir) -> Celery:
    """A Celery app that only publishes tasks to the embedded worker's file-system broker."""
    sender = Celery(name, broker="filesystem://")
    sender.conf.broker_transport_options = _filesystem_broker_options(broker_dir)
    return sender


def zone_at_local_hour(now: datetime, hour: int) -> zoneinfo.ZoneInfo:
    """A fixed-offset zone (no DST) in which `now` falls in the local hour `hour`."""
    offset = ((hour - now.astimezone(zoneinfo.ZoneInfo("UTC")).hour + 12) % 24) - 12
    # POSIX sign convention: Etc/GMT-8 is UTC+8.
    return zoneinfo.ZoneInfo("Etc/GMT" if offset == 0 else f"Etc/GMT{-offset:+d}")
