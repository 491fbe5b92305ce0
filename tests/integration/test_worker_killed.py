"""A worker killed mid-import, whole process group and all, on both brokers: the job's lease lapses, the
reaper queues it again, and a new worker finishes it exactly once, within a minute, with every customer,
order, line and event of the file stored once.

On the file-system broker (the `make run` default) the killed worker's message is gone for good; on Redis
it waits in the unacknowledged set for the visibility timeout (half an hour): neither is what brings the
job back, the lease is. The workers run with a short lease (JOB_LEASE_SECONDS) so the test is quick, and
the test sends the reaper's task as beat would (every REAP_EVERY seconds), because beat would also send
every other periodic task of the product to the one worker. That the reaper is in the beat schedule is
tested in tests/crm/test_import_job_leases.py.

The time to recovery (from the kill to the job done) is printed; run with `-s` to see it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import connections
from django.db.models import Count

from crm.models import Customer, Event, ImportJob, Order, OrderLine
from crm.services.imports import ORDER_BATCH_ROWS
from crm.services.imports.jobs import import_job_submit
from tests.conftest import (
    REPO_ROOT,
    WORKER_READY_TIMEOUT,
    CeleryWorker,
    _database_url,
    _drop_cached_publishers,
    _filesystem_broker_options,
)

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

LEASE_SECONDS = 4
REAP_EVERY = 1.0
RECOVERY_BOUND = 60.0  # the "within a minute"
DEADLINE = 180.0  # how long the test waits for anything at all before it fails with the worker's log
CUSTOMERS = 5_000
ORDERS = 2 * ORDER_BATCH_ROWS + 10_000  # three batches: the kill falls after the first one committed
REDIS_URL = "redis://127.0.0.1:6379/14"  # a database no other part of the suite uses


def orders_csv() -> bytes:
    lines = ["customer_external_id,order_external_id,ordered_at,amount,channel,sku,quantity"]
    lines += [
        f"KILL-C{n % CUSTOMERS},KILL-O{n},2026-03-08 20:15:00,{10 + n % 90}.00,tmall,SKU-{n % 7},1"
        for n in range(ORDERS)
    ]
    return ("\n".join(lines) + "\n").encode()


@pytest.fixture(params=["filesystem", "redis"])
def broker(request, tmp_path, settings):
    """The broker the workers and this test share, private to the test; yields the workers' environment."""
    from config.celery import app

    if request.param == "filesystem":
        url, options = "filesystem://", _filesystem_broker_options(tmp_path / "broker")
        env = {"CELERY_BROKER_URL": url, "CELERY_BROKER_DIR": str(tmp_path / "broker")}
    else:
        prefix = f"pytest-{uuid.uuid4().hex[:12]}:"
        url, options = REDIS_URL, {"visibility_timeout": 1800, "global_keyprefix": prefix}
        env = {"CELERY_BROKER_URL": url, "CELERY_REDIS_KEY_PREFIX": prefix}
    settings.CELERY_BROKER_URL, settings.CELERY_BROKER_TRANSPORT_OPTIONS = url, options
    saved = {key: app.conf[key] for key in ("broker_url", "broker_transport_options", "task_always_eager")}
    app.conf.update(broker_url=url, broker_transport_options=options, task_always_eager=False)
    _drop_cached_publishers(app)
    try:
        yield request.param, env
    finally:
        app.conf.update(saved)
        _drop_cached_publishers(app)
        if request.param == "redis":
            import redis

            client = redis.Redis.from_url(REDIS_URL)
            keys = list(client.scan_iter(match=f"{options['global_keyprefix']}*"))
            if keys:
                client.delete(*keys)
            client.close()


def start_worker(env: dict) -> CeleryWorker:
    """A prefork worker (a main process and its pool child) in a process group of its own."""
    from config.celery import app

    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "config",
            "worker",
            "--pool=prefork",
            "--concurrency=1",
            "-l",
            "info",
            "--without-mingle",
            "--without-gossip",
            "--without-heartbeat",
            "-n",
            f"pytest-{uuid.uuid4().hex[:8]}@%h",
        ],
        cwd=REPO_ROOT,
        env={
            **os.environ,
            "DATABASE_URL": _database_url(connections["default"].settings_dict),
            "CELERY_TASK_ALWAYS_EAGER": "false",
            "DJANGO_ENV": os.environ.get("DJANGO_ENV", "test"),
            "PYTHONUNBUFFERED": "1",
            "JOB_LEASE_SECONDS": str(LEASE_SECONDS),
            **env,
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        errors="replace",
        start_new_session=True,  # its own process group, which the test kills whole
    )
    worker = CeleryWorker(app=app, broker_dir=None, process=process)
    worker.wait_for_log(r"\bready\.", timeout=WORKER_READY_TIMEOUT)
    return worker


def kill_group(worker: CeleryWorker) -> None:
    os.killpg(worker.process.pid, signal.SIGKILL)
    worker.process.wait()
    worker._reader.join(5)


class Beat:
    """Sends the reaper's task every REAP_EVERY seconds, as beat does with LEASE_REAP_SECONDS."""

    def __init__(self, app):
        self.app = app
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(REAP_EVERY):
            self.app.send_task("crm.tasks.leases_reap")

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def poll(condition, what: str, worker: CeleryWorker) -> float:
    deadline = time.monotonic() + DEADLINE
    while True:
        if condition():
            return time.monotonic()
        if time.monotonic() > deadline:
            worker._fail(f"{what} within {DEADLINE:g}s", "")
        time.sleep(0.05)


def test_a_killed_worker_s_import_is_finished_once_by_a_new_worker(broker):
    name, env = broker
    job = ImportJob(kind=ImportJob.Kind.ORDERS)
    job.file.save("kill-test.csv", ContentFile(orders_csv()), save=False)
    first = start_worker(env)
    workers = [first]
    try:
        import_job_submit(job=job, created_by=None)

        def first_batch_committed() -> bool:
            job.refresh_from_db()
            return job.status == ImportJob.Status.RUNNING and 0 < job.processed_rows < ORDERS

        poll(first_batch_committed, "the first worker committed a batch", first)
        kill_group(first)
        killed_at = time.monotonic()
        job.refresh_from_db()
        assert job.status == ImportJob.Status.RUNNING and job.processed_rows < ORDERS
        assert Order.objects.count() < ORDERS

        with Beat(first.app):
            second = start_worker(env)
            workers.append(second)

            def done() -> bool:
                job.refresh_from_db()
                return job.status in (ImportJob.Status.DONE, ImportJob.Status.FAILED)

            done_at = poll(done, "the job was finished by the new worker", second)
        recovery = done_at - killed_at
        print(f"\n[{name}] time to recovery after SIGKILL of the worker group: {recovery:.1f}s")

        assert job.status == ImportJob.Status.DONE, job.message
        assert job.lease_claims == 2 and job.lease_token is None  # claimed by each worker, once
        assert (job.processed_rows, job.error_count) == (ORDERS, 0)
        assert job.created_count + job.unchanged_count == ORDERS
        assert second.output().count("import_job_run") and "Traceback" not in second.output()
        assert Customer.objects.count() == CUSTOMERS
        assert Order.objects.count() == ORDERS
        assert OrderLine.objects.count() == ORDERS
        assert Event.objects.filter(type="order_placed").count() == ORDERS
        assert not Order.objects.values("external_id").annotate(n=Count("id")).filter(n__gt=1).exists()
        assert not (
            Event.objects.filter(type="order_placed")
            .values("properties__order_external_id")
            .annotate(n=Count("id"))
            .filter(n__gt=1)
            .exists()
        )
        assert recovery < RECOVERY_BOUND, f"recovered in {recovery:.1f}s"
    finally:
        for worker in workers:
            if worker.process.poll() is None:
                kill_group(worker)
        if job.file:
            default_storage.delete(job.file.name)
