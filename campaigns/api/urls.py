"""Mounted under /api/v1/ by config/urls.py."""

from django.urls import path

from campaigns.api import views

urlpatterns = [
    path("messages/", views.MessageSendView.as_view(), name="api-message-send"),
    path("messages/<int:pk>/", views.MessageDetailView.as_view(), name="api-message-detail"),
]
