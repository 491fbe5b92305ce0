"""Deploy checks of our own, run by `manage.py check --deploy`."""

from django.conf import settings
from django.core import checks

PER_PROCESS_CACHES = (
    "django.core.cache.backends.locmem.LocMemCache",
    "django.core.cache.backends.dummy.DummyCache",
)


@checks.register(checks.Tags.security, deploy=True)
def shared_cache_check(app_configs, **kwargs):
    """The member API's rate limits and sign-in throttle count in the default cache. A per-process cache
    counts each web worker apart, so with four workers a 30-per-minute limit lets about four times that
    through: production needs a cache every process shares."""
    backend = settings.CACHES["default"]["BACKEND"]
    if backend in PER_PROCESS_CACHES:
        return [
            checks.Error(
                f"The default cache ({backend}) is private to each process, so rate limits and sign-in "
                "throttles would count each web worker separately.",
                hint="Set CACHE_URL to a cache all processes share, e.g. redis://127.0.0.1:6379/1.",
                id="project.E001",
            )
        ]
    return []
