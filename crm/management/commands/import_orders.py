"""`manage.py import_orders FILE [--dry-run]`: import an order CSV (columns in docs/csv-import.md).

Same output and exit status as import_customers: progress per batch, a summary, the rejected lines, and a
non-zero exit if any row was rejected (the good rows are kept).
"""

from crm.management.commands.import_customers import Command as ImportCommand
from crm.services.imports import ORDER_BATCH_ROWS, orders_import


class Command(ImportCommand):
    help = "Import orders from a CSV file (UTF-8, or GBK from Excel). Exits non-zero if any row was rejected."
    importer = staticmethod(orders_import)
    batch_rows = ORDER_BATCH_ROWS
