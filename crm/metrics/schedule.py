"""Beat entry of the nightly metrics; config/settings.py merges METRICS_BEAT_SCHEDULE into
CELERY_BEAT_SCHEDULE. Kept free of model imports so settings can import it."""

from celery.schedules import crontab

TASK_NAME = "crm.metrics.compute_metrics"

# 18:30 UTC is 02:30 in Asia/Shanghai: after the brand's day is over, before its morning journeys.
METRICS_BEAT_SCHEDULE = {
    "crm-metrics-nightly": {"task": TASK_NAME, "schedule": crontab(hour=18, minute=30)},
}
