"""Beat entries of crm's own periodic tasks; config/settings.py merges `jobs_beat_schedule()` into
CELERY_BEAT_SCHEDULE. Kept free of model imports so settings can import it."""

REAP_TASK = "crm.tasks.leases_reap"


def jobs_beat_schedule(*, reap_every: float) -> dict:
    """The lease reaper: every `reap_every` seconds, resume the long jobs whose worker died. A killed job
    resumes within a lease plus this interval (JOB_LEASE_SECONDS, LEASE_REAP_SECONDS)."""
    return {"crm-leases-reap": {"task": REAP_TASK, "schedule": float(reap_every)}}
