"""Settings for the web server of test_throttle_across_processes: the project's, with a member read limit
small enough that a burst of three times it is quick to send (no test module in here)."""

from config.settings import *  # noqa: F403
from config.settings import REST_FRAMEWORK

MEMBER_READ_LIMIT = 10

REST_FRAMEWORK = {
    **REST_FRAMEWORK,
    "DEFAULT_THROTTLE_RATES": {"loyalty_member": f"{MEMBER_READ_LIMIT}/hour"},
}
