"""Beat entries of the journeys engine; config/settings.py merges `journeys_beat_schedule()` into
CELERY_BEAT_SCHEDULE. Kept free of model imports so settings can import it."""

DISPATCH_TASK = "journeys.tasks.dispatch_wake"
MIGRATIONS_TASK = "journeys.tasks.version_migrations_continue"
TIME_TRIGGERS_TASK = "journeys.tasks.time_triggers_wake"


def journeys_beat_schedule(
    *, dispatch_every: float = 2.0, migrations_every: float = 30.0, time_triggers_every: float = 60.0
) -> dict:
    """One task wakes the engine every `dispatch_every` seconds: the worker that takes it reads the event
    log and advances what is due for up to JOURNEYS_DISPATCH_SECONDS; a wake that waited longer than its
    interval is dropped (`expires`), the next one comes anyway. Waits are rows with a due time, and a
    killed worker's batch comes due again when its lease ends.

    A second task computes the time-based entries (birthdays, calendar dates, segments, events not
    followed in time) every `time_triggers_every` seconds; the customers it enters are due at once and
    the engine's wake advances them. The third finishes moving customers in flight to a newly published
    version (journeys/services/versions.py): the enrollments a dispatcher held when the publish moved
    the rest."""
    return {
        "journeys-dispatch": {
            "task": DISPATCH_TASK,
            "schedule": float(dispatch_every),
            "options": {"expires": float(dispatch_every)},
        },
        "journeys-time-triggers": {
            "task": TIME_TRIGGERS_TASK,
            "schedule": float(time_triggers_every),
            "options": {"expires": float(time_triggers_every)},
        },
        "journeys-version-migrations": {
            "task": MIGRATIONS_TASK,
            "schedule": float(migrations_every),
            "options": {"expires": float(migrations_every)},
        },
    }
