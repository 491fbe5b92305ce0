"""Reads that other code, the admin and the API use: consent and the timeline (customers.py) and the
customer 360 page (customer_360.py)."""

from crm.selectors.customers import customer_has_consent, customer_timeline, customers_with_consent  # noqa: F401
