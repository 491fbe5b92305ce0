from django.core.management.base import BaseCommand
from django.utils import timezone
from django.utils.translation import gettext as _

from loyalty.services.tiers import tier_reviews_run


class Command(BaseCommand):
    help = _("Review tiers whose review date or grace period has come.")

    def handle(self, *args, **options):
        counts = tier_reviews_run(now=timezone.now())
        self.stdout.write(", ".join(f"{k}: {v}" for k, v in counts.items()))
