"""JSON endpoints of the analytics dashboard (admin » Customers » Dashboards draws them).

Mounted by config/urls.py: path("analytics/", include("crm.urls_analytics"))."""

from django.urls import path

from crm.analytics import views

app_name = "crm_analytics"

urlpatterns = [
    path("lifecycle.json", views.lifecycle_view, name="lifecycle"),
    path("cohorts.json", views.cohorts_view, name="cohorts"),
    path("orders.json", views.orders_view, name="orders"),
    path("ltv.json", views.ltv_view, name="ltv"),
    path("funnel.json", views.funnel_view, name="funnel"),
    path("attribution.json", views.attribution_view, name="attribution"),
    path("jobs/metrics.json", views.metrics_job_view, name="metrics_job"),
    path("jobs/dashboards.json", views.dashboards_job_view, name="dashboards_job"),
]
