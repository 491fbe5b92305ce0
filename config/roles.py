"""The staff roles of the whole project: each app's share of the grants, composed here because config/ is
what knows every app (DESIGN.md §4), and re-applied after every migrate so the permissions of models added
later reach the right roles without a data migration."""

from django.contrib.auth.models import Group, Permission

from crm.roles import ADMINISTRATOR, ANALYST, CRM_ROLE_GRANTS, MARKETER, roles_compose, roles_sync
from loyalty.roles import LOYALTY_ROLE_GRANTS

# campaigns and journeys have no models yet; their shares move into their own roles modules with them.
PROJECT_ROLE_GRANTS = {
    ADMINISTRATOR: [("*", "*", "*")],  # every app's permissions, auth's included
    MARKETER: [("campaigns", "*", "*"), ("journeys", "*", "*")],
    ANALYST: [("campaigns", "view", "*"), ("journeys", "view", "*")],
}

ROLE_GRANTS = roles_compose(CRM_ROLE_GRANTS, LOYALTY_ROLE_GRANTS, PROJECT_ROLE_GRANTS)


def sync_roles_after_migrate(sender, **kwargs) -> None:
    roles_sync(Group, Permission, ROLE_GRANTS)
