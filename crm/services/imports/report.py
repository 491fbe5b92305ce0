"""What an import reports (created, updated, unchanged, rejected rows by line), and how it runs its
batches: one transaction each, or all in one rolled-back transaction for a dry run."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from django.db import transaction
from django.utils.translation import gettext_noop

from crm.models import (
    ImportJob,
)
from crm.services.imports.messages import ImportMessage, message

BATCH_ROWS = 5000
MAX_ERRORS_KEPT = 1000  # the report and the ImportJob keep this many error entries; error_count counts all


class ImportFileError(Exception):
    """The file as a whole cannot be imported (encoding, missing column, empty): raised before any row is
    written. Carries its ImportMessage (`str()` puts it in the active language)."""

    def __init__(self, msg: ImportMessage):
        super().__init__(msg.msgid)
        self.msg = msg

    def __str__(self) -> str:
        return self.msg.text()


@dataclass(slots=True)
class ImportRowError:
    line: int
    field: str
    msg: ImportMessage

    @property
    def message(self) -> str:
        return self.msg.text()

    def as_dict(self) -> dict:
        return {"line": self.line, "field": self.field, **self.msg.as_dict()}


@dataclass
class ImportReport:
    kind: str
    dry_run: bool = False
    encoding: str = "utf-8"
    notes: list[ImportMessage] = field(default_factory=list)
    total_rows: int = 0  # an estimate (line count) until the end, then exact
    processed_rows: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    error_count: int = 0  # rejected rows
    errors: list[ImportRowError] = field(default_factory=list)  # the first MAX_ERRORS_KEPT entries
    customers_created: int = 0
    products_created: int = 0
    unread_lines: list[int] = field(default_factory=list)  # lines the CSV reader could not read as a row

    def add_error(self, line: int, field_name: str, msg: ImportMessage) -> None:
        if len(self.errors) < MAX_ERRORS_KEPT:
            self.errors.append(ImportRowError(line, field_name, msg))

    def summary_messages(self) -> list[ImportMessage]:
        counts = {
            "rows": self.processed_rows,
            "created": self.created,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "errors": self.error_count,
        }
        parts = []
        if self.dry_run:
            parts.append(message(gettext_noop("Dry run, nothing was written.")))
        if self.kind == ImportJob.Kind.ORDERS:
            parts.append(
                message(
                    gettext_noop(
                        "Rows read: %(rows)d. Orders created: %(created)d, updated: %(updated)d, unchanged: "
                        "%(unchanged)d. Rows rejected: %(errors)d."
                    ),
                    **counts,
                )
            )
        else:
            parts.append(
                message(
                    gettext_noop(
                        "Rows read: %(rows)d. Customers created: %(created)d, updated: %(updated)d, unchanged: "
                        "%(unchanged)d. Rows rejected: %(errors)d."
                    ),
                    **counts,
                )
            )
        if self.kind == ImportJob.Kind.ORDERS and (self.customers_created or self.products_created):
            parts.append(
                message(
                    gettext_noop(
                        "New customers created for unknown customer ids: %(customers)d; new products: %(products)d."
                    ),
                    customers=self.customers_created,
                    products=self.products_created,
                )
            )
        if self.unread_lines:
            parts.append(
                message(
                    gettext_noop(
                        "Lines that could not be read as CSV, rejected: %(count)d (line %(lines)s); the lines "
                        "after them were read."
                    ),
                    count=len(self.unread_lines),
                    lines=_line_list(self.unread_lines),
                )
            )
        if self.error_count > len(self.errors):
            parts.append(
                message(gettext_noop("Only the first %(kept)d errors are listed."), kept=len(self.errors))
            )
        parts.extend(self.notes)
        return parts

    def summary(self) -> str:
        return " ".join(m.text() for m in self.summary_messages())


_LINES_LISTED = 20


def _line_list(lines: list[int]) -> str:
    """Line numbers for a message: the first 20, then "…"."""
    listed = ", ".join(str(n) for n in lines[:_LINES_LISTED])
    return listed + (", …" if len(lines) > _LINES_LISTED else "")


Progress = Callable[[ImportReport], None]


class _DryRun:
    """A whole import in one transaction that is rolled back when the import ends."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self._atomic = transaction.atomic() if enabled else None

    def __enter__(self):
        if self._atomic:
            self._atomic.__enter__()
        return self

    def __exit__(self, exc_type, exc, tb):
        if self._atomic:
            transaction.set_rollback(True)
            return self._atomic.__exit__(exc_type, exc, tb)
        return False


def _run_batches(report: ImportReport, batches, handle, progress: Progress | None) -> ImportReport:
    """`handle` each batch (it returns the number of rows it covered) and report progress after each.

    Each batch and its progress are one transaction (the stores' own transactions become savepoints in
    it): a job's progress is a write conditional on the worker still holding the job's lease
    (crm/services/imports/jobs.py), so a worker whose lease was taken over while it wrote a batch gets
    LeaseLost there, before the commit, and the batch is rolled back instead of landing beside the
    new holder's. The progress write is the transaction's last statement, so the job's row stays
    locked (and the lease keeper's heartbeat waits) only for the commit."""
    with _DryRun(report.dry_run):
        for batch in batches:
            with transaction.atomic():
                report.processed_rows += handle(batch)
                report.total_rows = max(report.total_rows, report.processed_rows)
                if progress:
                    progress(report)
    report.total_rows = report.processed_rows
    report.errors.sort(key=lambda e: e.line)
    return report
