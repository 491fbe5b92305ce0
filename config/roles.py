"""The staff roles of the whole project: each app's share of the grants, composed here because config/ is
what knows every app (DESIGN.md §4), and re-applied after every migrate so the permissions of models added
later reach the right roles without a data migration."""

from django.contrib.auth.models import Group, Permission

from campaigns.roles import CAMPAIGNS_ROLE_GRANTS
from crm.roles import (
    ADMINISTRATOR,
    CRM_ROLE_GRANTS,
    MARKETER,
    MARKETING_MANAGER,
    roles_compose,
    roles_sync,
)
from journeys.roles import JOURNEYS_ROLE_GRANTS
from loyalty.roles import LOYALTY_ROLE_GRANTS

PROJECT_ROLE_GRANTS = {
    ADMINISTRATOR: [("*", "*", "*")],  # every app's permissions, auth's included
}

# The marketing manager is a marketer first: the marketer's share of crm and loyalty, then its own
# campaigns and journeys shares (campaigns/roles.py, journeys/roles.py).
MANAGER_AS_MARKETER = {MARKETING_MANAGER: [*CRM_ROLE_GRANTS[MARKETER], *LOYALTY_ROLE_GRANTS[MARKETER]]}

ROLE_GRANTS = roles_compose(
    CRM_ROLE_GRANTS,
    LOYALTY_ROLE_GRANTS,
    MANAGER_AS_MARKETER,
    CAMPAIGNS_ROLE_GRANTS,
    JOURNEYS_ROLE_GRANTS,
    PROJECT_ROLE_GRANTS,
)


def sync_roles_after_migrate(sender, **kwargs) -> None:
    roles_sync(Group, Permission, ROLE_GRANTS)
