import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.utils import timezone

from crm.models import Heartbeat
from crm.tasks import beat_heartbeat

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.django_db
def test_healthz_reports_database_broker_and_when_beat_last_ran(client):
    response = client.get("/healthz")
    body = response.json()
    assert response.status_code == 200
    assert body["database"]["ok"] and body["broker"]["ok"]
    assert body["beat"] == {"ok": False, "last_run": None}
    assert body["status"] == "degraded"

    beat_heartbeat()
    body = client.get("/healthz").json()
    assert body["status"] == "ok"
    assert body["beat"]["last_run"] == Heartbeat.objects.get(name="beat").beat_at.isoformat()
    assert Heartbeat.objects.get(name="beat").beat_at <= timezone.now()


def _manage(*args, env_extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")}
    env.update(env_extra)
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def test_check_deploy_is_clean_with_production_variables():
    result = _manage(
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        env_extra={
            "DJANGO_ENV": "production",
            "DJANGO_SECRET_KEY": "k9$Fq2!vX7pL0zR4tW8yB1nM6cJ3hG5dS-aE_uI+oP=QwZxVbN",
            "DJANGO_ALLOWED_HOSTS": "crm.example.com",
            "CACHE_URL": "redis://127.0.0.1:6379/1",
        },
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_check_deploy_fails_when_rate_limits_would_count_per_process():
    result = _manage(
        "check",
        "--deploy",
        env_extra={
            "DJANGO_ENV": "production",
            "DJANGO_SECRET_KEY": "k9$Fq2!vX7pL0zR4tW8yB1nM6cJ3hG5dS-aE_uI+oP=QwZxVbN",
            "DJANGO_ALLOWED_HOSTS": "crm.example.com",
        },
    )
    assert result.returncode != 0
    assert "project.E001" in result.stderr + result.stdout
    assert "CACHE_URL" in result.stderr + result.stdout


def test_production_refuses_to_start_without_a_secret_key():
    result = _manage(
        "check", env_extra={"DJANGO_ENV": "production", "DJANGO_ALLOWED_HOSTS": "crm.example.com"}
    )
    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY" in result.stderr


def test_production_logs_are_one_json_object_per_line():
    code = "import logging, django; django.setup(); logging.getLogger('crm').warning('hello %s', 'world')"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")}
    env.update(
        {
            "DJANGO_ENV": "production",
            "DJANGO_SECRET_KEY": "k9$Fq2!vX7pL0zR4tW8yB1nM6cJ3hG5dS-aE_uI+oP=QwZxVbN",
            "DJANGO_ALLOWED_HOSTS": "crm.example.com",
            "DJANGO_SETTINGS_MODULE": "config.settings",
        }
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    import json

    lines = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    assert any(entry["message"] == "hello world" and entry["level"] == "WARNING" for entry in lines), (
        result.stderr
    )


@pytest.mark.django_db
def test_staff_roles_exist_with_their_permissions():
    from django.contrib.auth.models import Group

    perms = {g.name: set(g.permissions.values_list("codename", flat=True)) for g in Group.objects.all()}
    assert {"administrator", "marketer", "analyst", "support"} <= set(perms)
    assert "view_customer" in perms["analyst"] and "change_customer" not in perms["analyst"]
    assert "change_customer" in perms["support"] and "delete_customer" not in perms["support"]
    assert "change_customer" not in perms["marketer"] and "add_tag" in perms["marketer"]


def test_language_follows_the_browser(client, db):
    response = client.get("/admin/login/", HTTP_ACCEPT_LANGUAGE="zh-hans")
    assert response.headers["Content-Language"] == "zh-hans"
    assert "用户名" in response.content.decode()
