"""The campaigns app's admin: the outbox (messages, dead letters, the delivery overview), the delivery
rules (frequency caps, delivery settings, the suppression list), provider state, and the customer 360's
"Messages" panel. The template admin is campaigns/admin/templates.py (the templates work)."""

import importlib.util

from campaigns.admin import customer_360, delivery, messages, rules  # noqa: F401

if importlib.util.find_spec("campaigns.admin.templates") is not None:
    from campaigns.admin import templates  # noqa: F401
