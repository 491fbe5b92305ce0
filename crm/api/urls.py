from django.urls import path

from crm.api import views

urlpatterns = [
    path("customers/", views.CustomerUpsertView.as_view(), name="api-customer-upsert"),
    path("customers/batch/", views.CustomerBatchView.as_view(), name="api-customer-batch"),
    path("customers/<int:pk>/", views.CustomerDetailView.as_view(), name="api-customer-detail"),
    path("events/", views.EventBatchView.as_view(), name="api-events"),
    path("orders/", views.OrderView.as_view(), name="api-order"),
    path("orders/batch/", views.OrderBatchView.as_view(), name="api-order-batch"),
    # Marketplace order ids may contain slashes; `path` takes them whole.
    path("orders/<path:order_external_id>/refunds/", views.RefundView.as_view(), name="api-order-refunds"),
]
