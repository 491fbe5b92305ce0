from django.core.management.base import BaseCommand

from journeys.winback_demo import winback_demo


class Command(BaseCommand):
    help = (
        "Run the win-back story end to end (metrics, selection, journey sends, simulated returns with "
        "coupons, the uplift report) on the configured database; seeds demo customers when there are none."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--customers", type=int, default=600, help="Demo customers to seed if there are none."
        )
        parser.add_argument("--seed", type=int, default=17, help="The seed of the simulated returns.")

    def handle(self, *args, **options):
        winback_demo(out=self.stdout.write, customers=options["customers"], seed=options["seed"])
