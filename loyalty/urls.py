"""The member portal; mounted at /member/ by config/urls.py."""

from django.urls import path

from loyalty import views

app_name = "loyalty"

urlpatterns = [
    path("", views.home_view, name="home"),
    path("login/", views.login_view, name="login"),
    path("login/link/", views.link_request_view, name="link-request"),
    path("link/<str:token>/", views.link_view, name="link"),
    path("join/", views.join_view, name="join"),
    path("logout/", views.logout_view, name="logout"),
    path("history/", views.history_view, name="history"),
    path("tiers/", views.tiers_view, name="tiers"),
    path("rewards/", views.rewards_view, name="rewards"),
    path("rewards/<int:pk>/redeem/", views.reward_redeem_view, name="reward-redeem"),
    path("redemptions/<int:pk>/", views.redemption_view, name="redemption"),
    path("coupons/", views.coupons_view, name="coupons"),
    path("referral/", views.referral_view, name="referral"),
    path("password/", views.password_view, name="password"),
]
