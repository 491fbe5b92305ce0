"""Beat entries of the loyalty programme; config/settings.py merges LOYALTY_BEAT_SCHEDULE into
CELERY_BEAT_SCHEDULE. Kept free of model imports so settings can import it."""

from celery.schedules import crontab

# Times are UTC (CELERY_TIMEZONE). Birthdays run hourly because "today" starts at a different UTC hour in
# each customer's time zone; the idempotency key (customer, year) makes the repeats harmless. Expiry runs
# at 16:05 UTC, just after midnight in Asia/Shanghai, where "end of the year" lots fall due.
LOYALTY_BEAT_SCHEDULE = {
    "loyalty-accrue-events": {"task": "loyalty.tasks.accrue_events", "schedule": 10.0},
    "loyalty-release-pending": {"task": "loyalty.tasks.release_pending", "schedule": 300.0},
    "loyalty-accrual-sweep": {"task": "loyalty.tasks.accrual_sweep", "schedule": crontab(minute=30, hour=18)},
    "loyalty-expiring-notices": {
        "task": "loyalty.tasks.expiring_notices",
        "schedule": crontab(minute=0, hour=1),
    },
    "loyalty-expire-points": {"task": "loyalty.tasks.expire_points", "schedule": crontab(minute=5, hour=16)},
    "loyalty-tier-reviews": {"task": "loyalty.tasks.tier_reviews", "schedule": crontab(minute=0, hour=17)},
    "loyalty-birthday-bonuses": {"task": "loyalty.tasks.birthday_bonuses", "schedule": crontab(minute=1)},
}
