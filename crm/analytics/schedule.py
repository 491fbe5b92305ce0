"""Beat entries for the dashboards; config/settings.py merges ANALYTICS_BEAT_SCHEDULE into
CELERY_BEAT_SCHEDULE. Kept free of model imports so settings can import it. Times are UTC
(CELERY_TIMEZONE)."""

from celery.schedules import crontab

ANALYTICS_BEAT_SCHEDULE = {
    # 19:30 UTC = 03:30 in Asia/Shanghai: an hour after the nightly metrics (18:30 UTC), so lifecycle
    # stages and predicted values are fresh.
    "crm-analytics-nightly": {"task": "crm.analytics.refresh", "schedule": crontab(hour=19, minute=30)},
    # Once a week every attribution month again (refunds can change older months).
    "crm-analytics-weekly-full": {
        "task": "crm.analytics.refresh",
        "schedule": crontab(hour=20, minute=30, day_of_week=0),
        "kwargs": {"full": True},
    },
}
