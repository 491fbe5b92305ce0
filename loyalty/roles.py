"""Loyalty's share of the staff roles (crm/roles.py names them); config/roles.py composes the shares."""

from crm.roles import ANALYST, MARKETER, SUPPORT, RoleGrants

# No share names the "export" action: export_coupon (downloading a batch of codes, which spends them for
# whoever holds the file) stays with the administrator role, which config/roles.py gives everything.
LOYALTY_ROLE_GRANTS: RoleGrants = {
    MARKETER: [("loyalty", "view", "*")],
    ANALYST: [("loyalty", "view", "*")],
    SUPPORT: [("loyalty", "view", "*"), ("loyalty", "add", "manualadjustment")],
}
