"""Beat entries of the delivery pipeline; config/settings.py merges `messaging_beat_schedule()` into
CELERY_BEAT_SCHEDULE. Kept free of model imports so settings can import it."""

DISPATCH_TASK = "campaigns.tasks.dispatch_wake"
REAP_TASK = "campaigns.tasks.outbox_reap"


def messaging_beat_schedule(*, dispatch_every: float = 2.0, reap_every: float = 15.0) -> dict:
    """Wake the dispatcher every `dispatch_every` seconds: the worker that takes the wake drains what is
    due for up to MESSAGING_DISPATCH_SECONDS, so with a backlog every worker process is busy within a few
    wakes. A wake that waited in the queue longer than its interval is dropped (`expires`): busy workers
    do not pile up wakes, the next one comes anyway. The reaper takes back what dead workers held."""
    return {
        "campaigns-dispatch": {
            "task": DISPATCH_TASK,
            "schedule": float(dispatch_every),
            "options": {"expires": float(dispatch_every)},
        },
        "campaigns-outbox-reap": {
            "task": REAP_TASK,
            "schedule": float(reap_every),
            "options": {"expires": float(reap_every)},
        },
    }
