"""The PostgreSQL path of `orders_ingest`: a whole batch in a fixed handful of statements.

    orders, lines ──text COPY──▶ crm_ingest_order, crm_ingest_line (temporary)
    statement 1: customers, their external-id identities and history rows, products (INSERT … SELECT)
    statement 2: orders, lines and events (INSERT … SELECT … RETURNING), and what was already there

Nothing is built per row in Python but the COPY text, which `render_copy` makes while the batch is
prepared (in the CSV import's reader thread, so it overlaps the database's work on the previous batch).

Why two statements and not one: a customer or product that another transaction inserted while ours waited
on its key (ON CONFLICT DO NOTHING) is not visible to the statement that waited, only to the next one.
So statement 1 creates what is missing and statement 2 reads every customer and product back by its key.
Lock order is the one every writer of these tables keeps: customers and products by their unique key,
then orders by external id, so two imports wait for each other instead of deadlocking (statement 2's
KEY SHARE locks, below, go by SKU and customer id, in order).

Foreign keys: the two statements check every reference they write themselves. A customer or product is
read, and locked FOR KEY SHARE as PostgreSQL's own check would lock it, in the statement that writes the
rows pointing at it (an order whose customer went away meanwhile is not written); identities and order
lines point at rows the same statement inserted. So when the database role may, the foreign-key
triggers, which would check each row again at commit (one query per row and constraint, a large part of
PostgreSQL's time for an import: see BENCHMARKS.md, order CSV import), are off for these two statements
only (`session_replication_role = replica`, local to the transaction; superuser, or on PostgreSQL 15+
`GRANT SET ON PARAMETER session_replication_role TO <role>`). The constraints stay, and every other
write is checked by them. That setting also silences ordinary triggers; the tables written here have
none, and a test fails if one appears.

Runs inside the caller's transaction (the temporary tables go with it). `orders.py` turns the rows that
come back into the result (created, unchanged, conflict, unknown customer)."""

from __future__ import annotations

from datetime import datetime
from functools import cache

from django.db import connection

from crm.db import FOREIGN_KEY_TRIGGERS_ON_SQL, foreign_key_triggers_off_sql
from crm.models import Customer, IdentityKind

_STAGING = """
SET LOCAL jit = off;
CREATE TEMP TABLE IF NOT EXISTS crm_ingest_order (
    pos integer, external_id text, customer_id bigint, customer_external_id text, channel text, store text,
    placed_at timestamptz, currency text, total numeric(14, 2), refunded_amount numeric(14, 2), status text,
    fingerprint text,
    -- filled by statement 1: the customer found, and the order already stored under this id
    resolved_id bigint, stored_fingerprint text, stored_customer_id bigint, stored_id bigint
) ON COMMIT DROP;
CREATE TEMP TABLE IF NOT EXISTS crm_ingest_line (
    order_external_id text, line_no integer, sku text, name text, category text, quantity integer,
    unit_price numeric(12, 2), line_total numeric(14, 2), refunded_quantity integer
) ON COMMIT DROP;
TRUNCATE crm_ingest_order, crm_ingest_line;
"""
# (jit off: the planner's estimates over freshly filled temporary tables can cross jit_above_cost, and
# compiling costs more than these statements take to run.)

_ORDER_COLUMNS = (
    "pos, external_id, customer_id, customer_external_id, channel, store, placed_at, currency, total, "
    "refunded_amount, status, fingerprint"
)
_LINE_COLUMNS = (
    "order_external_id, line_no, sku, name, category, quantity, unit_price, line_total, refunded_quantity"
)

# Every lookup of a stored row is a correlated subquery on a unique index: one index probe per staged row,
# whatever the size of the table. Written as joins, the planner hashes the whole of crm_customer or
# crm_order for every batch (it cannot know how few rows a freshly filled temporary table holds), which
# costs more the bigger the tables grow.
_LOOKUP_CUSTOMER = """
    CASE WHEN s.customer_id IS NOT NULL
         THEN (SELECT k.id FROM crm_customer k WHERE k.id = s.customer_id)
         ELSE COALESCE(
             (SELECT c.id FROM crm_customer c WHERE c.external_id = s.customer_external_id),
             (SELECT i.customer_id FROM crm_customeridentity i
              WHERE i.kind = %(external_id_kind)s AND i.value = s.customer_external_id))
    END"""

# Statement 1: look every order and customer up once (kept in the staging table for statement 2), and
# create what is missing. Only orders not stored yet get a customer or a product: a repeat of a stored
# order creates nothing (it is unchanged, or a conflict, whatever its customer id says). A customer merged
# into another is found by its old external id through the identity, as `customer_upsert` left it.
_CREATE_SQL = """
WITH looked AS (
    UPDATE crm_ingest_order s
    SET resolved_id = {lookup_customer},
        (stored_fingerprint, stored_customer_id, stored_id) = (
            SELECT o.fingerprint, o.customer_id, o.id FROM crm_order o WHERE o.external_id = s.external_id
        )
    RETURNING s.pos, s.external_id, s.customer_id, s.customer_external_id, s.channel, s.currency,
              s.resolved_id, s.stored_id
), new_orders AS MATERIALIZED (
    SELECT * FROM looked WHERE stored_id IS NULL
), wanted AS MATERIALIZED (
    SELECT DISTINCT ON (customer_external_id) customer_external_id AS external_id, channel
    FROM new_orders
    WHERE customer_id IS NULL AND resolved_id IS NULL
    ORDER BY customer_external_id, pos
), customers AS (
    INSERT INTO crm_customer ({customer_columns})
    SELECT {customer_values} FROM wanted ORDER BY external_id
    ON CONFLICT (external_id) DO NOTHING
    RETURNING *
), identities AS (
    INSERT INTO crm_customeridentity (customer_id, kind, value, source, created_at)
    SELECT id, %(external_id_kind)s, external_id, %(source)s, %(now)s FROM customers ORDER BY external_id
    ON CONFLICT (kind, value) DO NOTHING
), history AS (
    INSERT INTO {history_table} ({history_columns})
    SELECT {history_values} FROM customers
), missing_skus AS MATERIALIZED (
    SELECT d.sku
    FROM (SELECT DISTINCT sku FROM crm_ingest_line WHERE sku <> '') d
    WHERE (SELECT p.id FROM crm_product p WHERE p.sku = d.sku) IS NULL
), new_products AS (
    -- A new product takes its name, category and price from its first line in the batch (most batches
    -- have none: the lines are only sorted when some SKU is new).
    INSERT INTO crm_product (sku, name, category, price, currency, created_at)
    SELECT sku, COALESCE(NULLIF(name, ''), sku), category, unit_price, currency, %(now)s
    FROM (
        SELECT DISTINCT ON (l.sku) l.sku, l.name, l.category, l.unit_price, n.currency
        FROM crm_ingest_line l JOIN new_orders n ON n.external_id = l.order_external_id
        WHERE l.sku IN (SELECT sku FROM missing_skus)
        ORDER BY l.sku, n.pos, l.line_no
    ) first_line
    ORDER BY sku
    ON CONFLICT (sku) DO NOTHING
    RETURNING 1
)
SELECT (SELECT count(*) FROM wanted), (SELECT count(*) FROM customers), (SELECT count(*) FROM new_products)
"""

# Statement 2. A customer not found by statement 1 is looked up again: statement 1 made it, or another
# transaction that committed meanwhile did (a row that ON CONFLICT waited for is visible only to the next
# statement). Products are read back by SKU for the same reason. Only the orders this statement inserts
# get lines and events; the others come back with what was stored under their id, for orders.py to call
# unchanged or conflict (an order stored since statement 1 looked is not inserted either: ON CONFLICT).
_INSERT_SQL = f"""
WITH products AS MATERIALIZED (
    SELECT d.sku, p.id
    FROM (SELECT DISTINCT sku FROM crm_ingest_line WHERE sku <> '' ORDER BY sku) d
    LEFT JOIN LATERAL (SELECT p.id FROM crm_product p WHERE p.sku = d.sku FOR KEY SHARE) p ON TRUE
), new_orders AS MATERIALIZED (
    SELECT s.*, COALESCE(s.resolved_id, {_LOOKUP_CUSTOMER}) AS customer
    FROM crm_ingest_order s
    WHERE s.stored_id IS NULL
), customers AS MATERIALIZED (
    SELECT k.id
    FROM (SELECT DISTINCT customer FROM new_orders WHERE customer IS NOT NULL ORDER BY customer) c
    CROSS JOIN LATERAL (SELECT k.id FROM crm_customer k WHERE k.id = c.customer FOR KEY SHARE) k
), ins AS (
    INSERT INTO crm_order (external_id, customer_id, channel, store, placed_at, currency, total,
                           refunded_amount, status, fingerprint, created_at)
    SELECT n.external_id, n.customer, n.channel, n.store, n.placed_at, n.currency, n.total,
           n.refunded_amount, n.status, n.fingerprint, %(now)s
    FROM new_orders n JOIN customers k ON k.id = n.customer
    ORDER BY n.external_id
    ON CONFLICT (external_id) DO NOTHING
    RETURNING id, external_id, customer_id, placed_at, total, currency, channel, status
), lines AS (
    INSERT INTO crm_orderline (order_id, line_no, product_id, sku, name, category, quantity, unit_price,
                               line_total, refunded_quantity)
    SELECT ins.id, l.line_no, p.id, l.sku, l.name, l.category, l.quantity, l.unit_price, l.line_total,
           l.refunded_quantity
    FROM crm_ingest_line l
    JOIN ins ON ins.external_id = l.order_external_id
    LEFT JOIN products p ON p.sku = l.sku
), events AS (
    INSERT INTO crm_event (customer_id, type, properties, occurred_at, channel, received_at)
    SELECT ins.customer_id, kind.type,
           jsonb_build_object('order_external_id', ins.external_id, 'total', ins.total::text,
                              'currency', ins.currency, 'channel', ins.channel),
           ins.placed_at, ins.channel, %(now)s
    FROM ins JOIN (VALUES ('order_placed', false), ('order_refunded', true)) AS kind(type, refunds)
         ON NOT kind.refunds OR ins.status = 'refunded'
)
SELECT s.pos, CASE WHEN s.stored_id IS NULL THEN k.id ELSE s.resolved_id END, ins.id, s.stored_id,
       s.stored_customer_id, s.stored_fingerprint = s.fingerprint
FROM crm_ingest_order s
LEFT JOIN new_orders n ON n.external_id = s.external_id
LEFT JOIN customers k ON k.id = n.customer
LEFT JOIN ins ON ins.external_id = s.external_id
ORDER BY s.pos
"""

# COPY text format: backslash, tab, newline and carriage return are escaped; \N is NULL.
_ESCAPE = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
_NULL = "\\N"


def render_copy(items) -> tuple[str, str]:
    """The COPY text of a batch's orders and lines (pure Python: safe in another thread). `items` are
    orders.py's validated `_Item`s."""
    orders, lines, nulls = _render(items, str)
    # Shop exports hardly ever hold a tab, newline or backslash in a cell, so the text is made without
    # escaping and checked as a whole (any of them in a value adds to a count); only a batch that needs it
    # is made again with escaping.
    line_count = sum(len(item.lines) for item in items)
    if (
        orders.count("\\") != nulls
        or "\\" in lines
        or "\r" in orders
        or "\r" in lines
        or orders.count("\n") != len(items)
        or orders.count("\t") != _ORDER_TABS * len(items)
        or lines.count("\n") != line_count
        or lines.count("\t") != _LINE_TABS * line_count
    ):
        orders, lines, _ = _render(items, _escape)
    return orders, lines


_ORDER_TABS = _ORDER_COLUMNS.count(",")
_LINE_TABS = _LINE_COLUMNS.count(",")


def _escape(value: str) -> str:
    return value.translate(_ESCAPE)


def _render(items, text) -> tuple[str, str, int]:
    """(orders, lines, how many \\N were written); `text` is applied to every free-text value."""
    orders, lines = [], []
    add_order, add_line = orders.append, lines.append
    for pos, item in enumerate(items):
        external_id = text(item.external_id)
        refunded = item.status == "refunded"
        customer_external_id = item.customer_external_id
        add_order(
            f"{pos}\t{external_id}\t{_NULL if item.customer_id is None else item.customer_id}\t"
            f"{_NULL if customer_external_id is None else text(customer_external_id)}\t"
            f"{item.channel}\t{text(item.store)}\t{item.placed_at_utc or item.placed_at.isoformat()}\t"
            f"{item.currency}\t{item.total}\t{item.total if refunded else '0'}\t{item.status}\t"
            f"{item.fingerprint}\n"
        )
        for n, line in enumerate(item.lines, start=1):
            add_line(
                f"{external_id}\t{n}\t{text(line.sku)}\t{text(line.name)}\t{text(line.category)}\t"
                f"{line.quantity}\t{line.unit_price}\t{line.line_total}\t{line.quantity if refunded else 0}\n"
            )
    nulls = sum((item.customer_id is None) + (item.customer_external_id is None) for item in items)
    return "".join(orders), "".join(lines), nulls


@cache
def _create_sql() -> str:
    """Statement 1 with the customer and history columns spelled out from the models, so a field added to
    Customer is written (with its default) without touching this module."""
    quote = connection.ops.quote_name
    fields = [f for f in Customer._meta.concrete_fields if not f.primary_key]
    values = {"external_id": "external_id", "acquisition_channel": "channel"}
    customer_values = []
    for f in fields:
        if f.name in values:
            customer_values.append(values[f.name])
        elif f.name in ("created_at", "updated_at"):
            customer_values.append("%(now)s")
        else:
            customer_values.append(f"%(default_{f.attname})s")
    history = Customer.history.model
    history_columns, history_values = [], []
    for f in history._meta.concrete_fields:
        if f.name == "history_id":
            continue
        history_columns.append(quote(f.column))
        special = {
            "history_date": "%(now)s",
            "history_change_reason": "%(history_reason)s",
            "history_type": "'+'",
            "history_user": "NULL",
        }
        if f.name in special:
            history_values.append(special[f.name])
        else:
            history_values.append(quote(Customer._meta.get_field(f.name).column))
    return _CREATE_SQL.format(
        lookup_customer=_LOOKUP_CUSTOMER,
        customer_columns=", ".join(quote(f.column) for f in fields),
        customer_values=", ".join(customer_values),
        history_table=quote(history._meta.db_table),
        history_columns=", ".join(history_columns),
        history_values=", ".join(history_values),
    )


def _customer_defaults() -> dict:
    """What a customer created with just an external id gets in every other column (as `Customer()`)."""
    defaults = {}
    for f in Customer._meta.concrete_fields:
        if f.primary_key or f.name in ("external_id", "acquisition_channel", "created_at", "updated_at"):
            continue
        defaults[f"default_{f.attname}"] = f.get_db_prep_save(f.get_default(), connection)
    return defaults


def store_batch(
    orders_copy: str, lines_copy: str, *, now: datetime, source: str
) -> tuple[int, int, int, list[tuple]]:
    """Write one batch; returns (customers wanted, customers created, products created, one row per order:
    (its position in the batch, its customer's id, the id it was inserted under, then the id and customer
    id of the order already stored under its external id and whether it has the same fingerprint)).
    Inserted and stored are both None for an order lost to a concurrent insert, or whose customer went
    away between the statements (the customer id is then None as well)."""
    params = {"now": now, "source": source[:64], "external_id_kind": IdentityKind.EXTERNAL_ID.value}
    with connection.cursor() as cursor:
        cursor.execute(_staging_sql())
        triggers_off = cursor.fetchone() is not None  # the first statement's row, if it turned them off
        raw = cursor.cursor  # the psycopg cursor: Django's wrapper has no COPY
        with raw.copy(f"COPY crm_ingest_order ({_ORDER_COLUMNS}) FROM STDIN") as copy:
            copy.write(orders_copy)
        if lines_copy:
            with raw.copy(f"COPY crm_ingest_line ({_LINE_COLUMNS}) FROM STDIN") as copy:
                copy.write(lines_copy)
        cursor.execute(
            _create_sql(),
            {
                **params,
                **_customer_defaults(),
                "history_reason": f"created by order ingest ({source})"[:100],
            },
        )
        wanted, customers_created, products_created = cursor.fetchone()
        cursor.execute(_INSERT_SQL, params)
        rows = cursor.fetchall()
        if triggers_off:
            cursor.execute(FOREIGN_KEY_TRIGGERS_ON_SQL)
        return wanted, customers_created, products_created, rows


def _staging_sql() -> str:
    """The foreign-key triggers off (when allowed), then the staging tables: one round trip."""
    return foreign_key_triggers_off_sql(connection) + ";" + _STAGING
