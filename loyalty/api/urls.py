"""Mounted under /api/v1/ by config/urls.py."""

from django.urls import path

from loyalty.api import views

app_name = "loyalty-api"

urlpatterns = [
    path("me/token", views.TokenView.as_view(), name="me-token"),
    path("me", views.MeView.as_view(), name="me"),
    path("me/points", views.PointsView.as_view(), name="me-points"),
    path("me/history", views.HistoryView.as_view(), name="me-history"),
    path("me/rewards", views.RewardsView.as_view(), name="me-rewards"),
    path("me/rewards/<int:pk>/redeem", views.RewardRedeemView.as_view(), name="me-reward-redeem"),
    path("me/redemptions/<int:pk>", views.RedemptionView.as_view(), name="me-redemption"),
    path("me/coupons", views.CouponsView.as_view(), name="me-coupons"),
    path("me/referral", views.ReferralView.as_view(), name="me-referral"),
    path("coupons/validate", views.CouponValidateView.as_view(), name="coupon-validate"),
    path("coupons/redeem", views.CouponRedeemView.as_view(), name="coupon-redeem"),
]
