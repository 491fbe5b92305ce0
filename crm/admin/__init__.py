"""The staff admin of the CDP, one module per subject. Importing this package registers every crm
ModelAdmin with admin.site (Django's autodiscover imports `crm.admin`).

- base.py: what every crm admin shares (customer links, large-table lists, read-only admins)
- search.py: the customer list's search
- customers.py, forms.py: the customer list and its actions; customer_360.py: the 360 page (its data is
  read by crm.selectors.customer_360) and the panel registry later apps fill
- orders.py, events.py, tags.py, records.py (merges, privacy requests, consent changes), api_keys.py
- imports.py (CSV import jobs), metrics.py (customer intelligence), segments.py (segments, static lists,
  snapshots), analytics.py (dashboards, acquisition costs), recommendations.py (product affinities)

Built for a million customers: the customer list never counts the whole table (crm.paginators), search
runs a few targeted index lookups, and the 360 page issues a fixed number of queries however much data
the customer has. Writes go through the services; the admin only validates the shape of what staff typed.
"""

from crm.admin import (  # noqa: F401
    analytics,
    api_keys,
    customers,
    events,
    imports,
    metrics,
    orders,
    recommendations,
    records,
    segments,
    tags,
)
