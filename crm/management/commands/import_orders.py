"""`manage.py import_orders FILE [--dry-run]`: import an order CSV (columns in docs/csv-import.md).

Same output and exit status as import_customers: progress per batch, a summary, the rejected lines, and a
non-zero exit if any row was rejected (the good rows are kept).
"""

import sys

from crm.management.commands.import_customers import Command as ImportCommand
from crm.services.imports import ORDER_BATCH_ROWS, orders_import

# While the import's reader thread parses, the writing thread must win the GIL back from it after every
# return from the database (each result, each chunk of a COPY), which takes up to one switch interval
# (5 ms by default); a waiting thread asks for the GIL after the interval, so a short one costs the reader
# nothing while nobody waits. The interval is process-wide, so it is shortened here only, in a process
# that runs nothing but this import, and never by the import service a Celery worker runs among other
# tasks. What it buys: see BENCHMARKS.md (order CSV import).
GIL_HANDOFF_INTERVAL = 0.0001


class Command(ImportCommand):
    help = "Import orders from a CSV file (UTF-8, or GBK from Excel). Exits non-zero if any row was rejected."
    importer = staticmethod(orders_import)
    batch_rows = ORDER_BATCH_ROWS

    def handle(self, *args, **options):
        saved = sys.getswitchinterval()
        sys.setswitchinterval(min(saved, GIL_HANDOFF_INTERVAL))
        try:
            return super().handle(*args, **options)
        finally:
            sys.setswitchinterval(saved)  # call_command may run it inside a longer-lived process
