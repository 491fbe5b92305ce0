"""Journeys' share of the staff roles (crm/roles.py names them); config/roles.py composes the shares.

A marketer designs journeys: creates them, edits drafts on the canvas, makes a new draft of a published
one. What reaches customers is the marketing manager's to decide, as approving a campaign is: publishing
a version (and choosing what happens to the customers in flight) needs `publish_journey`; pausing,
resuming and archiving need `pause_journey`. Analysts and support staff look: the journeys, their
versions and the enrollments (support answers "why did I get this message?" from the customer's page).
Administrators get every permission from config/roles.py."""

from crm.roles import ANALYST, MARKETER, MARKETING_MANAGER, SUPPORT, RoleGrants

JOURNEYS_ROLE_GRANTS: RoleGrants = {
    MARKETER: [
        ("journeys", "view", "*"),
        ("journeys", "add", "journey"),
        ("journeys", "change", "journey"),
    ],
    MARKETING_MANAGER: [
        ("journeys", "view", "*"),
        ("journeys", "add", "journey"),
        ("journeys", "change", "journey"),
        ("journeys", "publish", "journey"),
        ("journeys", "pause", "journey"),
    ],
    ANALYST: [("journeys", "view", "*")],
    SUPPORT: [("journeys", "view", "journey"), ("journeys", "view", "enrollment")],
}
