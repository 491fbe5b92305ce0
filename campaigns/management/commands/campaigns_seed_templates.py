from django.core.management.base import BaseCommand

from campaigns.demo_templates import demo_templates_seed


class Command(BaseCommand):
    help = (
        "Create the demo message templates (order shipped, points earned, birthday wish, the win-back "
        "with a coupon, points expiring) for every channel in Chinese and English. Idempotent."
    )

    def handle(self, *args, **options):
        templates, versions = demo_templates_seed()
        self.stdout.write(f"Message templates: {templates} ({versions} new versions)")
