"""Create the demo superuser once, so that `make run` ends with a login that works.

Idempotent: when the user already exists nothing is changed, above all not its password, which the
person trying the demo may have changed since.
"""

import os

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

USERNAME = "admin"
DEFAULT_PASSWORD = "admin-demo-2026"


class Command(BaseCommand):
    help = (
        f"Create the superuser {USERNAME!r} if it does not exist (password from DEMO_ADMIN_PASSWORD, "
        f"default {DEFAULT_PASSWORD!r}) and print where to log in."
    )

    def handle(self, *args, **options):
        env_password = os.environ.get("DEMO_ADMIN_PASSWORD")
        if settings.PRODUCTION and not env_password:
            raise CommandError(
                "Refusing to create a superuser with the published demo password in production."
            )
        password = env_password or DEFAULT_PASSWORD

        User = get_user_model()
        user = User._default_manager.filter(**{User.USERNAME_FIELD: USERNAME}).first()
        if user is None:
            User._default_manager.create_superuser(
                **{User.USERNAME_FIELD: USERNAME}, email="admin@example.com", password=password
            )
            shown = password
        elif user.check_password(password):
            shown = password
        else:
            shown = "(changed since it was created, not shown)"

        port = os.environ.get("PORT", "8000")
        self.stdout.write(f"Admin: http://127.0.0.1:{port}/admin/  user: {USERNAME}  password: {shown}")
