"""Campaigns' share of the staff roles (crm/roles.py names them); config/roles.py composes the shares.

Marketers and analysts see the messages, the delivery overview, the dead letters and the rules; support
staff see the messages (to answer "why did I not get the SMS?") and put an address on the suppression
list when a customer asks by phone. The marketing manager changes what decides who is sent what (caps,
quiet hours, opt-out text, templates) and retries dead letters. Provider state is for administrators
only (the System group), who get every permission from config/roles.py."""

from crm.roles import ANALYST, MARKETER, MARKETING_MANAGER, SUPPORT, RoleGrants

# What every marketing role may look at: everything of campaigns except the providers' internals.
VIEWED = (
    "message",
    "deliveryoverview",
    "deadletter",
    "frequencycap",
    "deliverysettings",
    "suppression",
    "messagetemplate",
    "templateversion",
    "campaign",
    "campaignvariant",
    "campaignchannelcost",
    "campaignrun",
    "campaignrecipient",
    "campaignrunreport",
)


def _view(*models: str):
    return [("campaigns", "view", m) for m in models]


CAMPAIGNS_ROLE_GRANTS: RoleGrants = {
    MARKETER: [
        *_view(*VIEWED),
        # A marketer prepares campaigns and submits them; approving and scheduling is the manager's.
        ("campaigns", "add", "campaign"),
        ("campaigns", "change", "campaign"),
        ("campaigns", "*", "campaignvariant"),
        ("campaigns", "*", "campaignchannelcost"),  # what a message costs, for ROI
        ("campaigns", "add", "suppression"),
        ("campaigns", "delete", "suppression"),
    ],
    MARKETING_MANAGER: [
        *_view(*VIEWED),
        ("campaigns", "add", "suppression"),
        ("campaigns", "delete", "suppression"),
        ("campaigns", "*", "frequencycap"),
        ("campaigns", "change", "deliverysettings"),
        ("campaigns", "add", "messagetemplate"),
        ("campaigns", "change", "messagetemplate"),
        ("campaigns", "add", "templateversion"),
        ("campaigns", "retry", "deadletter"),
        ("campaigns", "*", "campaign"),
        ("campaigns", "*", "campaignvariant"),
        ("campaigns", "*", "campaignchannelcost"),
        ("campaigns", "approve", "campaign"),
    ],
    ANALYST: _view(*VIEWED),
    SUPPORT: [*_view("message"), ("campaigns", "add", "suppression")],
}
