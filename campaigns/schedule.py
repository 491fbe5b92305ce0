"""Beat entries of the delivery pipeline; config/settings.py merges `messaging_beat_schedule()` into
CELERY_BEAT_SCHEDULE. Kept free of model imports so settings can import it."""

DISPATCH_TASK = "campaigns.tasks.dispatch_wake"
REAP_TASK = "campaigns.tasks.outbox_reap"
# The one beat task of campaigns: recurring occurrences' runs first, then core's pass over due runs.
CAMPAIGN_RUNS_TASK = "campaigns.tasks.campaign_schedule_dispatch"
WINNERS_TASK = "campaigns.tasks.campaign_winners_pick"
REPORTS_TASK = "campaigns.tasks.campaign_reports_refresh"


def messaging_beat_schedule(*, dispatch_every: float = 2.0, reap_every: float = 15.0) -> dict:
    """Wake the dispatcher every `dispatch_every` seconds: the worker that takes the wake drains what is
    due for up to MESSAGING_DISPATCH_SECONDS, so with a backlog every worker process is busy within a few
    wakes. A wake that waited in the queue longer than its interval is dropped (`expires`): busy workers
    do not pile up wakes, the next one comes anyway. The reaper takes back what dead workers held. The
    campaign runs' pass starts due runs and settles finished ones."""
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
        # Due campaign runs start within this, and finished ones are settled (sent or partly delivered).
        "campaigns-runs-dispatch": {
            "task": CAMPAIGN_RUNS_TASK,
            "schedule": 10.0,
            "options": {"expires": 10.0},
        },
        # Runs whose A/B test has waited `winner_wait` get their winner, sent to the rest; a winner is
        # due at most this late after its wait ends.
        "campaigns-winners-pick": {
            "task": WINNERS_TASK,
            "schedule": 30.0,
            "options": {"expires": 30.0},
        },
        # The stored reports of runs still counting conversions (campaigns/services/reports.py); each
        # pass refreshes the few stalest, so a minute is enough for reports refreshed every 5 minutes.
        "campaigns-reports-refresh": {
            "task": REPORTS_TASK,
            "schedule": 60.0,
            "options": {"expires": 60.0},
        },
    }
