"""`manage.py bootstrap_analytics [--history-months 12]`: the first computation of metrics and dashboards.

`make run` calls it after seeding, so that someone trying the demo sees lifecycle stages, RFM, predicted
value and filled-in charts at once instead of after the first nightly run. Does nothing when metrics
were computed before (every later computation is the nightly one, or "recompute" in the admin)."""

from django.core.management.base import BaseCommand

from crm.analytics.services import analytics_refresh
from crm.models import CustomerMetrics
from crm.services.metrics import metrics_compute_with_history


class Command(BaseCommand):
    help = (
        "Compute every customer's metrics as of the end of each of the last N months and today (so that the "
        "lifecycle chart has a history), then every dashboard figure. Does nothing if metrics were already "
        "computed."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--history-months",
            type=int,
            default=12,
            help="month ends to compute before today, oldest first (default 12, as many as the chart shows)",
        )

    def handle(self, *args, history_months, verbosity, **options):
        if CustomerMetrics.objects.exists():
            if verbosity >= 1:
                self.stdout.write("Metrics were computed before; the nightly run keeps them up to date.")
            return

        def progress(done, total, run):
            if verbosity >= 1:
                self.stdout.write(
                    f"  metrics {done}/{total}: as of {run.as_of}, {run.customers:,} customers, "
                    f"{run.stage_changes:,} stage changes ({run.duration_seconds:.1f} s)"
                )

        metrics_compute_with_history(months=max(history_months, 0), progress=progress)
        timings = analytics_refresh(full=True)
        if verbosity >= 1:
            self.stdout.write(f"  dashboards: {len(timings)} figures ({sum(timings.values()) / 1000:.1f} s)")
