"""Customer analytics for the admin dashboards: lifecycle stages over time, cohort retention, order
figures (repeat-purchase rate, average order value), lifetime value against acquisition cost, the
conversion funnel and revenue attribution.

Each chart's figures are computed set-based in SQL (`compute.py`, `attribution.py`, `funnel.py`) and
stored nightly as `DashboardSummary` rows (`services.py`), so the JSON endpoints (`views.py`) read one
row instead of scanning the order and event history. The charts are drawn in the browser
(static/crm/analytics/dashboard.js, Chart.js from npm).
"""
