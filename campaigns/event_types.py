"""The behaviour-event types the delivery pipeline writes to crm's log (message_sent ... unsubscribed), added
to crm's catalogue from CampaignsConfig.ready(), so that segments, attribution (a click is a touch) and
journeys can use them. Every one names its message and where it came from; attribution reads `channel`
and `campaign_id` of a click (crm/analytics/attribution.py)."""

from django.utils.translation import pgettext_lazy

from crm.event_types import EventType, PropertySpec, event_type_register

MESSAGE_SENT = "message_sent"
MESSAGE_DELIVERED = "message_delivered"
MESSAGE_OPENED = "message_opened"
MESSAGE_CLICKED = "message_clicked"
MESSAGE_FAILED = "message_failed"
UNSUBSCRIBED = "unsubscribed"

MESSAGE_EVENT_TYPES = (
    MESSAGE_SENT,
    MESSAGE_DELIVERED,
    MESSAGE_OPENED,
    MESSAGE_CLICKED,
    MESSAGE_FAILED,
    UNSUBSCRIBED,
)

_S = PropertySpec("string")

_COMMON = {
    "message_id": PropertySpec("integer", required=True),
    "channel": PropertySpec("string", required=True),
    "source_kind": PropertySpec("string", required=True),
    "source_ref": _S,
    "template": _S,  # the template's code
    "purpose": _S,
    "campaign_id": _S,  # the campaign's id when the source is a campaign (attribution's campaign)
}


def register() -> None:
    event_type_register(
        EventType(MESSAGE_SENT, pgettext_lazy("event type", "Message sent"), _COMMON, source="system")
    )
    event_type_register(
        EventType(
            MESSAGE_DELIVERED, pgettext_lazy("event type", "Message delivered"), _COMMON, source="system"
        )
    )
    event_type_register(
        EventType(MESSAGE_OPENED, pgettext_lazy("event type", "Message opened"), _COMMON, source="system")
    )
    event_type_register(
        EventType(
            MESSAGE_CLICKED,
            pgettext_lazy("event type", "Message clicked"),
            {**_COMMON, "url": PropertySpec("string", required=True), "link": PropertySpec("integer")},
            source="system",
        )
    )
    event_type_register(
        EventType(
            MESSAGE_FAILED,
            pgettext_lazy("event type", "Message failed"),
            {**_COMMON, "reason": _S, "error_code": _S},
            source="system",
        )
    )
    event_type_register(
        EventType(
            UNSUBSCRIBED,
            pgettext_lazy("event type", "Unsubscribed"),
            # how: link (the confirmation page), one_click (RFC 8058), esp (the provider's webhook). An
            # opt-out that names no message (an SMS reply) may come without message and source.
            {
                **_COMMON,
                "message_id": PropertySpec("integer"),
                "source_kind": _S,
                "how": _S,
            },
            source="system",
        )
    )
