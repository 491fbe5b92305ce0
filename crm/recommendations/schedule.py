"""Beat entry for the recommendations; config/settings.py merges RECOMMENDATIONS_BEAT_SCHEDULE into
CELERY_BEAT_SCHEDULE. Kept free of model imports so settings can import it. Times are UTC."""

from celery.schedules import crontab

RECOMMENDATIONS_BEAT_SCHEDULE = {
    # 19:00 UTC = 03:00 in Asia/Shanghai, after the day's orders are in.
    "crm-recommendations-nightly": {
        "task": "crm.recommendations.refresh",
        "schedule": crontab(hour=19, minute=0),
    },
}
