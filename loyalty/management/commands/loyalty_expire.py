from django.core.management.base import BaseCommand
from django.utils import timezone
from django.utils.translation import gettext as _

from loyalty.services.lifecycle import expiring_notices_emit, points_expire_due, points_release_due


class Command(BaseCommand):
    help = _("Nightly lot work: release pending points, announce expiring points, expire due points.")

    def handle(self, *args, **options):
        now = timezone.now()
        released = points_release_due(now=now)
        notices = expiring_notices_emit(now=now)
        expired = points_expire_due(now=now)
        self.stdout.write(
            _("%(released)d points released, %(notices)d expiry notices, %(expired)d points expired.")
            % {"released": released, "notices": notices, "expired": expired}
        )
