"""Run the Procfile's processes for `make run` (scripts/run.sh execs this with the venv's Python).

    python scripts/procs.py --ready-url URL [--banner-file FILE] [--procfile Procfile]

Starts every process of the Procfile, prints their output prefixed with their name, prints the banner
(addresses and logins, which have scrolled away by then) once the web server answers, and stops them on
Ctrl-C (SIGINT) or SIGTERM. Honcho, which did this before, signals each process *group*: a Celery
worker's pool children then die of SIGTERM under their parent, which logs each as an ERROR while its
warm shutdown waits for them, and honcho's SIGKILL follows five seconds later whatever the worker was
doing. Here each main process gets SIGTERM and the time it needs (a Celery worker stops its own pool),
and only a process still running after STOP_SECONDS has its group killed. The exit code is 0 after a
requested stop, 1 when a process ended on its own (the others are then stopped too).

Each process runs in a process group of its own, so the terminal's Ctrl-C reaches this supervisor only
and the order of the stop is ours. When started from a terminal (make run), the supervisor also takes
the terminal's foreground for its own group, so that make, which would otherwise receive the same
Ctrl-C and report "*** Interrupt" with status 130, simply sees this process exit 0.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

STOP_SECONDS = 30
# Beat first, so that it queues nothing more; the worker last, so that it can finish what it holds.
STOP_ORDER = ["beat", "web", "worker"]


def read_procfile(path: str) -> list[tuple[str, str]]:
    entries = []
    with open(path, encoding="utf-8") as procfile:
        for line in procfile:
            match = re.match(r"^([A-Za-z0-9_-]+):\s*(.+)$", line.strip())
            if match:
                entries.append((match.group(1), match.group(2)))
    return entries


class Supervisor:
    def __init__(self, entries: list[tuple[str, str]], *, ready_url: str | None, banner: str):
        self.entries = entries
        self.ready_url = ready_url
        self.banner = banner
        self.width = max(len(name) for name, _cmd in entries)
        self.children: dict[str, subprocess.Popen] = {}
        self.readers: list[threading.Thread] = []
        self.print_lock = threading.Lock()
        self.stop_requested = threading.Event()
        self.signals = 0

    def say(self, name: str, text: str) -> None:
        with self.print_lock:
            sys.stdout.write(f"{time.strftime('%H:%M:%S')} {name:<{self.width}} | {text}\n")
            sys.stdout.flush()

    def on_signal(self, signum, frame) -> None:
        self.signals += 1
        self.stop_requested.set()

    def start(self) -> None:
        for name, command in self.entries:
            child = subprocess.Popen(
                ["/bin/sh", "-c", f"exec {command}"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                errors="replace",
                bufsize=1,
                process_group=0,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
            self.children[name] = child
            self.say("system", f"{name} started (pid {child.pid})")
            reader = threading.Thread(target=self._relay, args=(name, child), daemon=True)
            reader.start()
            self.readers.append(reader)

    def _relay(self, name: str, child: subprocess.Popen) -> None:
        for line in child.stdout:
            self.say(name, line.rstrip("\n"))

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(self.ready_url, timeout=2):
                return True
        except urllib.error.HTTPError:
            return True  # an answer all the same (/healthz says 503 while the broker is unreachable)
        except (OSError, ValueError):
            return False

    def run(self) -> int:
        self.start()
        announced, answered = not self.ready_url, False
        while not self.stop_requested.wait(0.5):
            ended = {name: c.returncode for name, c in self.children.items() if c.poll() is not None}
            if ended:
                for name, code in ended.items():
                    self.say("system", f"{name} ended on its own (exit code {code}); stopping the others")
                self.stop()
                return 1
            if answered and not announced:
                # Half a second after the answer, so that the server's log line of it comes first.
                announced = True
                with self.print_lock:
                    sys.stdout.write("\n" + self.banner.rstrip("\n") + "\n\n")
                    sys.stdout.flush()
            elif not announced:
                answered = self._answers()
        self.say("system", "stopping (Ctrl-C again to kill at once)")
        self.stop()
        return 0

    def stop(self) -> None:
        alive = [n for n in sorted(self.children, key=_stop_rank) if self.children[n].poll() is None]
        for name in alive:
            try:
                os.kill(self.children[name].pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + STOP_SECONDS
        signals_before = self.signals
        for name in alive:
            child = self.children[name]
            while child.poll() is None and time.monotonic() < deadline and self.signals == signals_before:
                time.sleep(0.1)
            if child.poll() is not None:
                self.say("system", f"{name} stopped")
        for name, child in self.children.items():
            # The group too: whatever the process left behind (a pool child) goes with it.
            if child.poll() is None:
                self.say("system", f"{name} did not stop in time: killing it")
            try:
                os.killpg(child.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            child.wait()
        for reader in self.readers:
            reader.join(timeout=2)


def _stop_rank(name: str) -> int:
    return STOP_ORDER.index(name) if name in STOP_ORDER else len(STOP_ORDER)


def take_terminal() -> tuple[int, int] | None:
    """Put this process in a group of its own and make it the terminal's foreground group; returns what
    to restore, or None without a terminal."""
    try:
        tty = os.open("/dev/tty", os.O_RDWR)
    except OSError:
        return None
    try:
        previous = os.tcgetpgrp(tty)
        if previous != os.getpgrp():
            return None  # not in the foreground (started with &): leave the terminal alone
        os.setpgid(0, 0)
        signal.signal(signal.SIGTTOU, signal.SIG_IGN)  # tcsetpgrp from a background group stops it
        os.tcsetpgrp(tty, os.getpgrp())
        return tty, previous
    except OSError:
        os.close(tty)
        return None


def give_back_terminal(saved: tuple[int, int] | None) -> None:
    if saved is None:
        return
    tty, previous = saved
    try:
        os.tcsetpgrp(tty, previous)
    except OSError:
        pass  # make has gone; the shell takes the terminal back itself
    os.close(tty)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--procfile", default="Procfile")
    parser.add_argument("--ready-url", default=None, help="print the banner once this URL answers")
    parser.add_argument("--banner-file", default=None, help="text to print once the web server answers")
    args = parser.parse_args()
    entries = read_procfile(args.procfile)
    if not entries:
        sys.exit(f"error: no process in {args.procfile}")
    banner = ""
    if args.banner_file:
        with open(args.banner_file, encoding="utf-8") as f:
            banner = f.read()
    supervisor = Supervisor(entries, ready_url=args.ready_url, banner=banner)
    signal.signal(signal.SIGINT, supervisor.on_signal)
    signal.signal(signal.SIGTERM, supervisor.on_signal)
    signal.signal(signal.SIGHUP, supervisor.on_signal)
    saved = take_terminal()
    try:
        return supervisor.run()
    finally:
        give_back_terminal(saved)


if __name__ == "__main__":
    sys.exit(main())
