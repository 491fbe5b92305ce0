"""`make run` as a newcomer meets it, for real: scripts/run.sh in a copy of the repository (its own var/,
so its own SQLite database and broker folder) on a private port, from the first migration to Ctrl-C.

It waits for the banner that repeats the logins once the server answers, logs in to the admin over HTTP
and reads the dashboard's figures (computed during set-up, not on first request), then sends SIGINT as a
terminal's Ctrl-C does and checks the stop: exit code 0, no ERROR line, and no process left that was
started from this run (each carries a marker in its environment, inherited by every descendant)."""

from __future__ import annotations

import http.cookiejar
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

pytestmark = [pytest.mark.embedded, pytest.mark.integration]

START_TIMEOUT = 600  # a first migration and seed on a slow, busy machine
STOP_TIMEOUT = 60
MARKER = "MAKE_RUN_TEST_ID"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _copy_repository(target: Path) -> None:
    """The files of the repository as a fresh clone has them (tracked and new ones, not var/ or caches),
    with the installed .venv and node_modules linked rather than installed again."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO_ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, (n.decode() for n in listed)):
        source = REPO_ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            (target / name).write_bytes(source.read_bytes())
            (target / name).chmod(source.stat().st_mode)
    for shared in (".venv", "node_modules"):
        (target / shared).symlink_to((REPO_ROOT / shared).resolve(), target_is_directory=True)


def _marked_processes(marker: str) -> list[str]:
    found = []
    needle = f"{MARKER}={marker}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                found.append(f"{entry.name}: {command}")
        except OSError:
            continue  # gone meanwhile, or not ours to read
    return found


class _Output:
    def __init__(self, process: subprocess.Popen):
        self.lines: list[str] = []
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._read, args=(process,), daemon=True)
        self.thread.start()

    def _read(self, process):
        for line in process.stdout:
            with self.lock:
                self.lines.append(line.rstrip("\n"))

    def text(self) -> str:
        with self.lock:
            return "\n".join(self.lines)

    def wait_for(self, pattern: str, timeout: float, process: subprocess.Popen) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if re.search(pattern, self.text(), re.MULTILINE):
                return
            if process.poll() is not None:
                break
            time.sleep(0.5)
        pytest.fail(f"no {pattern!r} in make run's output:\n{self.text()[-6000:]}")


def _admin_session(base: str, password: str) -> urllib.request.OpenerDirector:
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    opener.open(f"{base}/admin/login/", timeout=30).read()
    token = next(c.value for c in jar if c.name == "csrftoken")
    form = urllib.parse.urlencode(
        {"username": "admin", "password": password, "csrfmiddlewaretoken": token, "next": "/admin/"}
    ).encode()
    request = urllib.request.Request(
        f"{base}/admin/login/", data=form, headers={"Referer": f"{base}/admin/login/"}
    )
    with opener.open(request, timeout=30) as response:
        assert response.url.endswith("/admin/"), response.url  # logged in, not back at the form
    return opener


def _json(opener, url: str) -> dict:
    with opener.open(url, timeout=60) as response:
        return json.loads(response.read())


def test_make_run_sets_up_computes_serves_and_stops_cleanly_on_ctrl_c(tmp_path):
    stamp = REPO_ROOT / "node_modules" / ".npm-ci-stamp"
    assert stamp.exists(), "node_modules is not installed (make test runs npm ci first)"
    copy = tmp_path / "repo"
    _copy_repository(copy)
    port, marker = _free_port(), uuid.uuid4().hex
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DATABASE_", "CELERY_", "DJANGO_", "CACHE_", "PYTEST", "HOST", "LOG_"))
    }
    env.update(PORT=str(port), PYTHONUNBUFFERED="1", **{MARKER: marker})
    process = subprocess.Popen(
        ["bash", "scripts/run.sh"],
        cwd=copy,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        start_new_session=True,
    )
    output = _Output(process)
    try:
        output.wait_for(r"^Ctrl-C stops it\.$", START_TIMEOUT, process)
        text = output.text()
        base = f"http://127.0.0.1:{port}"
        # The banner, after the server's own start-up lines: the addresses and both logins once more.
        banner = text[text.rindex("The demo answers on") :]
        assert f"{base}/admin/" in banner and "password: admin-demo-2026" in banner, banner
        assert f"{base}/member/" in banner and "password: member-demo-2026" in banner, banner
        assert "W040" not in text and "No hostname was supplied" not in text, text
        assert f"Starting development server at {base}/" in text  # loopback, not 0.0.0.0

        opener = _admin_session(base, "admin-demo-2026")
        with opener.open(f"{base}/admin/crm/dashboardsummary/", timeout=60) as page:
            assert 'id="chart-funnel"' in page.read().decode()
        lifecycle = _json(opener, f"{base}/analytics/lifecycle.json")
        assert lifecycle["tracked_since"] < lifecycle["months"][0], lifecycle  # a history, not a back-fill
        columns = {tuple(s[i] for s in lifecycle["series"].values()) for i in range(len(lifecycle["months"]))}
        assert len(columns) > 1, lifecycle
        funnel = {s["type"]: s["customers"] for s in _json(opener, f"{base}/analytics/funnel.json")["steps"]}
        assert funnel["order_placed"] > 0, funnel
        attribution = _json(opener, f"{base}/analytics/attribution.json")["rows"]
        assert any(r["source"] != "(none)" for r in attribution), attribution
        served = len(output.lines)
    except BaseException:
        os.killpg(process.pid, signal.SIGKILL)
        for leftover in _marked_processes(marker):
            os.kill(int(leftover.split(":")[0]), signal.SIGKILL)
        raise

    # Ctrl-C: the terminal signals the foreground process group.
    os.killpg(process.pid, signal.SIGINT)
    try:
        code = process.wait(timeout=STOP_TIMEOUT)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    output.thread.join(timeout=10)
    stop = "\n".join(output.lines[served:])
    assert code == 0, stop
    assert not [line for line in output.lines if "ERROR" in line or "Traceback" in line], output.text()[
        -6000:
    ]
    assert "did not stop in time" not in stop, stop
    deadline = time.monotonic() + 10
    while (left := _marked_processes(marker)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not left, left
