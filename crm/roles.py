"""Staff roles as permission groups: the role names, crm's share of each role's permissions, and the
function that applies a set of grants. crm knows no other app (DESIGN.md §4): config/roles.py composes
crm's grants with the other apps' and re-applies the whole after every migrate, so permissions of models
added later reach the right roles without another data migration."""

from __future__ import annotations

from django.utils.translation import gettext_lazy as _

ADMINISTRATOR = "administrator"
MARKETER = "marketer"
# A marketer who also sets the delivery rules (caps, quiet hours, templates) and retries dead letters;
# config/roles.py gives it the marketer's share of every app besides.
MARKETING_MANAGER = "marketing_manager"
ANALYST = "analyst"
SUPPORT = "support"

ROLE_LABELS = {
    ADMINISTRATOR: _("Administrator"),
    MARKETER: _("Marketer"),
    MARKETING_MANAGER: _("Marketing manager"),
    ANALYST: _("Analyst"),
    SUPPORT: _("Support"),
}
ROLES = tuple(ROLE_LABELS)

# (app_label, action or "*", model or "*"). Actions: add, change, delete, view.
Grant = tuple[str, str, str]
RoleGrants = dict[str, list[Grant]]

CRM_ROLE_GRANTS: RoleGrants = {
    ADMINISTRATOR: [("crm", "*", "*")],
    MARKETER: [
        ("crm", "view", "*"),
        ("crm", "*", "tag"),
        ("crm", "*", "customertag"),
        ("crm", "*", "segment"),
        ("crm", "*", "staticlist"),
    ],
    ANALYST: [("crm", "view", "*")],
    SUPPORT: [
        ("crm", "view", "*"),
        ("crm", "change", "customer"),
        ("crm", "change", "customeridentity"),
        ("crm", "add", "customeridentity"),
        ("crm", "*", "consent"),
        ("crm", "*", "customertag"),
        ("crm", "add", "privacyrequest"),
    ],
}


def roles_compose(*parts: RoleGrants) -> RoleGrants:
    """One grant list per role from each app's share; a role no part names is not created."""
    composed: RoleGrants = {}
    for part in parts:
        for role, grants in part.items():
            if role not in ROLE_LABELS:
                raise ValueError(f"unknown role {role!r}; the roles are {', '.join(ROLES)}")
            composed.setdefault(role, []).extend(grants)
    return composed


def _matches(grant, app_label, codename, model):
    g_app, g_action, g_model = grant
    action = codename.split("_", 1)[0]
    return (g_app in ("*", app_label)) and (g_action in ("*", action)) and (g_model in ("*", model))


def roles_sync(group_model, permission_model, grants: RoleGrants) -> None:
    """Create the role groups and give each exactly the permissions its grants match."""
    permissions = list(permission_model.objects.select_related("content_type"))
    for role, role_grants in grants.items():
        group, _created = group_model.objects.get_or_create(name=role)
        wanted = [
            p
            for p in permissions
            if any(
                _matches(g, p.content_type.app_label, p.codename, p.content_type.model) for g in role_grants
            )
            and p.content_type.app_label not in {"sessions", "contenttypes"}
        ]
        group.permissions.set(wanted)
