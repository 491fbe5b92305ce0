"""/healthz: does the database answer, does the broker answer, when did beat last run."""

from datetime import timedelta

from django.db import connection
from django.http import JsonResponse
from django.utils import timezone

from config.celery import app as celery_app

BEAT_STALE_AFTER = timedelta(minutes=5)


def _database() -> dict:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return {"ok": True}
    except Exception as exc:  # noqa: BLE001 - any failure means "not healthy", reported, not raised
        return {"ok": False, "error": str(exc)[:200]}


def _broker() -> dict:
    try:
        with celery_app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
        return {"ok": True}
    except Exception as exc:  # noqa: BLE001
        return {"ok": False, "error": str(exc)[:200]}


def _beat() -> dict:
    from crm.models import Heartbeat

    try:
        beat = Heartbeat.objects.filter(name="beat").values_list("beat_at", flat=True).first()
    except Exception as exc:  # noqa: BLE001
        return {"ok": False, "error": str(exc)[:200]}
    if beat is None:
        return {"ok": False, "last_run": None}
    return {"ok": timezone.now() - beat < BEAT_STALE_AFTER, "last_run": beat.isoformat()}


def healthz(request):
    checks = {"database": _database(), "broker": _broker(), "beat": _beat()}
    # Beat being late degrades the service but does not make the web tier unable to serve.
    healthy = checks["database"]["ok"] and checks["broker"]["ok"]
    return JsonResponse(
        {
            "status": "ok" if healthy and checks["beat"]["ok"] else ("degraded" if healthy else "down"),
            **checks,
        },
        status=200 if healthy else 503,
    )
