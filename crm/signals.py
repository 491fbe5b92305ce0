"""Set-up wiring only (no business flow): keep role groups in step with the permissions that exist."""

from django.contrib.auth.models import Group, Permission

from crm.roles import roles_sync


def sync_roles_after_migrate(sender, **kwargs):
    roles_sync(Group, Permission)
