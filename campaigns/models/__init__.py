"""The messaging tables: templates and their versions, the outbox (one row per message a customer may get),
the delivery rules (frequency caps, quiet hours, the suppression list) and each provider's shared state."""

from campaigns.models.channels import Channel, ProviderState
from campaigns.models.outbox import Message, MessagePurpose, MessageStatus, OnCap
from campaigns.models.rules import DeliverySettings, FrequencyCap, Suppression, SuppressionReason
from campaigns.models.staff import DeadLetter, DeliveryOverview
from campaigns.models.templates import MessageCoupon, MessageTemplate, TemplateVersion

__all__ = [
    "Channel",
    "DeadLetter",
    "DeliveryOverview",
    "DeliverySettings",
    "FrequencyCap",
    "Message",
    "MessageCoupon",
    "MessagePurpose",
    "MessageStatus",
    "MessageTemplate",
    "OnCap",
    "ProviderState",
    "Suppression",
    "SuppressionReason",
    "TemplateVersion",
]
