"""CSV import of customers and of orders: streamed, in batches, set-based, every rejected row named by its
line number (the header is line 1) and every good row kept.

Shared behaviour

- Encoding: UTF-8 with or without BOM. A file that is not UTF-8 but is valid GBK/GB18030 (what Excel
  on a Chinese Windows saves as "CSV") is decoded as GB18030 and the report says so; anything else is
  refused with a clear message. The encoding is decided on the whole file before any row is written.
- Header names are case-insensitive; spaces and hyphens count as underscores. A missing required
  column refuses the whole file (`ImportFileError`). Unknown columns are ignored and listed in the report.
- Each batch (`BATCH_ROWS` rows, `ORDER_BATCH_ROWS` for orders) is one transaction; an interrupted import keeps the batches done, and
  running it again finishes the job. Re-importing a file changes nothing: all unchanged.
- Dry run: the same import inside one transaction that is rolled back at the end, so it reports exactly
  what a real run would do (created / updated / unchanged / rejected) and leaves nothing behind.

Orders (`orders_import`): required `customer_external_id, order_external_id, ordered_at, amount`;
optional `currency` (CNY), `channel`, `store`, `status` (paid/refunded), `sku`, `quantity` (1),
`unit_price`, `name`, `category`.

- One row per order line: rows with the same order_external_id are one order, and each row with a
  `sku` becomes one of its lines (in file order). Rows of one order must be consecutive (as every
  shop export writes them); the order-level columns (customer, time, amount, currency, channel, store,
  status) must agree between them. `amount` is the order total, repeated on each row.
- Without `unit_price`, the amount not covered by priced lines is spread evenly over the units.
- `ordered_at` is ISO 8601 (`2026-03-08 20:15:00`, `2026-03-08T20:15:00+08:00`, `2026/03/08 20:15`);
  a time without offset is read in DEFAULT_CUSTOMER_TIME_ZONE (Asia/Shanghai), as Chinese exports are.
- An unknown customer_external_id creates a customer with just that id (its profile can come later
  from a customer import); the report counts them.
- A bad row rejects its whole order (nothing half-written): the other rows of that order are listed
  too, pointing at the bad line. Counts are orders; `error_count` is rejected rows.

Customers (`customers_import`): required `external_id`; optional profile columns (`name, email, phone,
birthday, gender, city, region, time_zone, acquisition_channel, utm_source, utm_medium, utm_campaign`),
identity columns (`wechat_openid, wechat_unionid, tmall_buyer_id, jd_buyer_id, app_device_id`) and
consent columns `consent_<channel>` (`consent_email, consent_sms, consent_wechat, consent_push`) with
`opted_in` / `opted_out`.

- An empty cell leaves the field as it is. A consent change is recorded in the consent history.
- Customers are matched by external id, in bulk. A row whose email, phone or identity belongs to
  another customer goes through `customer_upsert`, which merges them exactly as the API would.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import logging
import queue
import re
import sys
import threading
import zoneinfo
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import connection, connections, transaction
from django.utils import timezone, translation
from django.utils.translation import gettext as _

from crm.clock import business_today
from crm.models import (
    Channel,
    Consent,
    ConsentChange,
    ConsentChannel,
    ConsentStatus,
    Customer,
    CustomerIdentity,
    IdentityKind,
    ImportJob,
    OrderStatus,
)
from crm.services.bulk_sql import history_copy_rows, insert_new_rows, insert_rows, rows_where_in, update_rows
from crm.services.customers import customer_upsert
from crm.services.identities import normalise_identity
from crm.services.orders import CENT, PreparedOrders, orders_prepare_values, orders_store

logger = logging.getLogger(__name__)

BATCH_ROWS = 5000
# Orders: a batch costs PostgreSQL a fixed handful of round trips whatever its size, and each round trip can
# wait up to a GIL switch interval (5 ms) for the reader thread to let go, which at 5,000 rows added about
# 15 % to a first import. A batch of 20,000 rows holds its locks (new customers, orders) about 2 s.
ORDER_BATCH_ROWS = 20_000
MAX_ERRORS_KEPT = 1000  # the report and the ImportJob keep this many error entries; error_count counts all
_READ_CHUNK = 1 << 20


class ImportFileError(Exception):
    """The file as a whole cannot be imported (encoding, missing column, empty): raised before any row is
    written. Also raised for a line that is not valid CSV (an unclosed quote) found mid-file: batches
    before it are kept, as with any interrupted import, and a corrected file can be imported again."""


@dataclass
class ImportRowError:
    line: int
    field: str
    message: str

    def as_dict(self) -> dict:
        return {"line": self.line, "field": self.field, "message": self.message}


@dataclass
class ImportReport:
    kind: str
    dry_run: bool = False
    encoding: str = "utf-8"
    notes: list[str] = field(default_factory=list)
    total_rows: int = 0  # an estimate (line count) until the end, then exact
    processed_rows: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    error_count: int = 0  # rejected rows
    errors: list[ImportRowError] = field(default_factory=list)  # the first MAX_ERRORS_KEPT entries
    customers_created: int = 0
    products_created: int = 0

    def add_error(self, line: int, field_name: str, message: str) -> None:
        if len(self.errors) < MAX_ERRORS_KEPT:
            self.errors.append(ImportRowError(line, field_name, message))

    def summary(self) -> str:
        counts = {
            "rows": self.processed_rows,
            "created": self.created,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "errors": self.error_count,
        }
        if self.kind == ImportJob.Kind.ORDERS:
            text = _(
                "Rows read: %(rows)d. Orders created: %(created)d, updated: %(updated)d, unchanged: "
                "%(unchanged)d. Rows rejected: %(errors)d."
            )
        else:
            text = _(
                "Rows read: %(rows)d. Customers created: %(created)d, updated: %(updated)d, unchanged: "
                "%(unchanged)d. Rows rejected: %(errors)d."
            )
        parts = [(_("Dry run, nothing was written.") + " " if self.dry_run else "") + text % counts]
        if self.kind == ImportJob.Kind.ORDERS and (self.customers_created or self.products_created):
            parts.append(
                _(
                    "New customers created for unknown customer ids: %(customers)d; new products: %(products)d."
                )
                % {"customers": self.customers_created, "products": self.products_created}
            )
        if self.error_count > len(self.errors):
            parts.append(
                _("Only the first %(kept)d errors are listed.") % {"kept": len(self.errors)},
            )
        parts.extend(self.notes)
        return " ".join(parts)


Progress = Callable[[ImportReport], None]


# --- Reading the file -----------------------------------------------------------------------------


class _Source:
    """A path or a stored file (ImportJob.file), opened in binary as often as needed."""

    def __init__(self, source):
        self.source = source

    def open(self):
        if isinstance(self.source, str | Path):
            return open(self.source, "rb")
        return self.source.storage.open(self.source.name, "rb")


def detect_encoding(source) -> tuple[str, str | None, int]:
    """(codec, note for the user or None, number of lines). Reads the whole file once, in chunks."""
    src = _Source(source)
    with src.open() as f:
        head = f.read(4)
        if head[:2] in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE):
            raise ImportFileError(
                _('The file is UTF-16 (Excel\'s "Unicode text"). Save it as "CSV UTF-8 (comma delimited)".')
            )
        f.seek(0)
        encoding = "utf-8-sig" if head[:3] == codecs.BOM_UTF8 else "utf-8"
        lines, ok = _scan(f, encoding)
    if ok:
        if lines == 0:
            raise ImportFileError(_("The file is empty."))
        return encoding, None, lines
    with src.open() as f:
        lines, ok = _scan(f, "gb18030")
    if ok:
        return (
            "gb18030",
            _(
                "The file is not UTF-8; it was read as GBK/GB18030 (Chinese Excel's CSV). "
                'Save as "CSV UTF-8" to avoid this guess.'
            ),
            lines,
        )
    raise ImportFileError(
        _(
            'The file is neither UTF-8 nor GBK text. Save it as "CSV UTF-8 (comma delimited)" and upload it again.'
        )
    )


def _scan(f, encoding: str) -> tuple[int, bool]:
    decoder = codecs.getincrementaldecoder(encoding)()
    lines = 0
    last = b""
    try:
        while chunk := f.read(_READ_CHUNK):
            decoder.decode(chunk)
            lines += chunk.count(b"\n")
            last = chunk
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return 0, False
    if last and not last.endswith(b"\n"):
        lines += 1
    return lines, True


def _header_key(name: str) -> str:
    return re.sub(r"[\s\-]+", "_", name.replace("\ufeff", "").strip().lower())


@dataclass
class _Csv:
    columns: dict[str, int]
    rows: Iterator[tuple[int, list[str]]]  # (line number where the row starts, cells)


def _open_csv(
    binary, encoding: str, *, required: tuple[str, ...], optional: set[str], report: ImportReport
) -> _Csv:
    text = io.TextIOWrapper(binary, encoding=encoding, newline="")
    reader = csv.reader(text)
    try:
        header = next(reader)
    except StopIteration:
        raise ImportFileError(_("The file is empty."))
    except csv.Error as exc:
        raise ImportFileError(_("The header line is not valid CSV: %(error)s") % {"error": exc})
    keys = [_header_key(h) for h in header]
    columns: dict[str, int] = {}
    for n, key in enumerate(keys):
        if not key:
            continue
        if key in columns:
            raise ImportFileError(_("Column %(name)s appears twice in the header.") % {"name": key})
        columns[key] = n
    missing = [c for c in required if c not in columns]
    if missing:
        hint = ""
        if len(header) == 1 and any(sep in header[0] for sep in ";\t|"):
            hint = " " + _("The columns must be separated by commas.")
        raise ImportFileError(
            _("Missing required column(s): %(missing)s. The header has: %(found)s.")
            % {"missing": ", ".join(missing), "found": ", ".join(keys) or "-"}
            + hint
        )
    ignored = [k for k in columns if k not in required and k not in optional]
    if ignored:
        report.notes.append(_("Ignored unknown columns: %(names)s.") % {"names": ", ".join(ignored)})

    def rows():
        previous = reader.line_num
        while True:
            try:
                cells = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                raise ImportFileError(
                    _("Line %(line)d is not valid CSV: %(error)s") % {"line": previous + 1, "error": exc}
                )
            start, previous = previous + 1, reader.line_num
            # Blank lines are skipped. Almost every row has its first cell filled, which settles it without
            # looking at the others (this runs once per row of a million-row file).
            if cells and (cells[0].strip() or any(c.strip() for c in cells)):
                yield start, cells

    return _Csv(columns=columns, rows=rows())


def _cell_getter(columns: dict[str, int]):
    def get(cells: list[str], name: str) -> str:
        n = columns.get(name)
        if n is None or n >= len(cells):
            return ""
        return cells[n].strip()

    return get


def _too_many_cells(cells: list[str], width: int) -> bool:
    return len(cells) > width and any(c.strip() for c in cells[width:])


# --- Progress and dry run -------------------------------------------------------------------------


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
    """`handle` each batch (it returns the number of rows it covered) and report progress after each."""
    with _DryRun(report.dry_run):
        for batch in batches:
            report.processed_rows += handle(batch)
            report.total_rows = max(report.total_rows, report.processed_rows)
            if progress:
                progress(report)
    report.total_rows = report.processed_rows
    report.errors.sort(key=lambda e: e.line)
    return report


# --- Orders ---------------------------------------------------------------------------------------

ORDER_REQUIRED = ("customer_external_id", "order_external_id", "ordered_at", "amount")
ORDER_OPTIONAL = {
    "currency",
    "channel",
    "store",
    "status",
    "sku",
    "quantity",
    "unit_price",
    "name",
    "category",
}

# Chinese names shop exports use, as plain strings (an enum member's repr would change the fingerprint).
CHANNEL_ALIASES = {
    "天猫": Channel.TMALL,
    "京东": Channel.JD,
    "微信": Channel.WECHAT,
    "小程序": Channel.WECHAT,
    "微信小程序": Channel.WECHAT,
    "官网": Channel.WEB,
    "网站": Channel.WEB,
    "门店": Channel.STORE,
    "线下": Channel.STORE,
    "短信": Channel.SMS,
    "邮件": Channel.EMAIL,
    "其他": Channel.OTHER,
}
CHANNEL_ALIASES = {name: str(channel.value) for name, channel in CHANNEL_ALIASES.items()}
STATUS_ALIASES = {
    "已付款": str(OrderStatus.PAID.value),
    "已支付": str(OrderStatus.PAID.value),
    "交易成功": str(OrderStatus.PAID.value),
    "已退款": str(OrderStatus.REFUNDED.value),
}


def _channel(value: str) -> str:
    return CHANNEL_ALIASES.get(value, value.lower())


def _parse_datetime(value: str, tz) -> datetime | None:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        try:
            moment = datetime.fromisoformat(value.replace("/", "-"))
        except ValueError:
            return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=tz)
    return moment


def _parse_amount(value: str) -> Decimal | None:
    value = value.replace("¥", "").replace("￥", "").replace(",", "").strip()
    try:
        amount = Decimal(value)
    except InvalidOperation:
        return None
    return amount if amount.is_finite() else None


@dataclass(slots=True)
class _OrderRows:
    order_id: str
    first_line: int
    key: tuple  # the order-level values every row of the order must repeat
    lines: list[tuple] = field(default_factory=list)  # (line, sku, quantity, unit_price|None, name, category)
    row_lines: list[int] = field(default_factory=list)
    bad_lines: list[int] = field(default_factory=list)


# Column names as the user knows them, for the fields orders_ingest reports.
_ORDER_FIELD_COLUMNS = {
    "external_id": "order_external_id",
    "placed_at": "ordered_at",
    "total": "amount",
    "customer_id": "customer_external_id",
}


def orders_import(
    *,
    source,
    dry_run: bool = False,
    source_label: str = "csv",
    batch_rows: int = ORDER_BATCH_ROWS,
    progress: Progress | None = None,
    now: datetime | None = None,
) -> ImportReport:
    """Import an order CSV (see the module docstring). `source` is a path or a stored file.

    Pipelined: a thread reads, parses and validates the next batch (`orders_prepare`, pure Python) while
    this thread has the database write the current one (`orders_store`), so on two cores the Python
    work and PostgreSQL's run side by side. Only this thread touches the database and the report."""
    now = now or timezone.now()
    report = ImportReport(kind=ImportJob.Kind.ORDERS, dry_run=dry_run)
    report.encoding, note, lines = detect_encoding(source)
    if note:
        report.notes.append(note)
    report.total_rows = max(lines - 1, 0)
    tz = zoneinfo.ZoneInfo(settings.DEFAULT_CUSTOMER_TIME_ZONE)

    with _Source(source).open() as binary:
        table = _open_csv(
            binary, report.encoding, required=ORDER_REQUIRED, optional=ORDER_OPTIONAL, report=report
        )
        parser = _OrderRowParser(table.columns, tz)

        def batches():
            batch: list[tuple[int, list[str]]] = []
            last_order = None
            column = table.columns["order_external_id"]
            for line, cells in table.rows:
                order_id = cells[column].strip() if column < len(cells) else ""
                # Never cut an order in two: a batch ends only where the order id changes.
                if len(batch) >= batch_rows and order_id != last_order:
                    yield parser.parse(batch, now)
                    batch = []
                batch.append((line, cells))
                last_order = order_id
            if batch:
                yield parser.parse(batch, now)

        def store(parsed: _ParsedOrders) -> int:
            _orders_store(parsed, report=report, source=source_label)
            return parsed.rows

        return _run_batches(report, _in_thread(batches()), store, progress)


# While the reader thread parses, the consumer's every return from the database (each result, each chunk of a
# COPY) must win the GIL back from it, which by default takes up to a 5 ms switch interval: about 1 s of a
# 200,000-row import went to such waits. A waiting thread asks for the GIL after the interval, so a short one
# costs the reader nothing while nobody waits. Process-wide (Python has no other knob), so it is set for as
# long as a reader runs and restored by the last one to finish.
_GIL_HANDOFF_INTERVAL = 0.0001
_gil_handoff_lock = threading.Lock()
_gil_handoff_users = 0
_gil_handoff_saved = 0.005


@contextmanager
def _quick_gil_handoff():
    global _gil_handoff_users, _gil_handoff_saved
    with _gil_handoff_lock:
        if _gil_handoff_users == 0:
            _gil_handoff_saved = sys.getswitchinterval()
            sys.setswitchinterval(min(_gil_handoff_saved, _GIL_HANDOFF_INTERVAL))
        _gil_handoff_users += 1
    try:
        yield
    finally:
        with _gil_handoff_lock:
            _gil_handoff_users -= 1
            if _gil_handoff_users == 0:
                sys.setswitchinterval(_gil_handoff_saved)


def _in_thread(produce: Iterator, depth: int = 2) -> Iterator:
    """Run the generator `produce` in a thread, `depth` items ahead of the consumer; its exceptions are
    raised here. Closing this iterator (the consumer stopped or failed) stops and joins the thread."""
    with _quick_gil_handoff():
        yield from _in_thread_run(produce, depth)


def _in_thread_run(produce: Iterator, depth: int) -> Iterator:
    handoff: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    language = translation.get_language()

    def run() -> None:
        if language:
            translation.activate(language)  # messages in the caller's language
        try:
            for item in produce:
                while not stop.is_set():
                    try:
                        handoff.put(("item", item), timeout=0.2)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            handoff.put(("done", None))
        except BaseException as exc:  # handed to the consumer
            handoff.put(("error", exc))

    thread = threading.Thread(target=run, name="csv-import-reader", daemon=True)
    thread.start()
    try:
        while True:
            kind, value = handoff.get()
            if kind == "done":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        stop.set()
        thread.join()


@dataclass
class _ParsedOrders:
    rows: int
    rejected: int  # rows refused while parsing (with their orders)
    errors: list[ImportRowError]
    groups: list[_OrderRows]  # parallel to prepared.items' input positions
    prepared: PreparedOrders


class _OrderRowParser:
    """CSV rows of one batch -> orders, validated (`orders_prepare`). Runs in the reader thread: it writes
    nothing shared; its findings travel in the `_ParsedOrders` it returns."""

    def __init__(self, columns: dict[str, int], tz):
        self.width = max(columns.values()) + 1
        blank = self.width  # rows are padded with one extra empty cell: absent columns read it
        self.tz = tz
        self.at = {name: columns.get(name, blank) for name in (*ORDER_REQUIRED, *ORDER_OPTIONAL)}

    def parse(self, batch: list[tuple[int, list[str]]], now: datetime) -> _ParsedOrders:
        at, width, tz = self.at, self.width, self.tz
        i_customer, i_order, i_at, i_amount = (at[c] for c in ORDER_REQUIRED)
        i_currency, i_channel, i_store, i_status = at["currency"], at["channel"], at["store"], at["status"]
        i_sku, i_quantity, i_price, i_name, i_category = (
            at["sku"],
            at["quantity"],
            at["unit_price"],
            at["name"],
            at["category"],
        )
        errors: list[ImportRowError] = []
        groups: dict[str, _OrderRows] = {}
        last_raw_at = last_at = last_raw_amount = last_amount = None
        for line, cells in batch:
            problems: list[tuple[str, str]] = []
            if len(cells) > width:
                if any(c.strip() for c in cells[width:]):
                    problems.append(("", _("The row has more cells than the header.")))
                cells = cells[:width]
            cells = list(map(str.strip, cells))
            cells.extend([""] * (width + 1 - len(cells)))
            order_id, customer = cells[i_order], cells[i_customer]
            if not order_id:
                problems.append(("order_external_id", _("The order id is empty.")))
            if not customer:
                problems.append(("customer_external_id", _("The customer id is empty.")))
            raw_at = cells[i_at]
            if raw_at != last_raw_at:  # the rows of one order repeat its time
                last_raw_at, last_at = raw_at, _parse_datetime(raw_at, tz) if raw_at else None
            placed_at = last_at
            if placed_at is None:
                problems.append(
                    (
                        "ordered_at",
                        _("%(value)r is not a date and time (e.g. 2026-03-08 20:15:00).") % {"value": raw_at},
                    )
                )
            raw_amount = cells[i_amount]
            if raw_amount != last_raw_amount:  # and its amount
                last_raw_amount, last_amount = raw_amount, _parse_amount(raw_amount)
            amount = last_amount
            if amount is None:
                problems.append(("amount", _("%(value)r is not an amount.") % {"value": cells[i_amount]}))
            quantity = 1
            if raw_quantity := cells[i_quantity]:
                try:
                    quantity = int(raw_quantity)
                except ValueError:
                    problems.append(
                        ("quantity", _("%(value)r is not a whole number.") % {"value": raw_quantity})
                    )
            unit_price = None
            if raw_price := cells[i_price]:
                unit_price = _parse_amount(raw_price)
                if unit_price is None:
                    problems.append(("unit_price", _("%(value)r is not an amount.") % {"value": raw_price}))
            status = cells[i_status]
            key = (
                customer,
                placed_at,
                amount,
                cells[i_currency].upper() or "CNY",
                CHANNEL_ALIASES.get(cells[i_channel]) or cells[i_channel].lower(),
                cells[i_store],
                STATUS_ALIASES.get(status) or status.lower() or OrderStatus.PAID.value,
            )
            group = groups.get(order_id)
            if group is None:
                group = groups[order_id] = _OrderRows(order_id=order_id, first_line=line, key=key)
            elif not problems and not group.bad_lines and key != group.key:
                problems.append(
                    (
                        "order_external_id",
                        _(
                            "Order %(id)s: this row's customer, time, amount, currency, channel, store or status "
                            "differs from line %(first)d."
                        )
                        % {"id": order_id, "first": group.first_line},
                    )
                )
            group.row_lines.append(line)
            if problems:
                errors.extend(ImportRowError(line, field_name, message) for field_name, message in problems)
                group.bad_lines.append(line)
                continue
            if sku := cells[i_sku]:
                group.lines.append((line, sku, quantity, unit_price, cells[i_name], cells[i_category]))

        rejected = 0
        orders: list[tuple] = []
        kept: list[_OrderRows] = []
        for order_id, group in groups.items():
            if group.bad_lines:
                rejected += _reject_order(errors, order_id, group, set(group.bad_lines))
                continue
            customer, placed_at, amount, currency, channel, store, status = group.key
            orders.append(
                (
                    order_id,
                    placed_at,
                    amount,
                    currency,
                    channel,
                    store,
                    status,
                    None,
                    customer,
                    _priced_lines(group.lines, amount),
                )
            )
            kept.append(group)
        return _ParsedOrders(
            rows=len(batch),
            rejected=rejected,
            errors=errors,
            groups=kept,
            prepared=orders_prepare_values(orders=orders, now=now),
        )


def _orders_store(parsed: _ParsedOrders, *, report: ImportReport, source: str) -> None:
    result = orders_store(prepared=parsed.prepared, source=source)
    report.created += len(result.created)
    report.unchanged += len(result.unchanged)
    report.customers_created += result.customers_created
    report.products_created += result.products_created
    errors = parsed.errors
    rejected = parsed.rejected
    refused: dict[int, list] = {}
    for error in result.errors:
        refused.setdefault(error.index, []).append(error)
    for index, found in refused.items():
        group = parsed.groups[index]
        own: set[int] = set()
        for error in found:
            line, column = group.first_line, _ORDER_FIELD_COLUMNS.get(error.field, error.field)
            if m := _LINE_FIELD.fullmatch(error.field):
                line, column = group.lines[int(m[1])][0], m[2]
            errors.append(ImportRowError(line, column, error.message))
            own.add(line)
        rejected += _reject_order(errors, group.order_id, group, own)
    for error in sorted(errors, key=lambda e: e.line):
        report.add_error(error.line, error.field, error.message)
    report.error_count += rejected


_LINE_FIELD = re.compile(r"lines\[(\d+)\]\.(\w+)")


def _reject_order(errors: list[ImportRowError], order_id: str, group: _OrderRows, own: set[int]) -> int:
    """Count every row of a refused order as rejected (returned); rows without an error of their own point
    at the first one that has (nothing of the order was written)."""
    first_bad = min(own)
    for line in group.row_lines:
        if line not in own:
            errors.append(
                ImportRowError(
                    line,
                    "order_external_id",
                    _("Order %(id)s not imported: see line %(line)d.") % {"id": order_id, "line": first_bad},
                )
            )
    return len(group.row_lines)


_ZERO = Decimal(0)


def _priced_lines(lines: list[tuple], amount: Decimal) -> list[tuple]:
    """Lines as (line, sku, quantity, unit_price or None, name, category) -> (sku, quantity, unit_price,
    name, category); units without a price share what the priced lines leave of the order amount."""
    if not lines:
        return []
    unpriced_units = 0
    covered = _ZERO
    for _line, _sku, quantity, price, _name, _category in lines:
        if price is None:
            unpriced_units += max(quantity, 0)
        else:
            covered += price * quantity
    share = _ZERO
    if unpriced_units == 1:  # the usual line of one unit: no division (Decimal's is slow)
        share = max(amount - covered, _ZERO).quantize(CENT)
    elif unpriced_units:
        share = max((amount - covered) / unpriced_units, _ZERO).quantize(CENT)
    return [
        (sku, quantity, share if price is None else price, name, category)
        for _line, sku, quantity, price, name, category in lines
    ]


# --- Customers ------------------------------------------------------------------------------------

PROFILE_COLUMNS = (
    "name",
    "email",
    "phone",
    "birthday",
    "gender",
    "city",
    "region",
    "time_zone",
    "acquisition_channel",
    "utm_source",
    "utm_medium",
    "utm_campaign",
)
IDENTITY_COLUMNS = (
    IdentityKind.WECHAT_OPENID,
    IdentityKind.WECHAT_UNIONID,
    IdentityKind.TMALL_BUYER_ID,
    IdentityKind.JD_BUYER_ID,
    IdentityKind.APP_DEVICE_ID,
)
CONSENT_COLUMNS = {f"consent_{c}": c for c in ConsentChannel.values}
CUSTOMER_REQUIRED = ("external_id",)
CUSTOMER_OPTIONAL = {*PROFILE_COLUMNS, *IDENTITY_COLUMNS, *CONSENT_COLUMNS}
_LIMITS = {"name": 200, "city": 100, "region": 100, "utm_source": 100, "utm_medium": 100, "utm_campaign": 100}
GENDER_ALIASES = {
    "female": "female",
    "f": "female",
    "女": "female",
    "male": "male",
    "m": "male",
    "男": "male",
    "other": "other",
    "其他": "other",
    "unknown": "",
    "未知": "",
}
CONSENT_ALIASES = {
    **dict.fromkeys(["opted_in", "opt_in", "yes", "y", "true", "1", "是", "同意"], ConsentStatus.OPTED_IN),
    **dict.fromkeys(
        ["opted_out", "opt_out", "no", "n", "false", "0", "否", "拒绝", "退订"], ConsentStatus.OPTED_OUT
    ),
}


@dataclass
class _CustomerRow:
    line: int
    external_id: str
    profile: dict
    identities: list[tuple[str, str]]  # external id, email and phone first, then identity columns
    consents: dict[str, str]


def customers_import(
    *,
    source,
    dry_run: bool = False,
    source_label: str = "csv",
    batch_rows: int = BATCH_ROWS,
    progress: Progress | None = None,
    now: datetime | None = None,
) -> ImportReport:
    """Import a customer CSV (see the module docstring). `source` is a path or a stored file."""
    now = now or timezone.now()
    report = ImportReport(kind=ImportJob.Kind.CUSTOMERS, dry_run=dry_run)
    report.encoding, note, lines = detect_encoding(source)
    if note:
        report.notes.append(note)
    report.total_rows = max(lines - 1, 0)
    with _Source(source).open() as binary:
        table = _open_csv(
            binary, report.encoding, required=CUSTOMER_REQUIRED, optional=CUSTOMER_OPTIONAL, report=report
        )
        width = max(table.columns.values()) + 1
        get = _cell_getter(table.columns)
        present = [c for c in (*PROFILE_COLUMNS, *IDENTITY_COLUMNS, *CONSENT_COLUMNS) if c in table.columns]

        def batches():
            batch = []
            for row in table.rows:
                batch.append(row)
                if len(batch) >= batch_rows:
                    yield batch
                    batch = []
            if batch:
                yield batch

        def handle(batch):
            rows = []
            for line, cells in batch:
                row = _parse_customer(
                    line,
                    cells,
                    get=get,
                    width=width,
                    present=present,
                    report=report,
                    today=business_today(now),
                )
                if row is not None:
                    rows.append(row)
            rows = _drop_repeats(rows, report)
            if rows:
                with transaction.atomic():
                    _customers_batch(rows, report=report, source=source_label, now=now)
            return len(batch)

        return _run_batches(report, batches(), handle, progress)


_VALID_ZONES = zoneinfo.available_timezones()


def _parse_customer(line, cells, *, get, width, present, report, today: date) -> _CustomerRow | None:
    problems: list[tuple[str, str]] = []
    if _too_many_cells(cells, width):
        problems.append(("", _("The row has more cells than the header.")))
    external_id = get(cells, "external_id")
    if not external_id:
        problems.append(("external_id", _("The customer id is empty.")))
    elif len(external_id) > 64:
        problems.append(("external_id", _("Longer than %(limit)d characters.") % {"limit": 64}))
    profile: dict = {}
    identities: list[tuple[str, str]] = [(IdentityKind.EXTERNAL_ID.value, external_id)] if external_id else []
    consents: dict[str, str] = {}
    for column in present:
        value = get(cells, column)
        if not value:
            continue
        try:
            if column in CONSENT_COLUMNS:
                status = CONSENT_ALIASES.get(value.lower())
                if status is None:
                    raise ValidationError(_("%(value)r is not opted_in or opted_out.") % {"value": value})
                consents[CONSENT_COLUMNS[column]] = status
            elif column in IDENTITY_COLUMNS:
                identities.append(normalise_identity(column, value))
            elif column == "email":
                value = value.lower()
                validate_email(value)
                profile["email"] = value
                identities.insert(1, (IdentityKind.EMAIL.value, value))
            elif column == "phone":
                kind, value = normalise_identity(IdentityKind.PHONE, value)
                if len(value) > 32:
                    raise ValidationError(_("Longer than %(limit)d characters.") % {"limit": 32})
                profile["phone"] = value
                identities.append((kind, value))
            elif column == "birthday":
                profile["birthday"] = _parse_birthday(value, today)
            elif column == "gender":
                if value.lower() not in GENDER_ALIASES:
                    raise ValidationError(_("%(value)r is not female, male or other.") % {"value": value})
                profile["gender"] = GENDER_ALIASES[value.lower()]
            elif column == "time_zone":
                if value not in _VALID_ZONES:
                    raise ValidationError(
                        _("%(value)s is not an IANA time zone (e.g. Asia/Shanghai).") % {"value": value}
                    )
                profile["time_zone"] = value
            elif column == "acquisition_channel":
                channel = _channel(value)
                if channel not in Channel.values:
                    raise ValidationError(
                        _("Unknown channel %(value)s; use one of %(choices)s.")
                        % {"value": value, "choices": ", ".join(Channel.values)}
                    )
                profile["acquisition_channel"] = channel
            else:
                if len(value) > _LIMITS[column]:
                    raise ValidationError(_("Longer than %(limit)d characters.") % {"limit": _LIMITS[column]})
                profile[column] = value
        except ValidationError as exc:
            problems.append((column, " ".join(exc.messages)))
    if problems:
        for field_name, message in problems:
            report.add_error(line, field_name, message)
        report.error_count += 1
        return None
    return _CustomerRow(line, external_id, profile, identities, consents)


def _parse_birthday(value: str, today: date) -> date:
    text = value.replace("/", "-").replace(".", "-")
    try:
        day = date.fromisoformat(text) if "-" in text else datetime.strptime(text, "%Y%m%d").date()
    except ValueError:
        raise ValidationError(_("%(value)r is not a date (e.g. 1990-05-20).") % {"value": value})
    if day > today or day.year < 1900:
        raise ValidationError(_("%(value)s is not a plausible birthday.") % {"value": value})
    return day


def _drop_repeats(rows: list[_CustomerRow], report: ImportReport) -> list[_CustomerRow]:
    first: dict[str, int] = {}
    kept = []
    for row in rows:
        if row.external_id in first:
            report.add_error(
                row.line,
                "external_id",
                _("Customer %(id)s already appears on line %(line)d; this row is skipped.")
                % {"id": row.external_id, "line": first[row.external_id]},
            )
            report.error_count += 1
            continue
        first[row.external_id] = row.line
        kept.append(row)
    return kept


def _locked_customers(column: str, values: list) -> list[Customer]:
    """The customers whose `column` is in `values`, locked FOR UPDATE in primary-key order (the order every
    writer takes them in)."""
    if not values:
        return []
    if connection.vendor == "postgresql":
        return list(
            Customer.objects.raw(
                f"SELECT * FROM crm_customer WHERE {column} = ANY(%s) ORDER BY id FOR UPDATE", [list(values)]
            )
        )
    return list(Customer.objects.select_for_update().filter(**{f"{column}__in": values}).order_by("pk"))


def _customers_batch(rows: list[_CustomerRow], *, report: ImportReport, source: str, now: datetime) -> None:
    label = f"import: {source}"[:100]
    ext_ids = [r.external_id for r in rows]
    targets: dict[str, Customer] = {c.external_id: c for c in _locked_customers("external_id", ext_ids)}
    missing = [e for e in ext_ids if e not in targets]
    if missing:
        # A customer merged into another is found by its old external id through the identity.
        merged = {
            value: customer_id
            for kind, value, customer_id in rows_where_in(
                CustomerIdentity, "value", missing, ["kind", "value", "customer_id"]
            )
            if kind == IdentityKind.EXTERNAL_ID
        }
        if merged:
            by_pk = {c.pk: c for c in _locked_customers("id", sorted(set(merged.values())))}
            for value, pk in merged.items():
                if pk in by_pk:
                    targets[value] = by_pk[pk]

    wanted = {p for r in rows for p in r.identities}
    owners: dict[tuple[str, str], int] = {}
    for kind, value, customer_id in rows_where_in(
        CustomerIdentity, "value", list({pair[1] for pair in wanted}), ["kind", "value", "customer_id"]
    ):
        if (kind, value) in wanted:
            owners[(kind, value)] = customer_id

    creates: list[_CustomerRow] = []
    updates: list[tuple[_CustomerRow, Customer]] = []
    slow: list[_CustomerRow] = []
    claimed: dict[tuple[str, str], str] = {}
    for row in rows:
        target = targets.get(row.external_id)
        mine = {target.pk} if target else set()
        shared = any(owners.get(p, -1) not in (-1, *mine) for p in row.identities) or any(
            claimed.get(p, row.external_id) != row.external_id for p in row.identities
        )
        for p in row.identities:
            claimed.setdefault(p, row.external_id)
        if shared:
            slow.append(row)  # an identifier of another customer: customer_upsert merges, as the API would
        elif target is None:
            creates.append(row)
        else:
            updates.append((row, target))

    created_ids: dict[str, int] = {}
    changed_ids: set[int] = set()
    new_identities: list[CustomerIdentity] = []

    if creates:
        created_ids = dict(
            insert_new_rows(
                Customer,
                [
                    Customer(external_id=r.external_id, created_at=now, updated_at=now, **r.profile)
                    for r in creates
                ],
                conflict=["external_id"],
                returning=["external_id", "id"],
            )
        )
        for row in creates:
            pk = created_ids.get(row.external_id)
            if pk is None:
                slow.append(row)  # created meanwhile by someone else
                continue
            new_identities.extend(
                CustomerIdentity(customer_id=pk, kind=kind, value=value, source=label, created_at=now)
                for kind, value in row.identities
            )
        history_copy_rows(Customer, list(created_ids.values()), reason=label, when=now)

    changed: list[Customer] = []
    fields: set[str] = set()
    for row, target in updates:
        diff = [name for name, value in row.profile.items() if getattr(target, name) != value]
        for name in diff:
            setattr(target, name, row.profile[name])
        if diff:
            target.updated_at = now
            changed.append(target)
            fields.update(diff)
        added = [p for p in row.identities if p not in owners]
        new_identities.extend(
            CustomerIdentity(customer_id=target.pk, kind=kind, value=value, source=label, created_at=now)
            for kind, value in added
        )
        if diff or added:
            changed_ids.add(target.pk)
    if changed:
        update_rows(Customer, changed, [*sorted(fields), "updated_at"])
        history_copy_rows(Customer, [c.pk for c in changed], reason=label, when=now, kind="~")
    inserted = insert_new_rows(CustomerIdentity, new_identities, conflict=["kind", "value"], returning=["id"])
    if len(inserted) < len(new_identities):
        logger.info(
            "customer import: %d identifiers were taken meanwhile", len(new_identities) - len(inserted)
        )

    ids: dict[str, int] = {**{r.external_id: t.pk for r, t in updates}, **created_ids}
    for row in sorted(slow, key=lambda r: r.line):
        try:
            result = customer_upsert(
                external_id=row.external_id,
                profile=row.profile,
                identities=[p for p in row.identities if p[0] not in ("external_id", "email", "phone")],
                source=label,
            )
        except ValidationError as exc:
            report.add_error(row.line, "", " ".join(exc.messages))
            report.error_count += 1
            continue
        ids[row.external_id] = result.customer.pk
        if result.created:
            created_ids[row.external_id] = result.customer.pk
        elif result.changed_fields or result.merged_customer_ids:
            changed_ids.add(result.customer.pk)

    changed_ids |= _consents_apply(rows, ids, label=label, now=now)
    report.created += len(created_ids)
    for row in rows:
        pk = ids.get(row.external_id)
        if pk is None or row.external_id in created_ids:
            continue
        if pk in changed_ids:
            report.updated += 1
        else:
            report.unchanged += 1


def _consents_apply(rows: list[_CustomerRow], ids: dict[str, int], *, label: str, now: datetime) -> set[int]:
    """Record the consent columns in bulk: a change writes the current state and a history row; a repeat
    of the current state writes nothing. Returns the customers whose consent changed."""
    wanted = [
        (ids[r.external_id], channel, status)
        for r in rows
        if r.external_id in ids
        for channel, status in r.consents.items()
    ]
    if not wanted:
        return set()
    customer_ids = sorted({w[0] for w in wanted})
    if connection.vendor == "postgresql":
        locked = Consent.objects.raw(
            "SELECT * FROM crm_consent WHERE customer_id = ANY(%s) ORDER BY id FOR UPDATE", [customer_ids]
        )
    else:
        locked = Consent.objects.select_for_update().filter(customer_id__in=customer_ids).order_by("pk")
    current = {(c.customer_id, c.channel): c for c in locked}
    new: dict[tuple[int, str], Consent] = {}
    updated: list[Consent] = []
    history: list[ConsentChange] = []
    for customer_id, channel, status in wanted:
        consent = current.get((customer_id, channel))
        if consent is not None and (consent.status == status or consent.changed_at > now):
            continue  # nothing new, or a newer decision is already known
        history.append(
            ConsentChange(
                customer_id=customer_id,
                channel=channel,
                status=status,
                previous_status=consent.status if consent else "",
                occurred_at=now,
                source=label,
                recorded_at=now,
            )
        )
        if consent is None:
            consent = Consent(
                customer_id=customer_id, channel=channel, status=status, changed_at=now, source=label
            )
            current[(customer_id, channel)] = new[(customer_id, channel)] = consent
        else:
            consent.status, consent.changed_at, consent.source = status, now, label
            updated.append(consent)
    if new:
        # A consent_set racing us on the same customer and channel wins; its decision is the newer one.
        created = insert_new_rows(
            Consent, list(new.values()), conflict=["customer", "channel"], returning=["id"]
        )
        history_copy_rows(Consent, [row[0] for row in created], reason=label, when=now)
    if updated:
        update_rows(Consent, updated, ["status", "changed_at", "source"])
        history_copy_rows(Consent, [c.pk for c in updated], reason=label, when=now, kind="~")
    insert_rows(ConsentChange, history)
    return {c.customer_id for c in history}


# --- Import jobs (admin upload, run by the worker) ------------------------------------------------

IMPORTERS = {ImportJob.Kind.ORDERS: orders_import, ImportJob.Kind.CUSTOMERS: customers_import}


class _JobProgress:
    """Writes a job's progress after each batch. A dry run holds one open transaction on the default
    connection, so on PostgreSQL its progress goes through a second, autocommit connection (SQLite
    would wait for its own write lock: there the progress of a dry run shows only at the end)."""

    def __init__(self, job: ImportJob):
        self.job = job
        self.side = None
        if job.dry_run and connection.vendor == "postgresql":
            self.side = connections.create_connection("default")

    def __call__(self, report: ImportReport) -> None:
        values = _job_values(report)
        if self.side is None:
            if not self.job.dry_run:
                ImportJob.objects.filter(pk=self.job.pk).update(**values)
            return
        values["errors"] = json.dumps(values["errors"])
        columns = ", ".join(f"{name} = %s" for name in values)
        with self.side.cursor() as cursor:
            cursor.execute(
                f"UPDATE crm_importjob SET {columns} WHERE id = %s", [*values.values(), self.job.pk]
            )

    def close(self) -> None:
        if self.side is not None:
            self.side.close()


def _job_values(report: ImportReport) -> dict:
    return {
        "total_rows": report.total_rows,
        "processed_rows": report.processed_rows,
        "created_count": report.created,
        "updated_count": report.updated,
        "unchanged_count": report.unchanged,
        "error_count": report.error_count,
        "errors": [e.as_dict() for e in report.errors],
    }


def import_job_run(*, job_id: int) -> ImportJob:
    """Run a queued ImportJob (the Celery task calls this). A job that is already done is left alone, so a
    redelivered task does no harm; a job interrupted half-way runs again from the start, which the
    idempotent import turns into "unchanged" for the rows already stored."""
    job = ImportJob.objects.get(pk=job_id)
    if job.status == ImportJob.Status.DONE:
        return job
    ImportJob.objects.filter(pk=job.pk).update(
        status=ImportJob.Status.RUNNING,
        message="",
        finished_at=None,
        **_job_values(ImportReport(kind=job.kind)),
    )
    progress = _JobProgress(job)
    try:
        report = IMPORTERS[job.kind](
            source=job.file, dry_run=job.dry_run, source_label=f"import job {job.pk}", progress=progress
        )
    except ImportFileError as exc:
        ImportJob.objects.filter(pk=job.pk).update(
            status=ImportJob.Status.FAILED, message=str(exc), finished_at=timezone.now()
        )
    except Exception as exc:
        ImportJob.objects.filter(pk=job.pk).update(
            status=ImportJob.Status.FAILED,
            message=_(
                "The import stopped unexpectedly: %(error)s. Rows already imported are kept; run it again."
            )
            % {"error": exc},
            finished_at=timezone.now(),
        )
        raise
    else:
        ImportJob.objects.filter(pk=job.pk).update(
            status=ImportJob.Status.DONE,
            message=report.summary(),
            finished_at=timezone.now(),
            **_job_values(report),
        )
    finally:
        progress.close()
    job.refresh_from_db()
    return job
