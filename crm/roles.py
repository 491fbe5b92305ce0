"""Staff roles as permission groups. Which permissions a role holds is declared here and re-applied after
every migrate, so permissions of models added later (loyalty, campaigns, journeys) reach the right roles
without another data migration."""

from django.utils.translation import gettext_lazy as _

ADMINISTRATOR = "administrator"
MARKETER = "marketer"
ANALYST = "analyst"
SUPPORT = "support"

ROLE_LABELS = {
    ADMINISTRATOR: _("Administrator"),
    MARKETER: _("Marketer"),
    ANALYST: _("Analyst"),
    SUPPORT: _("Support"),
}

# (app_label, action or "*", model or "*"). Actions: add, change, delete, view.
ROLE_GRANTS: dict[str, list[tuple[str, str, str]]] = {
    ADMINISTRATOR: [("*", "*", "*")],
    MARKETER: [
        ("crm", "view", "*"),
        ("crm", "*", "tag"),
        ("crm", "*", "customertag"),
        ("crm", "*", "segment"),
        ("crm", "*", "staticlist"),
        ("loyalty", "view", "*"),
        ("campaigns", "*", "*"),
        ("journeys", "*", "*"),
    ],
    ANALYST: [
        ("crm", "view", "*"),
        ("loyalty", "view", "*"),
        ("campaigns", "view", "*"),
        ("journeys", "view", "*"),
    ],
    SUPPORT: [
        ("crm", "view", "*"),
        ("crm", "change", "customer"),
        ("crm", "change", "customeridentity"),
        ("crm", "add", "customeridentity"),
        ("crm", "*", "consent"),
        ("crm", "*", "customertag"),
        ("crm", "add", "privacyrequest"),
        ("loyalty", "view", "*"),
        ("loyalty", "add", "manualadjustment"),
    ],
}


def _matches(grant, app_label, codename, model):
    g_app, g_action, g_model = grant
    action = codename.split("_", 1)[0]
    return (g_app in ("*", app_label)) and (g_action in ("*", action)) and (g_model in ("*", model))


def roles_sync(group_model, permission_model) -> None:
    """Create the role groups and give each exactly the permissions its grants match."""
    permissions = list(permission_model.objects.select_related("content_type"))
    for role, grants in ROLE_GRANTS.items():
        group, _created = group_model.objects.get_or_create(name=role)
        wanted = [
            p
            for p in permissions
            if any(_matches(g, p.content_type.app_label, p.codename, p.content_type.model) for g in grants)
            and p.content_type.app_label not in {"sessions", "contenttypes"}
        ]
        group.permissions.set(wanted)
