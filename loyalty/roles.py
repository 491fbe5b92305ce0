"""Loyalty's share of the staff roles (crm/roles.py names them); config/roles.py composes the shares."""

from crm.roles import ANALYST, MARKETER, SUPPORT, RoleGrants

LOYALTY_ROLE_GRANTS: RoleGrants = {
    MARKETER: [("loyalty", "view", "*")],
    ANALYST: [("loyalty", "view", "*")],
    SUPPORT: [("loyalty", "view", "*"), ("loyalty", "add", "manualadjustment")],
}
