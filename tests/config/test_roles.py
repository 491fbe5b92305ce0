"""Staff roles: crm declares only its own share, config/ composes every app's, and the composition is what
migrate leaves in the role groups."""

import pytest
from django.contrib.auth.models import Group, Permission

from config.roles import ROLE_GRANTS
from crm.roles import CRM_ROLE_GRANTS, roles_compose


def test_crm_grants_name_no_other_app():
    assert {app for grants in CRM_ROLE_GRANTS.values() for app, _action, _model in grants} == {"crm"}


def test_the_composed_grants_are_the_projects_roles():
    assert ROLE_GRANTS == {
        "administrator": [("crm", "*", "*"), ("*", "*", "*")],
        "marketer": [
            ("crm", "view", "*"),
            ("crm", "*", "tag"),
            ("crm", "*", "customertag"),
            ("crm", "*", "segment"),
            ("crm", "*", "staticlist"),
            ("loyalty", "view", "*"),
            ("campaigns", "*", "*"),
            ("journeys", "*", "*"),
        ],
        "analyst": [
            ("crm", "view", "*"),
            ("loyalty", "view", "*"),
            ("campaigns", "view", "*"),
            ("journeys", "view", "*"),
        ],
        "support": [
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


def test_a_share_for_a_role_that_does_not_exist_is_refused():
    with pytest.raises(ValueError, match="unknown role 'auditor'"):
        roles_compose(CRM_ROLE_GRANTS, {"auditor": [("crm", "view", "*")]})


@pytest.mark.django_db
def test_migrate_leaves_the_other_apps_permissions_in_the_roles():
    def codenames(role):
        return set(
            Group.objects.get(name=role).permissions.values_list("content_type__app_label", "codename")
        )

    assert ("loyalty", "add_manualadjustment") in codenames("support")
    assert ("loyalty", "change_manualadjustment") not in codenames("support")
    assert ("loyalty", "view_ledgerentry") in codenames("analyst")
    assert ("loyalty", "change_ledgerentry") not in codenames("marketer")
    assert codenames("administrator") == set(
        Permission.objects.exclude(content_type__app_label__in=["sessions", "contenttypes"]).values_list(
            "content_type__app_label", "codename"
        )
    )


@pytest.mark.django_db
def test_post_migrate_puts_back_a_permission_taken_from_a_role():
    from django.core.management import call_command

    support = Group.objects.get(name="support")
    support.permissions.remove(Permission.objects.get(codename="add_manualadjustment"))

    call_command("migrate", verbosity=0)

    assert support.permissions.filter(codename="add_manualadjustment").exists()
