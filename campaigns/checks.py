"""System checks of the messaging settings, so a mistyped provider is reported by `manage.py check` (and at
start-up) rather than by the first message that tries to go out."""

from django.conf import settings
from django.core import checks


@checks.register()
def messaging_providers_check(app_configs, **kwargs):
    from campaigns.providers.registry import providers_problems

    errors = [
        checks.Error(problem, hint="See campaigns/providers/registry.py.", id="campaigns.E001")
        for problem in providers_problems()
    ]
    url = getattr(settings, "MESSAGING_RATE_LIMIT_URL", "db")
    if not isinstance(url, str) or not (url == "db" or url.startswith(("redis://", "rediss://", "unix://"))):
        errors.append(
            checks.Error(
                f"MESSAGING_RATE_LIMIT_URL must be 'db' or a redis:// URL, not {url!r}",
                id="campaigns.E002",
            )
        )
    return errors
