"""The behaviour-event types loyalty writes to crm's log, added to crm's catalogue from
LoyaltyConfig.ready() (crm never names them)."""

from django.utils.translation import pgettext_lazy

from crm.event_types import EventType, PropertySpec, event_type_register

TIER_CHANGED = "tier_changed"
POINTS_EXPIRING = "points_expiring"
POINTS_EARNED = "points_earned"

_S, _I = PropertySpec("string"), PropertySpec("integer")


def register() -> None:
    event_type_register(
        EventType(
            TIER_CHANGED,
            pgettext_lazy("event type", "Tier changed"),
            {
                "account_id": PropertySpec("integer", required=True),
                "from_tier": _S,
                "to_tier": _S,
                "direction": _S,
                "reason": _S,
                "qualifying_value": PropertySpec("decimal"),
            },
            source="system",
        )
    )
    event_type_register(
        EventType(
            POINTS_EARNED,
            pgettext_lazy("event type", "Points earned"),
            {
                "account_id": PropertySpec("integer", required=True),
                # Every point of the write, pending ones included; pending ones count once the return
                # window has passed (loyalty/services/accrual.py).
                "points": PropertySpec("integer", required=True),
                "pending_points": _I,
                "references": PropertySpec("array"),  # the orders' external ids, the bonuses' references
            },
            source="system",
        )
    )
    event_type_register(
        EventType(
            POINTS_EXPIRING,
            pgettext_lazy("event type", "Points about to expire"),
            {
                "account_id": PropertySpec("integer", required=True),
                "points": PropertySpec("integer", required=True),
                "expires_at": PropertySpec("datetime", required=True),
            },
            source="system",
        )
    )
