"""`manage.py import_customers FILE [--dry-run]`: import a customer CSV (columns in docs/csv-import.md).

Prints progress after each batch and a summary with the rejected lines. Exits 1 if any row was rejected
(the good rows are kept), and also on a whole-file problem (encoding, missing column), having written
nothing.
"""

import time
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from django.utils.translation import gettext as _

from crm.services.imports import BATCH_ROWS, ImportFileError, ImportReport, customers_import

ERRORS_SHOWN = 50


class Command(BaseCommand):
    help = (
        "Import customers from a CSV file (UTF-8, or GBK from Excel). Exits non-zero if any row was rejected."
    )
    importer = staticmethod(customers_import)
    batch_rows = BATCH_ROWS

    def add_arguments(self, parser):
        parser.add_argument("file", help="Path to the CSV file.")
        parser.add_argument(
            "--dry-run", action="store_true", help="Report what would change and write nothing."
        )
        parser.add_argument("--batch-size", type=int, default=self.batch_rows, help="Rows per transaction.")

    def handle(self, *args, file, dry_run, batch_size, verbosity, **options):
        path = Path(file)
        if not path.is_file():
            raise CommandError(_("No such file: %(path)s") % {"path": path})
        started = time.monotonic()

        def progress(report: ImportReport) -> None:
            if verbosity < 1:
                return
            elapsed = max(time.monotonic() - started, 1e-6)
            share = f" ({100 * report.processed_rows // report.total_rows}%)" if report.total_rows else ""
            self.stdout.write(
                _(
                    "%(done)s / %(total)s rows%(share)s: %(created)s created, %(updated)s updated, "
                    "%(unchanged)s unchanged, %(errors)s rejected; %(rate)s rows/s"
                )
                % {
                    "done": f"{report.processed_rows:,}",
                    "total": f"{report.total_rows:,}",
                    "share": share,
                    "created": f"{report.created:,}",
                    "updated": f"{report.updated:,}",
                    "unchanged": f"{report.unchanged:,}",
                    "errors": f"{report.error_count:,}",
                    "rate": f"{report.processed_rows / elapsed:,.0f}",
                }
            )

        try:
            report = self.importer(
                source=path,
                dry_run=dry_run,
                source_label=f"{self.command_name()} {path.name}",
                batch_rows=batch_size,
                progress=progress,
            )
        except ImportFileError as exc:
            raise CommandError(str(exc))
        elapsed = time.monotonic() - started
        for error in report.errors[:ERRORS_SHOWN]:
            column = f" [{error.field}]" if error.field else ""
            self.stderr.write(
                _("line %(line)d%(column)s: %(message)s")
                % {"line": error.line, "column": column, "message": error.message}
            )
        if report.error_count > min(len(report.errors), ERRORS_SHOWN):
            self.stderr.write(
                _("... %(more)d more rejected rows not listed.")
                % {"more": report.error_count - min(len(report.errors), ERRORS_SHOWN)}
            )
        self.stdout.write(report.summary())
        self.stdout.write(
            _("%(rows)s rows in %(seconds).1f s (%(rate)s rows/s).")
            % {
                "rows": f"{report.processed_rows:,}",
                "seconds": elapsed,
                "rate": f"{report.processed_rows / max(elapsed, 1e-6):,.0f}",
            }
        )
        if report.error_count:
            raise CommandError(
                _("%(count)d rows were rejected (the other rows were imported).")
                % {"count": report.error_count}
                if not dry_run
                else _("%(count)d rows would be rejected.") % {"count": report.error_count}
            )

    def command_name(self) -> str:
        return self.__class__.__module__.rsplit(".", 1)[-1]
