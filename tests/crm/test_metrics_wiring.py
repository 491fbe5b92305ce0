"""The metrics are wired into the project: the worker knows the task, beat schedules it, the admin shows
the models, and customer merges know about the one-to-one metrics row.

These check the lines that live outside the metrics modules (crm/tasks.py, crm/admin/__init__.py, crm/apps.py,
config/settings.py); see docs/metrics.md "Wiring". Start-up wiring is checked in a fresh process: other
tests import the metrics modules directly, which would hide a missing import here."""

import json
import subprocess
import sys
from pathlib import Path

from django.conf import settings

from crm.metrics.tasks import METRICS_BEAT_SCHEDULE, TASK_NAME

ROOT = Path(__file__).resolve().parents[2]

_PROBE = """
import json, django
django.setup()
from django.contrib import admin
from crm.models.metrics import CustomerMetrics, LifecycleSettings, MetricsRun
from crm.services.customers import _merge_handlers
from config.celery import app
import crm.tasks
app.loader.import_default_modules()
print(json.dumps({
    "admin": [admin.site.is_registered(m) for m in (LifecycleSettings, MetricsRun, CustomerMetrics)],
    "merge_handler": "crm.metrics" in _merge_handlers,
    "tasks": sorted(app.tasks),
}))
"""


def _fresh_process_state() -> dict:
    result = subprocess.run(
        [sys.executable, "-c", _PROBE], cwd=ROOT, capture_output=True, text=True, timeout=120, check=True
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_start_up_registers_admin_merge_handler_and_task():
    state = _fresh_process_state()
    assert state["admin"] == [True, True, True], "crm/admin/__init__.py must import crm.admin.metrics"
    assert state["merge_handler"], "CrmConfig.ready must call crm.metrics.merge.register_merge_handler()"
    assert TASK_NAME in state["tasks"], "crm/tasks.py must import crm.metrics.tasks.compute_metrics"


def test_beat_runs_the_metrics_nightly():
    for name, entry in METRICS_BEAT_SCHEDULE.items():
        assert settings.CELERY_BEAT_SCHEDULE.get(name) == entry, "merge METRICS_BEAT_SCHEDULE into settings"
