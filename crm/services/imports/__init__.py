"""CSV import of customers and of orders: streamed, in batches, set-based, every rejected row named by its
line number (the header is line 1) and every good row kept. What a file may contain, column by column, is
documented for users in docs/csv-import.md.

- source.py: reading the file (encoding, header, rows; the lines it cannot give as written)
- messages.py: what an import says, stored as a code with parameters and translated when shown
- report.py: the import report and the batch runner (one transaction a batch; a dry run rolls back)
- orders.py: `orders_import`; customers.py: `customers_import`
- jobs.py: `import_job_run`, the ImportJob the admin upload queues and the worker runs
"""

from crm.services.imports.customers import customers_import  # noqa: F401
from crm.services.imports.jobs import import_job_run  # noqa: F401
from crm.services.imports.orders import ORDER_BATCH_ROWS, orders_import  # noqa: F401
from crm.services.imports.report import (  # noqa: F401
    BATCH_ROWS,
    MAX_ERRORS_KEPT,
    ImportFileError,
    ImportReport,
    ImportRowError,
)
from crm.services.imports.source import FileScan, file_scan  # noqa: F401
