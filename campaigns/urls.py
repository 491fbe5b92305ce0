"""The links messages carry; mounted at the site's root by config/urls.py. The paths are short because
they go into SMS."""

from django.urls import path

from campaigns import views

app_name = "campaigns"

urlpatterns = [
    path("m/o/<str:token>.gif", views.open_pixel, name="open"),
    path("m/c/<str:token>", views.click, name="click"),
    path("m/u/<str:token>", views.unsubscribe, name="unsubscribe"),
]
