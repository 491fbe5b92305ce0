"""Input serializers check shape; output is built by small functions (the hot endpoints skip the
serializer machinery, which costs more than the queries behind them)."""

from django.utils.translation import gettext_lazy as _
from rest_framework import serializers

from crm.api.serializers import ErrorSerializer
from loyalty.services.coupons import code_display


class TokenRequestSerializer(serializers.Serializer):
    email = serializers.EmailField()
    password = serializers.CharField(max_length=256, trim_whitespace=False)
    device = serializers.CharField(max_length=100, required=False, allow_blank=True, default="")


class RedeemRequestSerializer(serializers.Serializer):
    idempotency_key = serializers.RegexField(
        r"^[A-Za-z0-9_.:-]{8,100}$",
        help_text=_("A key the app makes per redemption attempt (a UUID); retrying with it is safe."),
        error_messages={"invalid": _("Use 8–100 letters, digits, '-', '_', '.' or ':'.")},
    )


class CouponCheckSerializer(serializers.Serializer):
    code = serializers.CharField(max_length=40)
    order_total = serializers.DecimalField(max_digits=14, decimal_places=2, min_value=0)
    currency = serializers.RegexField(r"^[A-Za-z]{3}$", default="CNY")
    customer_external_id = serializers.CharField(max_length=64, required=False, allow_blank=True)


class CouponRedeemSerializer(CouponCheckSerializer):
    order_reference = serializers.CharField(max_length=100)
    store = serializers.CharField(max_length=100, required=False, allow_blank=True, default="")


def _dt(value):
    return value.isoformat() if value else None


def tier_json(tier):
    if tier is None:
        return None
    return {"code": tier.code, "name": tier.name, "rank": tier.rank}


def summary_json(summary) -> dict:
    progress = summary.progress
    return {
        "available": summary.available,
        "pending": summary.pending,
        "owed": summary.owed,
        "tier": tier_json(summary.tier),
        "tier_since": _dt(summary.tier_since),
        "next_tier": tier_json(progress.next_tier),
        "progress": {
            "basis": progress.basis,
            "window_months": progress.window_months,
            "value": str(progress.value),
            "to_next_tier": str(progress.amount_to_next),
            "percent": progress.percent,
        },
        "expiring_soon": {
            "points": summary.expiring_soon,
            "until": _dt(summary.expiring_soon_until),
            "dates": [
                {
                    "points": item.points,
                    "expires_at": _dt(item.expires_at),
                    "last_day": item.last_day.isoformat(),
                    "at_day_end": item.at_day_end,
                }
                for item in summary.expiring_soon_dates
            ],
        },
        "next_expiry_at": _dt(summary.next_expiry_at),
        "next_available_at": _dt(summary.next_available_at),
    }


def entry_json(entry) -> dict:
    return {
        "id": entry.pk,
        "kind": entry.kind,
        "kind_display": str(entry.get_kind_display()),
        "points": entry.points,
        "pending": entry.pending_delta,
        "reason": entry.reason_display,
        "reference": entry.reference,
        "order": entry.order.external_id if entry.order_id else None,
        "occurred_at": _dt(entry.occurred_at),
    }


def coupon_json(coupon, *, now=None) -> dict:
    programme = coupon.programme
    valid_from, valid_until = coupon.effective_window(programme)
    return {
        "code": coupon.code,
        "display_code": code_display(coupon.code),
        "programme": programme.name,
        "discount_kind": programme.discount_kind,
        "discount_value": str(programme.discount_value),
        "currency": programme.currency,
        "min_spend": str(programme.min_spend),
        "uses_left": coupon.uses_left,
        "valid_from": _dt(valid_from),
        "valid_until": _dt(valid_until),
        "revoked": coupon.revoked_at is not None,
        "issued_at": _dt(coupon.issued_at),
    }


def offer_json(offer) -> dict:
    reward = offer.reward
    return {
        "id": reward.pk,
        "name": reward.name,
        "description": reward.description,
        "points_price": reward.points_price,
        "stock": reward.stock,
        "per_member_limit": reward.per_member_limit,
        "redeemed_by_me": offer.redeemed_by_member,
        "min_tier": tier_json(reward.min_tier),
        "available_until": _dt(reward.valid_until),
        "affordable": offer.affordable,
        "eligible": offer.eligible,
        "reason": offer.reason,
    }


def redemption_json(redemption) -> dict:
    return {
        "id": redemption.pk,
        "reward": {"id": redemption.reward_id, "name": redemption.reward.name},
        "points": redemption.points,
        "coupon": coupon_json(redemption.coupon),
        "redeemed_at": _dt(redemption.created_at),
    }


# --- Response shapes, for the OpenAPI schema (the views build these dicts directly) -----------------


class CodedErrorOut(ErrorSerializer):
    code = serializers.CharField(
        required=False,
        help_text=_("Stable reason for clients: invalid_credentials, locked_out, not_found, used_up, …"),
    )


class CodedErrorsOut(serializers.Serializer):
    """The API's one error shape; refusals of the loyalty services add a stable `code` to the error."""

    errors = CodedErrorOut(many=True)


class TierOut(serializers.Serializer):
    code = serializers.CharField()
    name = serializers.CharField()
    rank = serializers.IntegerField()


class ProgressOut(serializers.Serializer):
    basis = serializers.ChoiceField(choices=["spend", "points"])
    window_months = serializers.IntegerField()
    value = serializers.DecimalField(max_digits=16, decimal_places=2)
    to_next_tier = serializers.DecimalField(max_digits=16, decimal_places=2)
    percent = serializers.IntegerField(min_value=0, max_value=100)


class ExpiringDateOut(serializers.Serializer):
    points = serializers.IntegerField(min_value=1)
    expires_at = serializers.DateTimeField(help_text=_("The first instant these points are gone."))
    last_day = serializers.DateField(
        help_text=_("The last day (business time zone) on which these points can be spent.")
    )
    at_day_end = serializers.BooleanField(
        help_text=_("Whether they expire at the end of that day (else at the time of expires_at).")
    )


class ExpiringOut(serializers.Serializer):
    points = serializers.IntegerField(help_text=_("Available points that expire within the next 30 days."))
    until = serializers.DateTimeField(
        help_text=_("The end of that 30-day window; the points' own expiry dates are in dates.")
    )
    dates = ExpiringDateOut(many=True, help_text=_("The points by expiry date, soonest first."))


class PointsOut(serializers.Serializer):
    available = serializers.IntegerField()
    pending = serializers.IntegerField()
    owed = serializers.IntegerField()
    tier = TierOut(allow_null=True)
    tier_since = serializers.DateTimeField(allow_null=True)
    next_tier = TierOut(allow_null=True)
    progress = ProgressOut()
    expiring_soon = ExpiringOut()
    next_expiry_at = serializers.DateTimeField(allow_null=True)
    next_available_at = serializers.DateTimeField(allow_null=True)


class MeOut(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    email = serializers.EmailField()


class TokenOut(serializers.Serializer):
    token = serializers.CharField()
    token_type = serializers.CharField()


class EntryOut(serializers.Serializer):
    id = serializers.IntegerField()
    kind = serializers.CharField()
    kind_display = serializers.CharField()
    points = serializers.IntegerField()
    pending = serializers.IntegerField()
    reason = serializers.CharField()
    reference = serializers.CharField()
    order = serializers.CharField(allow_null=True)
    occurred_at = serializers.DateTimeField()


class HistoryPageOut(serializers.Serializer):
    next = serializers.URLField(allow_null=True)
    previous = serializers.URLField(allow_null=True)
    results = EntryOut(many=True)


class CouponOut(serializers.Serializer):
    code = serializers.CharField()
    display_code = serializers.CharField()
    programme = serializers.CharField()
    discount_kind = serializers.ChoiceField(choices=["amount", "percent"])
    discount_value = serializers.DecimalField(max_digits=12, decimal_places=2)
    currency = serializers.CharField()
    min_spend = serializers.DecimalField(max_digits=12, decimal_places=2)
    uses_left = serializers.IntegerField(allow_null=True)
    valid_from = serializers.DateTimeField(allow_null=True)
    valid_until = serializers.DateTimeField(allow_null=True)
    revoked = serializers.BooleanField()
    issued_at = serializers.DateTimeField()


class CouponsOut(serializers.Serializer):
    results = CouponOut(many=True)


class OfferOut(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    description = serializers.CharField()
    points_price = serializers.IntegerField()
    stock = serializers.IntegerField(allow_null=True)
    per_member_limit = serializers.IntegerField(allow_null=True)
    redeemed_by_me = serializers.IntegerField()
    min_tier = TierOut(allow_null=True)
    available_until = serializers.DateTimeField(allow_null=True)
    affordable = serializers.BooleanField()
    eligible = serializers.BooleanField()
    reason = serializers.CharField()


class RewardsOut(serializers.Serializer):
    available_points = serializers.IntegerField()
    results = OfferOut(many=True)


class RewardRefOut(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()


class RedemptionOut(serializers.Serializer):
    id = serializers.IntegerField()
    reward = RewardRefOut()
    points = serializers.IntegerField()
    coupon = CouponOut()
    redeemed_at = serializers.DateTimeField()


class ReferralOut(serializers.Serializer):
    code = serializers.CharField()
    link = serializers.URLField()
    referred = serializers.IntegerField()


class CouponCheckOut(serializers.Serializer):
    valid = serializers.BooleanField()
    code = serializers.CharField(required=False)
    discount = serializers.DecimalField(max_digits=14, decimal_places=2, required=False)
    currency = serializers.CharField(required=False)
    programme = serializers.CharField(required=False)
    uses_left = serializers.IntegerField(allow_null=True, required=False)
    reason = serializers.CharField(
        required=False, help_text=_("Why not valid: not_found, expired, used_up, …")
    )
    message = serializers.CharField(required=False)


class CouponRedeemOut(serializers.Serializer):
    id = serializers.IntegerField()
    code = serializers.CharField()
    order_reference = serializers.CharField()
    discount = serializers.DecimalField(max_digits=14, decimal_places=2)
    currency = serializers.CharField()
    redeemed_at = serializers.DateTimeField()
    replayed = serializers.BooleanField()
