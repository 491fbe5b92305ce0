"""`manage.py export_metrics OUT.csv`: one CSV row per customer with their metrics."""

import sys

from django.core.management.base import BaseCommand, CommandError

from crm.metrics.selectors import EXPORT_COLUMNS, metrics_export_csv


class Command(BaseCommand):
    help = "Write the latest metrics of every customer to a CSV file ('-' for standard output). Columns: " + (
        ", ".join(EXPORT_COLUMNS)
    )

    def add_arguments(self, parser):
        parser.add_argument("out", help="path of the CSV file to write, or - for standard output")

    def handle(self, *args, out, **options):
        if out == "-":
            rows = metrics_export_csv(out=sys.stdout)
            return
        try:
            with open(out, "w", newline="", encoding="utf-8") as f:
                rows = metrics_export_csv(out=f)
        except OSError as exc:
            raise CommandError(f"cannot write {out}: {exc.strerror}")
        self.stdout.write(f"wrote {rows:,} customers to {out}")
