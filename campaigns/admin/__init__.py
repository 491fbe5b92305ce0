"""The campaigns app's admin: the outbox (messages, dead letters, the delivery overview), templates, the
delivery rules (frequency caps, delivery settings, the suppression list), provider state, and the customer
360's "Messages" panel."""

from campaigns.admin import customer_360, delivery, messages, rules, templates  # noqa: F401
