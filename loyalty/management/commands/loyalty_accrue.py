from datetime import timedelta

from django.core.management.base import BaseCommand
from django.utils import timezone
from django.utils.translation import gettext as _

from loyalty.services.accrual import accrual_sweep, events_process_all


class Command(BaseCommand):
    help = _("Turn the behaviour-event log into points (orders, refunds, bonuses) up to now.")

    def add_arguments(self, parser):
        parser.add_argument("--batch-size", type=int, default=1000)
        parser.add_argument(
            "--sweep-days",
            type=int,
            default=0,
            help=_("Also accrue orders of the last N days the log missed."),
        )

    def handle(self, *args, batch_size, sweep_days, **options):
        now = timezone.now()
        events = events_process_all(now=now, batch_size=batch_size, max_batches=1_000_000)
        self.stdout.write(_("%(count)d events read.") % {"count": events})
        if sweep_days:
            result = accrual_sweep(since=now - timedelta(days=sweep_days), now=now)
            self.stdout.write(
                _("Sweep: %(orders)d orders accrued, %(reversals)d reversals.")
                % {"orders": result.orders, "reversals": result.reversals}
            )
