"""anymail's normalised tracking webhooks (anymail.signals.tracking, its own extension point): every ESP's
events (delivered, bounced, complained, opened, clicked, unsubscribed, rejected) arrive here in one shape
and go to one service. Connected in CampaignsConfig.ready().

The receiver must not raise for an event it cannot use (a message we never sent, an unknown type):
anymail turns an exception into a 500 and the provider retries it for days."""

from __future__ import annotations

import logging

from django.utils import timezone

from campaigns.services.tracking import EspEvent, esp_event_apply

logger = logging.getLogger(__name__)

# The metadata key the email provider puts our message id under (anymail's `metadata`), so that an event
# can be matched before the provider's own id has been recorded.
METADATA_MESSAGE_ID = "message_id"


def _our_id(metadata) -> int | None:
    if not isinstance(metadata, dict):
        return None
    value = metadata.get(METADATA_MESSAGE_ID)
    try:
        number = int(str(value))
    except (TypeError, ValueError):
        return None
    return number if 0 < number < 2**63 else None


def _soft_bounce(event) -> bool:
    """anymail calls a soft bounce (mailbox full, greylisted) "bounced" too; the raw event says which it
    was for the ESPs that tell, and a soft one must not suppress the address."""
    raw = event.esp_event
    if event.event_type != "bounced" or not isinstance(raw, dict):
        return False
    return raw.get("Type") == "SoftBounce" or raw.get("hard_bounce") is False


def tracking_received(sender, event, esp_name, **kwargs):
    applied = esp_event_apply(
        event=EspEvent(
            event_type="deferred" if _soft_bounce(event) else str(event.event_type or ""),
            esp_message_id=str(event.message_id or "")[:200],
            message_id=_our_id(event.metadata),
            recipient=str(event.recipient or "")[:254],
            reject_reason=str(event.reject_reason or ""),
            description=str(event.description or event.mta_response or "")[:300],
            click_url=str(event.click_url or ""),
            timestamp=event.timestamp,
        ),
        now=timezone.now(),
    )
    logger.info(
        "anymail %s event %s for %s: %s", esp_name, event.event_type, event.message_id or "-", applied
    )
