"""The campaigns app's admin: campaigns, the outbox (messages, dead letters, the delivery overview),
templates, the delivery rules (frequency caps, delivery settings, the suppression list), the marketing
calendar, provider state, and the customer 360's "Messages" panel."""

from campaigns.admin import (  # noqa: F401
    calendar,
    campaigns,
    customer_360,
    delivery,
    messages,
    reports,
    rules,
    templates,
)
