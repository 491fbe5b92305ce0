from django.core.management.base import BaseCommand

from journeys.library import library_demo_seed
from journeys.library_templates import library_templates_seed


class Command(BaseCommand):
    help = (
        "Create the ready-made journeys' message templates (Chinese and English) and, for the demo, a draft "
        "copy of a few ready-made journeys (welcome series, cart abandonment, birthday gift, dormant win-back). "
        "Idempotent: a journey already copied is not copied again."
    )

    def handle(self, *args, **options):
        templates, versions = library_templates_seed()
        created = library_demo_seed()
        self.stdout.write(
            f"Journey templates: {templates} ({versions} new versions); ready-made journeys copied: {created}"
        )
