"""The messaging tables: campaigns (their variants, runs and recipients), templates and their versions, the
outbox (one row per message a customer may get), the delivery rules (frequency caps, quiet hours, the
suppression list), each provider's shared state, and the marketing calendar."""

from campaigns.models.calendar import CalendarDate, CalendarDateKind, CalendarDateSource
from campaigns.models.campaigns import (
    HOLDOUT_ARM,
    AudienceKind,
    Campaign,
    CampaignChannelCost,
    CampaignRecipient,
    CampaignRun,
    CampaignRunCount,
    CampaignStatus,
    CampaignVariant,
    RecurrenceKind,
    RunPhase,
    RunStatus,
    ScheduleKind,
    WinnerMetric,
)
from campaigns.models.channels import Channel, ProviderState
from campaigns.models.outbox import Message, MessagePurpose, MessageStatus, OnCap
from campaigns.models.reports import CampaignRunReport
from campaigns.models.rules import DeliverySettings, FrequencyCap, Suppression, SuppressionReason
from campaigns.models.staff import DeadLetter, DeliveryOverview
from campaigns.models.templates import MessageCoupon, MessageTemplate, TemplateVersion

__all__ = [
    "CalendarDate",
    "CalendarDateKind",
    "CalendarDateSource",
    "HOLDOUT_ARM",
    "AudienceKind",
    "Campaign",
    "CampaignChannelCost",
    "CampaignRecipient",
    "CampaignRun",
    "CampaignRunCount",
    "CampaignRunReport",
    "CampaignStatus",
    "CampaignVariant",
    "RecurrenceKind",
    "RunPhase",
    "RunStatus",
    "ScheduleKind",
    "WinnerMetric",
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
