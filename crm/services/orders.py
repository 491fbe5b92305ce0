"""Orders, ingested in sets (API batches and CSV files share this one path). Refunds are
crm.services.refunds; the set-based SQL both use, crm.services.bulk_sql.

An order is idempotent on its external id. `Order.fingerprint` is a SHA-256 of a canonical form of what
was ingested (everything but the customer, which is compared by resolved id so that a customer merged
since, or named once by id and once by external id, still matches). A repeat with the same fingerprint
and customer is "unchanged"; anything else under a known id is a conflict and is refused.

Errors the API maps to responses (all carry `.field` and `.message`; the refund ones are raised by
crm.services.refunds):

- `RefundRejected` (400): the refund is not possible (over the remaining amount or quantities, bad
  input). `OrderNotFound` (404) is a `RefundRejected` for an unknown order external id.
- `OrderConflict` (409): an id reused with a different payload. `RefundConflict` is the refund case.

`orders_ingest` never raises for bad items: it returns `RowError`s (code "invalid", "conflict" or
"unknown_customer") and stores the good items.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation

from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_noop

from crm.clock import EARLIEST_DATE, is_before_earliest
from crm.event_types import ORDER_PLACED, ORDER_REFUNDED
from crm.models import (
    Channel,
    Customer,
    CustomerIdentity,
    IdentityKind,
    Order,
    OrderLine,
    OrderStatus,
    Product,
)
from crm.services import bulk_sql, orders_postgres
from crm.services.bulk_sql import history_copy_rows, insert_new_rows, rows_where_in
from crm.services.event_log import NewEvent, events_append

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class OrderLineInput:
    sku: str
    quantity: int
    unit_price: Decimal
    name: str = ""
    category: str = ""


@dataclass(frozen=True)
class OrderInput:
    external_id: str
    placed_at: datetime  # timezone-aware
    total: Decimal
    currency: str = "CNY"
    channel: str = ""
    store: str = ""
    status: str = "paid"
    customer_id: int | None = None  # already resolved (the API resolves identities first)
    customer_external_id: str | None = None  # CSV: found, or created, by the customer's external id
    lines: tuple[OrderLineInput, ...] = ()


@dataclass
class RowError:
    index: int  # position in the input sequence (the CSV import turns it into a line number)
    field: str
    message: str
    code: str = "invalid"  # "invalid" (400), "conflict" (409), "unknown_customer" (400/404)
    # The message's msgid and parameters, for callers that store it and translate it when shown (CSV jobs).
    template: str = ""
    params: dict = field(default_factory=dict)


class Reason(str):
    """A message in the active language that also carries its msgid and parameters."""

    template: str
    params: dict


def _reason(template: str, **params) -> Reason:
    reason = Reason(_(template) % params if params else _(template))
    reason.template, reason.params = template, params
    return reason


@dataclass
class OrdersIngestResult:
    created: list[str] = field(default_factory=list)  # external ids
    unchanged: list[str] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)
    customers_created: int = 0
    products_created: int = 0
    # external id -> Order.pk for created and unchanged orders (created ones are absent in a dry run).
    order_ids: dict[str, int] = field(default_factory=dict)


# --- Errors the API catches -----------------------------------------------------------------------


class OrdersServiceError(Exception):
    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field
        self.message = message


class RefundRejected(OrdersServiceError):
    """The refund cannot be applied as asked (400)."""


class OrderNotFound(RefundRejected):
    """No order with that external id (404)."""


class OrderConflict(OrdersServiceError):
    """An external id already used for something different (409)."""


class RefundConflict(OrderConflict):
    """The refund id was already applied with a different payload (409)."""


# --- Validation -----------------------------------------------------------------------------------

# ISO 4217 active codes. RMB is what Chinese systems often write for CNY; it is accepted and stored as CNY.
CURRENCY_CODES = frozenset(
    """AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BRL BSD BTN BWP BYN BZD
    CAD CDF CHF CLP CNY COP CRC CUC CUP CVE CZK DJF DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP GEL GHS GIP GMD
    GNF GTQ GYD HKD HNL HTG HUF IDR ILS INR IQD IRR ISK JMD JOD JPY KES KGS KHR KMF KPW KRW KWD KYD KZT LAK
    LBP LKR LRD LSL LYD MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MYR MZN NAD NGN NIO NOK NPR NZD OMR
    PAB PEN PGK PHP PKR PLN PYG QAR RON RSD RUB RWF SAR SBD SCR SDG SEK SGD SHP SLE SOS SRD SSP STN SVC SYP
    SZL THB TJS TMT TND TOP TRY TTD TWD TZS UAH UGX USD UYU UZS VES VND VUV WST XAF XCD XOF XPF YER ZAR ZMW
    ZWL""".split()
)
CURRENCY_ALIASES = {"RMB": "CNY"}
# Statuses an order may arrive with. A partial refund needs its amount, so it comes as a refund.
INGEST_STATUSES = (OrderStatus.PAID, OrderStatus.REFUNDED)
# Clocks of shops and platforms drift; an order a few minutes "in the future" is a clock, not a typo.
CLOCK_SKEW = timedelta(minutes=5)
MAX_AMOUNT = Decimal("999999999999.99")  # max_digits=14, decimal_places=2
CENT = Decimal("0.01")


def _decimal_max(model, name: str) -> Decimal:
    column = model._meta.get_field(name)
    return Decimal(10) ** (column.max_digits - column.decimal_places) - Decimal(10) ** -column.decimal_places


MAX_UNIT_PRICE = _decimal_max(OrderLine, "unit_price")  # numeric(12, 2): less than an order total may be
# More units on one line is a typo (a code pasted as a quantity); also far below the integer column's limit.
MAX_QUANTITY = 1_000_000
_CHANNELS = frozenset(Channel.values)


def normalise_currency(value: str) -> str | None:
    code = (value or "").strip().upper()
    code = CURRENCY_ALIASES.get(code, code)
    return code if code in CURRENCY_CODES else None


def money_parse(
    value, *, allow_zero: bool = True, limit: Decimal = MAX_AMOUNT
) -> tuple[Decimal | None, Reason | None]:
    """(amount with two decimals, None) or (None, reason)."""
    try:
        amount = value if type(value) is Decimal else Decimal(str(value).strip())
    except (InvalidOperation, ValueError, TypeError):
        return None, _reason(gettext_noop("%(value)s is not an amount."), value=str(value)[:40])
    if not amount.is_finite():
        return None, _reason(gettext_noop("%(value)s is not an amount."), value=str(value)[:40])
    if amount < 0 or (amount == 0 and not allow_zero):
        return None, _reason(gettext_noop("The amount must be positive.")) if not allow_zero else _reason(
            gettext_noop("The amount cannot be negative.")
        )
    if amount > limit:  # before rounding: 1E+400 cannot be quantized
        return None, _reason(
            gettext_noop("%(value)s is too large: at most %(limit)s."),
            value=str(value)[:40],
            limit=f"{limit:,}",
        )
    rounded = amount.quantize(CENT)
    if amount != rounded:
        return None, _reason(
            gettext_noop("%(value)s has more than two decimal places."), value=str(value)[:40]
        )
    return rounded, None


def utc_iso(moment: datetime) -> str:
    """The instant as fingerprints spell it: UTC, ISO 8601 with microseconds."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def payload_fingerprint(parts: tuple) -> str:
    """The fingerprint of a request's canonical tuple, stored beside an idempotency key: the same key with
    another fingerprint is a reused key (orders, refunds)."""
    # repr() of a tuple of str/int is an unambiguous canonical form (quotes and escapes are deterministic)
    # and several times cheaper than json.dumps in the hot loop of a bulk import.
    return hashlib.sha256(repr(parts).encode()).hexdigest()


def order_fingerprint(
    *,
    external_id: str,
    placed_at: datetime | str,
    total: Decimal | str,
    currency: str,
    channel: str,
    store: str,
    status: str,
    lines: Iterable[tuple],
) -> str:
    """The fingerprint `orders_ingest` stores, for writers that build orders in bulk (seed_demo).

    Values are the normalised ones: `total` and unit prices with two decimals, `placed_at` aware (or already
    as `datetime.isoformat(timespec="microseconds")` in UTC), lines as (sku, quantity, unit_price, name,
    category)."""
    when = placed_at if isinstance(placed_at, str) else utc_iso(placed_at)
    return payload_fingerprint(
        (
            external_id,
            when,
            str(total),
            currency,
            channel,
            store,
            status,
            tuple(
                (sku, quantity, str(price), name, category) for sku, quantity, price, name, category in lines
            ),
        )
    )


@dataclass(slots=True)  # slots: a bulk import makes one per order line
class _Line:
    sku: str
    quantity: int
    unit_price: Decimal
    line_total: Decimal
    name: str
    category: str
    product_id: int | None = None


@dataclass(slots=True)
class _Item:
    index: int
    external_id: str
    placed_at: datetime
    total: Decimal
    currency: str
    channel: str
    store: str
    status: str
    customer_id: int | None
    customer_external_id: str | None
    lines: list[_Line]
    fingerprint: str
    placed_at_utc: str = ""  # placed_at in UTC, ISO 8601 (as fingerprinted; the COPY text reuses it)

    @property
    def refunded(self) -> bool:
        return self.status == OrderStatus.REFUNDED


def _too_long(value: str, limit: int) -> Reason | None:
    if len(value) > limit:
        return _reason(gettext_noop("Longer than %(limit)d characters."), limit=limit)
    return None


def _text_problem(order: OrderInput) -> tuple[str, Reason] | None:
    """(field, reason) for a text no column can store: a NUL, or an unpaired surrogate (from a \\ud800 JSON
    escape). The bulk path (orders_prepare_values) leaves this to its caller: a CSV file is checked as it
    is read, where a NUL is named by its line and column."""
    texts = [
        ("external_id", order.external_id),
        ("store", order.store),
        ("customer_external_id", order.customer_external_id),
        ("channel", order.channel),
        ("currency", order.currency),
        ("status", order.status),
    ]
    for n, line in enumerate(order.lines):
        texts += [
            (f"lines[{n}].sku", line.sku),
            (f"lines[{n}].name", line.name),
            (f"lines[{n}].category", line.category),
        ]
    for name, value in texts:
        if not isinstance(value, str):
            continue
        if "\x00" in value:
            return name, _reason(gettext_noop("Contains a NUL character, which no text can hold."))
        if not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                return name, _reason(
                    gettext_noop("Contains an unpaired surrogate escape; send valid UTF-8 text.")
                )
    return None


def _prepare(index: int, order: OrderInput, now: datetime) -> tuple[_Item | None, list[RowError]]:
    if problem := _text_problem(order):
        return None, [_row_error(index, *problem)]
    return _prepare_values(
        index,
        now,
        order.external_id,
        order.placed_at,
        order.total,
        order.currency,
        order.channel,
        order.store,
        order.status,
        order.customer_id,
        order.customer_external_id,
        [(ln.sku, ln.quantity, ln.unit_price, ln.name, ln.category) for ln in order.lines],
    )


def _prepare_values(
    index: int,
    now: datetime,
    external_id,
    placed_at,
    total,
    currency,
    channel,
    store,
    status,
    customer_id,
    customer_external_id,
    lines_in: Sequence[tuple],
) -> tuple[_Item | None, list[RowError]]:
    """Validate and normalise one order, given as the fields of an OrderInput with lines as (sku,
    quantity, unit_price, name, category) tuples (the hot loop of a bulk import: checks are inlined)."""
    errors: list[RowError] = []
    given_currency, given_channel, given_status = currency, channel, status

    def err(field_name: str, message: Reason) -> None:
        errors.append(_row_error(index, field_name, message))

    external_id = (external_id or "").strip()
    if not external_id:
        err("external_id", _reason(gettext_noop("The order id is empty.")))
    elif len(external_id) > 100:
        err("external_id", _too_long(external_id, 100))

    if not isinstance(placed_at, datetime) or placed_at.utcoffset() is None:
        err("placed_at", _reason(gettext_noop("The order time must be a date and time with a time zone.")))
    elif placed_at > now + CLOCK_SKEW:
        err(
            "placed_at",
            _reason(gettext_noop("The order time %(value)s is in the future."), value=placed_at.isoformat()),
        )
    elif is_before_earliest(placed_at):
        err(
            "placed_at",
            _reason(
                gettext_noop(
                    "The order time %(value)s is before %(earliest)s: give a time from %(earliest)s on."
                ),
                value=placed_at.isoformat(),
                earliest=EARLIEST_DATE.isoformat(),
            ),
        )

    total, problem = money_parse(total)
    if problem:
        err("total", problem)

    if currency not in CURRENCY_CODES:
        currency = normalise_currency(currency)
        if currency is None:
            err(
                "currency",
                _reason(
                    gettext_noop("%(value)s is not an ISO 4217 currency code (e.g. CNY)."),
                    value=given_currency,
                ),
            )

    channel = channel or ""
    if channel and channel not in _CHANNELS:
        channel = channel.strip().lower()
        if channel and channel not in _CHANNELS:
            err(
                "channel",
                _reason(
                    gettext_noop("Unknown channel %(value)s; use one of %(choices)s."),
                    value=given_channel,
                    choices=", ".join(Channel.values),
                ),
            )
    store = store or ""
    if store:
        store = store.strip()
        if len(store) > 100:
            err("store", _too_long(store, 100))

    if status not in INGEST_STATUSES:
        status = (status or OrderStatus.PAID).strip().lower()
        if status == OrderStatus.PARTIALLY_REFUNDED:
            err(
                "status",
                _reason(
                    gettext_noop(
                        "An order cannot arrive partially refunded: send it as paid, then send the refund."
                    )
                ),
            )
        elif status not in INGEST_STATUSES:
            err(
                "status",
                _reason(
                    gettext_noop("Unknown order status %(value)s; use one of %(choices)s."),
                    value=given_status,
                    choices=", ".join(INGEST_STATUSES),
                ),
            )

    customer_external_id = (customer_external_id or "").strip() or None
    if customer_id is None and customer_external_id is None:
        err(
            "customer_id",
            _reason(gettext_noop("The order names no customer (customer_id or customer_external_id).")),
        )
    elif customer_id is None and len(customer_external_id) > 64:
        err("customer_external_id", _too_long(customer_external_id, 64))

    lines: list[_Line] = []
    fingerprinted_lines: list[tuple] = []
    for n, (sku, quantity, unit_price, name, category) in enumerate(lines_in):
        sku = (sku or "").strip()
        if len(sku) > 64:
            err(f"lines[{n}].sku", _too_long(sku, 64))
        if type(quantity) is not int or quantity < 1 or quantity > MAX_QUANTITY:
            err(
                f"lines[{n}].quantity",
                _reason(
                    gettext_noop("The quantity must be a whole number from 1 to %(max)s."),
                    max=f"{MAX_QUANTITY:,}",
                ),
            )
            quantity = None
        unit_price, problem = money_parse(unit_price, limit=MAX_UNIT_PRICE)
        if problem:
            err(f"lines[{n}].unit_price", problem)
        if name:
            name = name.strip()
            if len(name) > 200:
                err(f"lines[{n}].name", _too_long(name, 200))
        if category:
            category = category.strip()
            if len(category) > 100:
                err(f"lines[{n}].category", _too_long(category, 100))
        if quantity is not None and unit_price is not None:
            line_total = unit_price * quantity
            if line_total > MAX_AMOUNT:
                err(f"lines[{n}].quantity", _reason(gettext_noop("The line total is too large.")))
            name, category = name or "", category or ""
            lines.append(_Line(sku, quantity, unit_price, line_total, name, category))
            fingerprinted_lines.append((sku, quantity, str(unit_price), name, category))

    if errors:
        return None, errors
    # Plain str: a TextChoices member (OrderStatus.PAID) would put its enum repr into the fingerprint.
    status, channel, currency = str(status), str(channel), str(currency)
    placed_at_utc = placed_at.astimezone(UTC).isoformat(timespec="microseconds")
    fingerprint = payload_fingerprint(
        (
            external_id,
            placed_at_utc,
            str(total),
            currency,
            channel,
            store,
            status,
            tuple(fingerprinted_lines),
        )
    )
    item = _Item(
        index=index,
        external_id=external_id,
        placed_at=placed_at,
        total=total,
        currency=currency,
        channel=channel,
        store=store,
        status=status,
        customer_id=customer_id,
        customer_external_id=None if customer_id is not None else customer_external_id,
        lines=lines,
        fingerprint=fingerprint,
        placed_at_utc=placed_at_utc,
    )
    return item, []


def _row_error(index: int, field_name: str, message: Reason, code: str = "invalid") -> RowError:
    return RowError(
        index=index,
        field=field_name,
        message=message,
        code=code,
        template=getattr(message, "template", ""),
        params=getattr(message, "params", {}),
    )


def _conflict(item: _Item) -> RowError:
    return _row_error(
        item.index,
        "external_id",
        _reason(
            gettext_noop(
                "Order %(id)s already exists with different content (customer, time, amount or lines); "
                "an order id cannot be reused."
            ),
            id=item.external_id,
        ),
        code="conflict",
    )


# --- Ingest ---------------------------------------------------------------------------------------


def orders_ingest(
    *,
    orders: Sequence[OrderInput],
    dry_run: bool = False,
    source: str = "api",
    now: datetime | None = None,
) -> OrdersIngestResult:
    """Store the new orders of a batch, with their lines, products, customers and `order_placed` events,
    in one transaction; report repeats as unchanged and bad or conflicting items as `RowError`s.

    Set-based: a handful of queries per batch whatever its size. A dry run does all of it in a
    transaction that is rolled back, so what it reports is exactly what a real run would do.

    Safe under concurrency: new orders are inserted with ON CONFLICT DO NOTHING and only the rows this
    call inserted get lines and events; an id another batch inserted meanwhile is re-read and reported
    as unchanged or conflict. Rows are inserted sorted by their unique key, table by table in the same
    order (customers, products, orders), so two batches wait for each other instead of deadlocking.

    The two halves are also callable apart (`orders_prepare`, then `orders_store`), so that a bulk
    import can validate the next batch while the database writes this one."""
    return orders_store(prepared=orders_prepare(orders=orders, now=now), dry_run=dry_run, source=source)


@dataclass
class PreparedOrders:
    """Validated, normalised and fingerprinted orders, not yet written; `result` holds the errors so far."""

    items: list[_Item]
    result: OrdersIngestResult
    now: datetime
    # The COPY text of `items` (orders, lines) for the PostgreSQL path, rendered while preparing so that a
    # bulk import makes it in its reader thread.
    copy_text: tuple[str, str] | None = None


def orders_prepare(*, orders: Sequence[OrderInput], now: datetime | None = None) -> PreparedOrders:
    """The first half of `orders_ingest`: pure Python, no database access (safe in another thread)."""
    now = now or timezone.now()
    return _prepare_all((_prepare(index, order, now) for index, order in enumerate(orders)), now)


def orders_prepare_values(*, orders: Sequence[tuple], now: datetime) -> PreparedOrders:
    """`orders_prepare` for bulk callers that skip building OrderInputs: each order as the tuple (external_id,
    placed_at, total, currency, channel, store, status, customer_id, customer_external_id, lines), lines as
    (sku, quantity, unit_price, name, category) tuples. Same validation and normalisation."""
    return _prepare_all((_prepare_values(index, now, *order) for index, order in enumerate(orders)), now)


def _prepare_all(prepared, now: datetime) -> PreparedOrders:
    result = OrdersIngestResult()
    items: list[_Item] = []
    first: dict[str, _Item] = {}
    for item, errors in prepared:
        if errors:
            result.errors.extend(errors)
            continue
        seen = first.get(item.external_id)
        if seen is None:
            first[item.external_id] = item
            items.append(item)
        elif (seen.fingerprint, seen.customer_id, seen.customer_external_id) == (
            item.fingerprint,
            item.customer_id,
            item.customer_external_id,
        ):
            result.unchanged.append(item.external_id)  # the same order twice in one batch
        else:
            result.errors.append(_conflict(item))
    copy_text = orders_postgres.render_copy(items) if items and bulk_sql.use_copy() else None
    return PreparedOrders(items=items, result=result, now=now, copy_text=copy_text)


def orders_store(
    *, prepared: PreparedOrders, dry_run: bool = False, source: str = "api"
) -> OrdersIngestResult:
    """The second half of `orders_ingest`: one transaction of set-based writes."""
    result = prepared.result
    if prepared.items:
        with transaction.atomic():
            if bulk_sql.use_copy():
                _ingest_items_copy(
                    prepared.items, result, now=prepared.now, source=source, copy_text=prepared.copy_text
                )
            else:
                _ingest_items(prepared.items, result, now=prepared.now, source=source)
            if dry_run:
                transaction.set_rollback(True)
        if dry_run:
            created = set(result.created)
            result.order_ids = {k: v for k, v in result.order_ids.items() if k not in created}
    result.errors.sort(key=lambda e: e.index)
    return result


def _ingest_items_copy(
    items: list[_Item],
    result: OrdersIngestResult,
    *,
    now: datetime,
    source: str,
    copy_text: tuple[str, str] | None,
) -> None:
    """The PostgreSQL path: the batch in a fixed handful of statements (see orders_postgres.py)."""
    orders_copy, lines_copy = copy_text or orders_postgres.render_copy(items)
    wanted, customers_created, products_created, rows = orders_postgres.store_batch(
        orders_copy, lines_copy, now=now, source=source
    )
    if customers_created < wanted:
        # Another batch created them between our read and our insert (we waited for it to commit).
        logger.info("orders_ingest lost %d customer insert races", wanted - customers_created)
    result.customers_created += customers_created
    result.products_created += products_created
    created: list[_Item] = []
    raced: list[_Item] = []
    leftover: list[_Item] = []
    for pos, customer_id, inserted_id, stored_id, stored_customer_id, same_fingerprint in rows:
        item = items[pos]
        if item.customer_id is not None and customer_id is None:
            result.errors.append(_unknown_customer(item))
            continue
        item.customer_id = customer_id
        if inserted_id is not None:
            result.order_ids[item.external_id] = inserted_id
            created.append(item)
        elif stored_id is not None:
            if same_fingerprint and stored_customer_id == customer_id:
                result.unchanged.append(item.external_id)
                result.order_ids[item.external_id] = stored_id
            else:
                result.errors.append(_conflict(item))
        elif customer_id is None:
            leftover.append(item)
        else:
            raced.append(item)
    result.created.extend(sorted(i.external_id for i in created))
    if raced:
        # Another batch inserted these ids after our statement began; it has committed (ON CONFLICT waited
        # for it), so a fresh read sees its rows.
        logger.info("orders_ingest lost %d insert races", len(raced))
        again = _existing_orders([i.external_id for i in raced])
        for item in raced:
            _classify_existing(item, again[item.external_id], result)
    if leftover:
        # Neither inserted nor stored when statement 1 looked, and no customer known from statement 1: the
        # order of a customer created in this batch that another batch inserted first, or one whose
        # customer went away between the statements. Rare enough for the portable path, which looks again.
        logger.info("orders_ingest retries %d orders on the portable path", len(leftover))
        for item in leftover:
            item.customer_id = None
        _ingest_items(leftover, result, now=now, source=source)


def _unknown_customer(item: _Item) -> RowError:
    return _row_error(
        item.index,
        "customer_id",
        _reason(gettext_noop("No customer with id %(id)s."), id=item.customer_id),
        code="unknown_customer",
    )


def _ingest_items(items: list[_Item], result: OrdersIngestResult, *, now: datetime, source: str) -> None:
    """The portable path (SQLite for `make run`)."""
    items = _resolve_customers(items, result)
    existing = _existing_orders([i.external_id for i in items])
    new: list[_Item] = []
    for item in items:
        if item.external_id in existing:
            _classify_existing(item, existing[item.external_id], result)
        else:
            new.append(item)
    if not new:
        return

    wanted = {i.customer_external_id: i.channel for i in reversed(new) if i.customer_id is None}
    if wanted:
        ids, created = _customers_create(wanted, now=now, source=source)
        result.customers_created += created
        for item in new:
            if item.customer_id is None:
                item.customer_id = ids[item.customer_external_id]

    result.products_created += _products_attach(new, now=now)

    new.sort(key=lambda i: i.external_id)
    inserted = _insert_orders_generic(new, now=now)
    raced = []
    for item in new:
        if item.external_id in inserted:
            result.created.append(item.external_id)
            result.order_ids[item.external_id] = inserted[item.external_id]
        else:
            raced.append(item)
    if raced:
        # Another batch inserted these ids between our read and our insert; it has committed (ON CONFLICT
        # waited for it), so a fresh read sees its rows.
        logger.info("orders_ingest lost %d insert races", len(raced))
        again = _existing_orders([i.external_id for i in raced])
        for item in raced:
            _classify_existing(item, again[item.external_id], result)


def _existing_orders(external_ids: list[str]) -> dict[str, tuple[str, int, int]]:
    return {
        row[0]: row[1:]
        for row in rows_where_in(
            Order, "external_id", external_ids, ["external_id", "fingerprint", "customer_id", "id"]
        )
    }


def _classify_existing(item: _Item, existing: tuple[str, int, int], result: OrdersIngestResult) -> None:
    fingerprint, customer_id, pk = existing
    if fingerprint == item.fingerprint and customer_id == item.customer_id:
        result.unchanged.append(item.external_id)
        result.order_ids[item.external_id] = pk
    else:
        result.errors.append(_conflict(item))


def _resolve_customers(items: list[_Item], result: OrdersIngestResult) -> list[_Item]:
    """Fill `customer_id` where the customer exists; an unknown customer_id is an error, an unknown
    customer_external_id is left for `_customers_create`."""
    by_id = {i.customer_id for i in items if i.customer_id is not None}
    known_ids = {row[0] for row in rows_where_in(Customer, "id", list(by_id), ["id"])}
    external = {i.customer_external_id for i in items if i.customer_id is None}
    found: dict[str, int] = {}
    if external:
        found = dict(rows_where_in(Customer, "external_id", list(external), ["external_id", "id"]))
        missing = external - found.keys()
        if missing:
            # A customer merged into another keeps being found by its old external id through the identity.
            found.update(
                (value, customer_id)
                for kind, value, customer_id in rows_where_in(
                    CustomerIdentity, "value", list(missing), ["kind", "value", "customer_id"]
                )
                if kind == IdentityKind.EXTERNAL_ID
            )
    kept = []
    for item in items:
        if item.customer_id is not None:
            if item.customer_id not in known_ids:
                result.errors.append(_unknown_customer(item))
                continue
        elif item.customer_external_id in found:
            item.customer_id = found[item.customer_external_id]
        kept.append(item)
    return kept


def _customers_create(wanted: dict[str, str], *, now: datetime, source: str) -> tuple[dict[str, int], int]:
    """Create a customer (with its external-id identity) for each unknown external id; returns the ids of
    all of them and how many this call created. The channel of the first order becomes the acquisition
    channel."""
    keys = sorted(wanted)
    stubs = [
        Customer(external_id=k, acquisition_channel=wanted[k], created_at=now, updated_at=now) for k in keys
    ]
    mine = dict(insert_new_rows(Customer, stubs, conflict=["external_id"], returning=["external_id", "id"]))
    ids = dict(mine)
    if len(ids) < len(keys):
        ids.update(
            rows_where_in(Customer, "external_id", [k for k in keys if k not in ids], ["external_id", "id"])
        )
    if mine:
        insert_new_rows(
            CustomerIdentity,
            [
                CustomerIdentity(
                    customer_id=mine[k], kind=IdentityKind.EXTERNAL_ID, value=k, source=source, created_at=now
                )
                for k in keys
                if k in mine
            ],
            conflict=["kind", "value"],
            returning=["id"],
        )
        history_copy_rows(
            Customer, list(mine.values()), reason=f"created by order ingest ({source})", when=now
        )
    return ids, len(mine)


def _products_attach(items: list[_Item], *, now: datetime) -> int:
    """Point lines at their product by SKU, creating products that do not exist yet. An existing product
    keeps its catalogue name and price: an order line carries a sale price, not the list price."""
    first_line: dict[str, tuple[_Line, str]] = {}
    for item in items:
        for line in item.lines:
            if line.sku and line.sku not in first_line:
                first_line[line.sku] = (line, item.currency)
    if not first_line:
        return 0
    ids = dict(rows_where_in(Product, "sku", list(first_line), ["sku", "id"]))
    missing = sorted(set(first_line) - ids.keys())
    created = 0
    if missing:
        products = []
        for sku in missing:
            line, currency = first_line[sku]
            products.append(
                Product(
                    sku=sku,
                    name=line.name or sku,
                    category=line.category,
                    price=line.unit_price,
                    currency=currency,
                    created_at=now,
                )
            )
        mine = insert_new_rows(Product, products, conflict=["sku"], returning=["sku", "id"])
        created = len(mine)
        ids.update(mine)
        if len(ids) < len(first_line):
            ids.update(rows_where_in(Product, "sku", missing, ["sku", "id"]))
    for item in items:
        for line in item.lines:
            if line.sku:
                line.product_id = ids[line.sku]
    return created


def _order_event_properties(item: _Item) -> dict:
    return {
        "order_external_id": item.external_id,
        "total": str(item.total),
        "currency": item.currency,
        "channel": item.channel,
    }


def _insert_orders_generic(items: list[_Item], *, now: datetime) -> dict[str, int]:
    """The portable path (SQLite for `make run`): one multi-row INSERT per table."""
    orders = [
        Order(
            external_id=i.external_id,
            customer_id=i.customer_id,
            channel=i.channel,
            store=i.store,
            placed_at=i.placed_at,
            currency=i.currency,
            total=i.total,
            refunded_amount=i.total if i.refunded else Decimal(0),
            status=i.status,
            fingerprint=i.fingerprint,
            created_at=now,
        )
        for i in items
    ]
    inserted = dict(insert_new_rows(Order, orders, conflict=["external_id"], returning=["external_id", "id"]))
    mine = [i for i in items if i.external_id in inserted]
    OrderLine.objects.bulk_create(
        [
            OrderLine(
                order_id=inserted[i.external_id],
                line_no=n,
                product_id=ln.product_id,
                sku=ln.sku,
                name=ln.name,
                category=ln.category,
                quantity=ln.quantity,
                unit_price=ln.unit_price,
                line_total=ln.line_total,
                refunded_quantity=ln.quantity if i.refunded else 0,
            )
            for i in mine
            for n, ln in enumerate(i.lines, start=1)
        ],
        batch_size=2000,
    )
    events_append(
        events=[
            NewEvent(
                type=kind,
                customer_id=i.customer_id,
                occurred_at=i.placed_at,
                properties=_order_event_properties(i),
                channel=i.channel,
            )
            for i in mine
            for kind in ((ORDER_PLACED, ORDER_REFUNDED) if i.refunded else (ORDER_PLACED,))
        ],
        now=now,
    )
    return inserted
