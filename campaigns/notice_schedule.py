"""Beat entry of the transactional notices; config/settings.py merges NOTICES_BEAT_SCHEDULE into
CELERY_BEAT_SCHEDULE. Model-free so settings can import it. (campaigns/schedule.py is the outbox's.)"""

NOTICES_BEAT_SCHEDULE = {
    # Every 15 s: a points notice within a minute of the points, and an empty run costs one query.
    "campaigns-notices": {"task": "campaigns.notices_run", "schedule": 15.0},
}
