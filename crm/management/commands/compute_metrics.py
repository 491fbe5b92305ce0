"""`manage.py compute_metrics [--as-of YYYY-MM-DD]`: compute every customer's metrics now."""

from datetime import date

from django.core.management.base import BaseCommand, CommandError

from crm.metrics.notes import run_message_text
from crm.services.metrics import metrics_compute


def _date(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise CommandError(f"--as-of must be a date as YYYY-MM-DD, not {value!r}")


class Command(BaseCommand):
    help = (
        "Compute RFM, lifecycle stages, churn risk and predicted lifetime value (BG/NBD + Gamma-Gamma) "
        "for every customer as of a date (default: today in the business time zone, TIME_ZONE), counting "
        "orders placed up to the end of that day there, and record lifecycle-stage changes as behaviour events."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--as-of",
            type=_date,
            default=None,
            help="YYYY-MM-DD, a day in the business time zone; default today",
        )
        parser.add_argument(
            "--pipeline",
            choices=["postgres", "generic"],
            default=None,
            help="force a pipeline (default: the database's own; generic is the ORM path SQLite uses)",
        )

    def handle(self, *args, as_of=None, pipeline=None, **options):
        try:
            run = metrics_compute(as_of=as_of, pipeline=pipeline)
        except ValueError as exc:
            raise CommandError(str(exc))
        out = self.stdout
        out.write(
            f"metrics as of {run.as_of}: {run.customers:,} customers ({run.buyers:,} with orders, "
            f"{run.repeat_buyers:,} repeat), {run.stage_changes:,} stage changes, {run.duration_seconds:.1f} s"
        )
        if run.bgnbd_r is not None:
            out.write(
                f"BG/NBD  r={run.bgnbd_r:.4f} α={run.bgnbd_alpha:.4f} days ({run.alpha_weeks:.4f} weeks) "
                f"a={run.bgnbd_a:.4f} b={run.bgnbd_b:.4f} LL={run.bgnbd_log_likelihood:.2f}"
            )
        if run.gg_p is not None:
            out.write(
                f"Gamma-Gamma  p={run.gg_p:.4f} q={run.gg_q:.4f} γ={run.gg_gamma:.4f} "
                f"LL={run.gg_log_likelihood:.2f}"
            )
        if run.message:
            out.write(run_message_text(run.message))
        out.write("timings (s): " + ", ".join(f"{k} {v}" for k, v in run.timings.items()))
