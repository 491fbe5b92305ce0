"""Staff roles: crm declares only its own share, config/ composes every app's, and the composition is what
migrate leaves in the role groups."""

import pytest
from django.contrib.auth.models import Group, Permission

from campaigns.roles import CAMPAIGNS_ROLE_GRANTS
from config.roles import ROLE_GRANTS
from crm.roles import CRM_ROLE_GRANTS, roles_compose
from journeys.roles import JOURNEYS_ROLE_GRANTS


def test_crm_grants_name_no_other_app():
    assert {app for grants in CRM_ROLE_GRANTS.values() for app, _action, _model in grants} == {"crm"}


def test_the_composed_grants_are_the_projects_roles():
    campaigns, journeys = CAMPAIGNS_ROLE_GRANTS, JOURNEYS_ROLE_GRANTS
    marketer_crm = [
        ("crm", "view", "*"),
        ("crm", "*", "tag"),
        ("crm", "*", "customertag"),
        ("crm", "*", "segment"),
        ("crm", "*", "staticlist"),
    ]
    assert ROLE_GRANTS == {
        "administrator": [("crm", "*", "*"), ("*", "*", "*")],
        "marketer": [
            *marketer_crm,
            ("loyalty", "view", "*"),
            *campaigns["marketer"],
            *journeys["marketer"],
        ],
        # A marketer first (crm, loyalty), then what the manager may do with campaigns and journeys.
        "marketing_manager": [
            *marketer_crm,
            ("loyalty", "view", "*"),
            *campaigns["marketing_manager"],
            *journeys["marketing_manager"],
        ],
        "analyst": [
            ("crm", "view", "*"),
            ("loyalty", "view", "*"),
            *campaigns["analyst"],
            *journeys["analyst"],
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
            *campaigns["support"],
            *journeys["support"],
        ],
    }


@pytest.mark.django_db
def test_journeys_permissions_reach_the_roles():
    def codenames(role):
        return set(
            Group.objects.get(name=role)
            .permissions.filter(content_type__app_label="journeys")
            .values_list("codename", flat=True)
        )

    marketer, manager = codenames("marketer"), codenames("marketing_manager")
    assert {"view_journey", "add_journey", "change_journey", "view_enrollment"} <= marketer
    assert not {"publish_journey", "pause_journey", "delete_journey"} & marketer
    assert {"change_journey", "publish_journey", "pause_journey"} <= manager
    assert not {"publish_journey", "pause_journey", "change_journey"} & codenames("analyst")
    assert codenames("support") == {"view_journey", "view_enrollment"}
    assert {"publish_journey", "pause_journey"} <= codenames("administrator")


@pytest.mark.django_db
def test_campaigns_permissions_reach_the_roles():
    def codenames(role):
        return set(
            Group.objects.get(name=role)
            .permissions.filter(content_type__app_label="campaigns")
            .values_list("codename", flat=True)
        )

    marketer, manager = codenames("marketer"), codenames("marketing_manager")
    assert {"view_message", "view_deliveryoverview", "view_deadletter", "add_suppression"} <= marketer
    assert not {"change_frequencycap", "change_deliverysettings", "retry_deadletter"} & marketer
    assert {
        "change_frequencycap",
        "add_frequencycap",
        "change_deliverysettings",
        "retry_deadletter",
    } <= manager
    # Provider state is the administrators' (the System group); nobody edits the outbox by hand.
    for role in ("marketer", "marketing_manager", "analyst", "support"):
        assert not {"view_providerstate", "change_message", "delete_message"} & codenames(role), role
    assert codenames("support") == {"view_message", "add_suppression"}
    assert "retry_deadletter" in codenames("administrator")


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
