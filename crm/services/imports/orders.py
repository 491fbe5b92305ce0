"""Order CSV import (`orders_import`): rows grouped into orders, parsed in a reader thread while the
database stores the previous batch, and stored through the orders service's set-based path.
The columns are documented for users in docs/csv-import.md."""

from __future__ import annotations

import logging
import queue
import re
import threading
import zoneinfo
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation

import psycopg
from django.conf import settings
from django.db import DatabaseError
from django.utils import timezone, translation
from django.utils.translation import gettext_noop

from crm.models import (
    Channel,
    ImportJob,
    OrderStatus,
)
from crm.services.imports.messages import ImportMessage, message
from crm.services.imports.report import (
    ImportReport,
    ImportRowError,
    Progress,
    _run_batches,
)
from crm.services.imports.source import Row, _open_csv, _Source, file_scan
from crm.services.orders import (
    CENT,
    MAX_AMOUNT,
    OrdersIngestResult,
    PreparedOrders,
    RowError,
    orders_prepare_values,
    orders_store,
)

# Orders: a batch costs PostgreSQL a fixed handful of round trips whatever its size, and after each one the
# writing thread may wait a GIL switch interval for the reader thread to let go, so larger batches cost
# less per row; what bounds them is how long a batch holds its locks (new customers, orders). See
# BENCHMARKS.md (order CSV import).
ORDER_BATCH_ROWS = 20_000

logger = logging.getLogger(__name__)


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
    row_at: list[int] = field(default_factory=list)  # parallel to row_lines: positions in the batch


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
    scan = file_scan(source)
    report.encoding = scan.encoding
    if scan.note:
        report.notes.append(scan.note)
    report.total_rows = max(scan.lines - 1, 0)
    tz = zoneinfo.ZoneInfo(settings.DEFAULT_CUSTOMER_TIME_ZONE)

    with _Source(source).open() as binary:
        table = _open_csv(binary, scan, required=ORDER_REQUIRED, optional=ORDER_OPTIONAL, report=report)
        parser = _OrderRowParser(table.columns, tz)

        def batches():
            batch: list[Row] = []
            last_order = None
            column = table.columns["order_external_id"]
            for row in table.rows:
                cells = row[1]
                order_id = cells[column].strip() if column < len(cells) else ""
                # Never cut an order in two: a batch ends only where the order id changes.
                if len(batch) >= batch_rows and order_id != last_order:
                    yield parser.parse(batch, now)
                    batch = []
                batch.append(row)
                last_order = order_id
            if batch:
                yield parser.parse(batch, now)

        def store(parsed: _ParsedOrders) -> int:
            _orders_store(parsed, report=report, source=source_label)
            return parsed.rows

        return _run_batches(report, _in_thread(batches()), store, progress)


def _in_thread(produce: Iterator, depth: int = 2) -> Iterator:
    """Run the generator `produce` in a thread, `depth` items ahead of the consumer; its exceptions are
    raised here. Closing this iterator (the consumer stopped or failed) stops and joins the thread.

    It leaves the interpreter's GIL switch interval alone: that setting is process-wide, and in a Celery
    worker it would change every other thread's scheduling too. Only the import_orders command, which owns
    its process, shortens it (see crm/management/commands/import_orders.py)."""
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
    values: list[tuple]  # the orders as given to orders_prepare_values, parallel to groups


class _OrderRowParser:
    """CSV rows of one batch -> orders, validated (`orders_prepare`). Runs in the reader thread: it writes
    nothing shared; its findings travel in the `_ParsedOrders` it returns."""

    def __init__(self, columns: dict[str, int], tz):
        self.width = max(columns.values()) + 1
        blank = self.width  # rows are padded with one extra empty cell: absent columns read it
        self.tz = tz
        self.at = {name: columns.get(name, blank) for name in (*ORDER_REQUIRED, *ORDER_OPTIONAL)}

    def parse(self, batch: list[Row], now: datetime) -> _ParsedOrders:
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
        previous_order = None
        for position, (line, cells, trouble) in enumerate(batch):
            problems: list[tuple[str, ImportMessage]] = []
            if len(cells) > width:
                if any(c.strip() for c in cells[width:]) and trouble is None:
                    problems.append(("", message(gettext_noop("The row has more cells than the header."))))
                cells = cells[:width]
            cells = list(map(str.strip, cells))
            cells.extend([""] * (width + 1 - len(cells)))
            order_id, customer = cells[i_order], cells[i_customer]
            group = groups.get(order_id)
            if group is not None and order_id and order_id != previous_order:
                trouble = trouble or (
                    "order_external_id",
                    message(
                        gettext_noop(
                            "The rows of order %(id)s must be consecutive, but other orders' rows come between "
                            "this row and line %(line)d, so the order was not imported."
                        ),
                        id=order_id,
                        line=group.row_lines[-1],
                    ),
                )
            elif group is not None and order_id and (earlier := _repeated(cells, group, batch, width)):
                trouble = trouble or (
                    "",
                    message(
                        gettext_noop(
                            "This row repeats line %(line)d exactly: order %(id)s would get the same line twice, "
                            "so it was not imported. If the order has two such lines, write one row with their "
                            "quantities added up."
                        ),
                        id=order_id,
                        line=earlier,
                    ),
                )
            previous_order = order_id
            if trouble is not None:  # a row the reader could not read, or out of its order's place
                if group is None:
                    group = groups[order_id] = _OrderRows(order_id=order_id, first_line=line, key=None)
                group.row_lines.append(line)
                group.row_at.append(position)
                group.bad_lines.append(line)
                errors.append(ImportRowError(line, *trouble))
                continue
            if not order_id:
                problems.append(("order_external_id", message(gettext_noop("The order id is empty."))))
            if not customer:
                problems.append(("customer_external_id", message(gettext_noop("The customer id is empty."))))
            raw_at = cells[i_at]
            if raw_at != last_raw_at:  # the rows of one order repeat its time
                last_raw_at, last_at = raw_at, _parse_datetime(raw_at, tz) if raw_at else None
            placed_at = last_at
            if placed_at is None:
                problems.append(
                    (
                        "ordered_at",
                        message(
                            gettext_noop("%(value)r is not a date and time (e.g. 2026-03-08 20:15:00)."),
                            value=raw_at,
                        ),
                    )
                )
            raw_amount = cells[i_amount]
            if raw_amount != last_raw_amount:  # and its amount
                last_raw_amount, last_amount = raw_amount, _parse_amount(raw_amount)
            amount = last_amount
            if amount is None:
                problems.append(
                    ("amount", message(gettext_noop("%(value)r is not an amount."), value=cells[i_amount]))
                )
            quantity = 1
            if raw_quantity := cells[i_quantity]:
                try:
                    quantity = int(raw_quantity)
                except ValueError:
                    problems.append(
                        (
                            "quantity",
                            message(gettext_noop("%(value)r is not a whole number."), value=raw_quantity),
                        )
                    )
            unit_price = None
            if raw_price := cells[i_price]:
                unit_price = _parse_amount(raw_price)
                if unit_price is None:
                    problems.append(
                        ("unit_price", message(gettext_noop("%(value)r is not an amount."), value=raw_price))
                    )
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
            if group is None:
                group = groups[order_id] = _OrderRows(order_id=order_id, first_line=line, key=key)
            elif not problems and not group.bad_lines and key != group.key:
                problems.append(
                    (
                        "order_external_id",
                        message(
                            gettext_noop(
                                "Order %(id)s: this row's customer, time, amount, currency, channel, store or "
                                "status differs from line %(first)d."
                            ),
                            id=order_id,
                            first=group.first_line,
                        ),
                    )
                )
            group.row_lines.append(line)
            group.row_at.append(position)
            if problems:
                errors.extend(ImportRowError(line, field_name, msg) for field_name, msg in problems)
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
            values=orders,
        )


def _repeated(cells: list[str], group: _OrderRows, batch: list[Row], width: int) -> int | None:
    """The line of an earlier row of `group` with the same cells as `cells` (stripped, padded), or None.
    Earlier rows are looked up in the batch rather than kept: an order has few rows, and keeping a copy of
    every row's cells would give the garbage collector a batch's worth more objects to walk."""
    for position, line in zip(group.row_at, group.row_lines, strict=True):
        earlier = [c.strip() for c in batch[position][1][:width]]
        earlier.extend([""] * (width + 1 - len(earlier)))
        if earlier == cells:
            return line
    return None


def _orders_store(parsed: _ParsedOrders, *, report: ImportReport, source: str) -> None:
    errors = parsed.errors
    rejected = parsed.rejected
    for result, groups in _store_isolating(parsed.prepared, parsed.values, parsed.groups, source=source):
        report.created += len(result.created)
        report.unchanged += len(result.unchanged)
        report.customers_created += result.customers_created
        report.products_created += result.products_created
        refused: dict[int, list] = {}
        for error in result.errors:
            refused.setdefault(error.index, []).append(error)
        for index, found in refused.items():
            group = groups[index]
            own: set[int] = set()
            for error in found:
                line, column = group.first_line, _ORDER_FIELD_COLUMNS.get(error.field, error.field)
                if m := _LINE_FIELD.fullmatch(error.field):
                    line, column = group.lines[int(m[1])][0], m[2]
                errors.append(ImportRowError(line, column, _service_message(error)))
                own.add(line)
            rejected += _reject_order(errors, group.order_id, group, own)
    for error in sorted(errors, key=lambda e: e.line):
        report.add_error(error.line, error.field, error.msg)
    report.error_count += rejected


_LINE_FIELD = re.compile(r"lines\[(\d+)\]\.(\w+)")


def _store_isolating(
    prepared: PreparedOrders, values: list[tuple], groups: list[_OrderRows], *, source: str
) -> list[tuple[OrdersIngestResult, list[_OrderRows]]]:
    """Store a batch; if the database refuses it (a value every check before let through), store each half
    again, down to the one order it refuses, which is reported on its line: the rest of the batch is kept
    and the message names the CSV line, not a row of the staging table. Each attempt is one transaction
    (a savepoint in a dry run), so a refused one leaves nothing behind. Costs nothing when nothing fails."""
    try:
        return [(orders_store(prepared=prepared, source=source), groups)]
    except (DatabaseError, psycopg.Error) as exc:  # psycopg's own from the COPY, which Django does not wrap
        if len(values) == 1:
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            refused = RowError(
                index=0,
                field="",
                message=reason,
                template=gettext_noop(
                    "The database refused this order (%(error)s); the other orders of the file were imported."
                ),
                params={"error": reason},
            )
            return [(OrdersIngestResult(errors=[refused]), groups)]
        logger.info("order import: the database refused a batch of %d orders, halving it", len(values))
    middle = len(values) // 2
    return [
        *_store_isolating(
            orders_prepare_values(orders=values[:middle], now=prepared.now),
            values[:middle],
            groups[:middle],
            source=source,
        ),
        *_store_isolating(
            orders_prepare_values(orders=values[middle:], now=prepared.now),
            values[middle:],
            groups[middle:],
            source=source,
        ),
    ]


def _service_message(error) -> ImportMessage:
    """The orders service's reason as a code with parameters (its msgid), or its text if it has none."""
    if error.template:
        return message(error.template, **error.params)
    return ImportMessage(error.message)


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
                    message(
                        gettext_noop("Order %(id)s not imported: see line %(line)d."),
                        id=order_id,
                        line=first_bad,
                    ),
                )
            )
    return len(group.row_lines)


_ZERO = Decimal(0)


def _priced_lines(lines: list[tuple], amount: Decimal) -> list[tuple]:
    """Lines as (line, sku, quantity, unit_price or None, name, category) -> (sku, quantity, unit_price,
    name, category); units without a price share what the priced lines leave of the order amount."""
    if not lines:
        return []
    if amount > MAX_AMOUNT:  # refused by the orders service; 1E+400 could not even be rounded to cents
        return [
            (sku, quantity, price or _ZERO, name, category)
            for _line, sku, quantity, price, name, category in lines
        ]
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
