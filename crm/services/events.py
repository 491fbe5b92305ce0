"""Ingestion from outside systems: behaviour events in bulk, and the customer and order writes of the API
made all-or-nothing per item.

Events are the hot path (thousands a second over HTTP), so they are written set-based: one query finds
every customer a batch's identifiers point at, new customers and identifiers are bulk-inserted, and the
events go in with one INSERT … ON CONFLICT (external_id) WHERE external_id IS NOT NULL DO NOTHING.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import IntegrityError, OperationalError, connection, transaction
from django.db.models import CharField, Q, Value
from django.utils import timezone
from django.utils.translation import gettext as _

from crm.clock import EARLIEST_DATE, is_before_earliest
from crm.db import server_binding_cursor
from crm.models import Channel, Customer, CustomerIdentity, CustomerTag, Event, IdentityKind, Tag
from crm.services.bulk_sql import history_copy_rows, rows_where_in
from crm.services.consent import consent_set
from crm.services.customers import MergeRefused, UpsertResult, customer_upsert
from crm.services.identities import normalise_identity
from crm.services.orders import OrderInput, OrdersIngestResult, RowError, orders_ingest
from crm.services.tags import TagRefused, customer_tag_add

logger = logging.getLogger(__name__)

MAX_PROPERTIES_BYTES = 16 * 1024
MAX_EVENT_TYPE_LENGTH = Event._meta.get_field("type").max_length
MAX_EVENT_EXTERNAL_ID_LENGTH = Event._meta.get_field("external_id").max_length
MAX_CUSTOMER_EXTERNAL_ID_LENGTH = Customer._meta.get_field("external_id").max_length
MAX_CUSTOMER_PHONE_LENGTH = Customer._meta.get_field("phone").max_length
# A batch that loses a race (an identifier or event id inserted by a concurrent request, a customer
# merged away under it, a deadlock) is rolled back whole and resolved again from fresh reads.
ATTEMPTS = 3
_RETRYABLE_SQLSTATES = {"40001", "40P01"}  # serialization failure, deadlock detected

EXTERNAL_ID = IdentityKind.EXTERNAL_ID.value
_CHANNELS = frozenset(Channel.values)


@dataclass(frozen=True, slots=True)
class CustomerRef:
    """Who an incoming record is about: an existing customer's `id`, or identifiers (the customer's
    `external_id` and/or other identities) that find the customer or create one."""

    id: int | None = None
    external_id: str | None = None
    identities: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class EventInput:
    type: str
    occurred_at: datetime  # timezone-aware
    customer: CustomerRef
    properties: dict = field(default_factory=dict)
    channel: str = ""
    external_id: str | None = None  # the sender's id: a repeat is skipped


@dataclass
class EventsIngestResult:
    inserted: int = 0
    duplicates: list[int] = field(default_factory=list)  # positions in `items` skipped as repeats
    errors: list[RowError] = field(default_factory=list)  # positions in `items`
    customers_created: int = 0
    customers_merged: int = 0


class _Rejected(Exception):
    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field, self.message = field, message


@dataclass(slots=True)
class _Row:
    index: int
    item: EventInput
    properties: str  # JSON text, as it goes into the jsonb column
    keys: tuple[tuple[str, str], ...]  # normalised identifiers of the customer


# --- Behaviour events -------------------------------------------------------------------------------


def events_ingest(*, items: Sequence[EventInput], source: str = "api") -> EventsIngestResult:
    """Store a batch of behaviour events; every item is stored whole or reported, never half.

    An item whose `external_id` is already stored (or repeats an earlier item of the batch) is skipped and
    reported as a duplicate. Identifiers nobody has yet create a customer (a prospect); items sharing an
    unknown identifier, directly or through each other, create one prospect between them. New identifiers
    arriving with a known one are attached to its customer. Identifiers of two different customers merge
    them (through customer_upsert, the one merge path)."""
    now = timezone.now()
    result = EventsIngestResult()
    rows: list[_Row] = []
    seen: set[str] = set()
    for index, item in enumerate(items):
        try:
            _check(item)
            properties = _properties_json(item.properties)
            keys = _keys_of(item.customer)
        except _Rejected as rejected:
            result.errors.append(RowError(index=index, field=rejected.field, message=rejected.message))
            continue
        if item.external_id is not None:
            if item.external_id in seen:
                result.duplicates.append(index)
                continue
            seen.add(item.external_id)
        rows.append(_Row(index=index, item=item, properties=properties, keys=keys))

    if rows:
        for attempt in range(ATTEMPTS):
            try:
                with transaction.atomic():
                    stored = _ingest(rows=rows, now=now, source=source)
                break
            except (IntegrityError, OperationalError) as exc:
                if attempt == ATTEMPTS - 1 or not _is_race(exc):
                    raise
                logger.info("events_ingest lost a race; retrying the batch", extra={"attempt": attempt + 1})
        result.inserted = stored.inserted
        result.duplicates += stored.duplicates
        result.errors += stored.errors
        result.customers_created = stored.customers_created
        result.customers_merged = stored.customers_merged
    result.duplicates.sort()
    result.errors.sort(key=lambda e: e.index)
    return result


def _is_race(exc: Exception) -> bool:
    if isinstance(exc, IntegrityError):
        return True
    return getattr(exc.__cause__, "sqlstate", None) in _RETRYABLE_SQLSTATES


def _check(item: EventInput) -> None:
    # The API validates shape already; these guard the columns for any other caller.
    if not item.type or len(item.type) > MAX_EVENT_TYPE_LENGTH:
        raise _Rejected(
            "type", _("Give an event type of at most %(n)d characters.") % {"n": MAX_EVENT_TYPE_LENGTH}
        )
    if item.channel and item.channel not in _CHANNELS:
        raise _Rejected("channel", _("Unknown channel %(value)s.") % {"value": item.channel})
    if item.external_id is not None and not 0 < len(item.external_id) <= MAX_EVENT_EXTERNAL_ID_LENGTH:
        raise _Rejected(
            "external_id", _("Give an id of 1 to %(n)d characters.") % {"n": MAX_EVENT_EXTERNAL_ID_LENGTH}
        )
    if item.occurred_at.tzinfo is None:
        raise _Rejected("occurred_at", _("Give a time zone offset."))
    if is_before_earliest(item.occurred_at):
        raise _Rejected(
            "occurred_at",
            _("The event time %(value)s is before %(earliest)s: give a time from %(earliest)s on.")
            % {"value": item.occurred_at.isoformat(), "earliest": EARLIEST_DATE.isoformat()},
        )


def _properties_json(properties) -> str:
    if not isinstance(properties, dict):
        raise _Rejected("properties", _("Expected a JSON object."))
    try:
        text = json.dumps(properties, ensure_ascii=False, separators=(",", ":"))
        size = len(text.encode())
    except (TypeError, ValueError):  # UnicodeEncodeError (a lone surrogate) is a ValueError
        raise _Rejected("properties", _("Properties must be plain JSON text, numbers, lists and objects."))
    if size > MAX_PROPERTIES_BYTES:
        raise _Rejected(
            "properties",
            _("Properties are %(size)d bytes; at most %(limit)d are allowed.")
            % {"size": size, "limit": MAX_PROPERTIES_BYTES},
        )
    if "\\u0000" in text:  # json.dumps escapes NUL this way; jsonb refuses it
        raise _Rejected("properties", _("Null characters are not allowed."))
    return text


def _keys_of(ref: CustomerRef) -> tuple[tuple[str, str], ...]:
    """The normalised identifiers of a ref, external id first; () for a ref by id."""
    if ref.id is not None:
        if ref.external_id or ref.identities:
            raise _Rejected("customer", _("Give either the customer's id or identifiers, not both."))
        return ()
    keys: dict[tuple[str, str], None] = {}
    if ref.external_id is not None:
        if len(ref.external_id.strip()) > MAX_CUSTOMER_EXTERNAL_ID_LENGTH:
            raise _Rejected(
                "customer.external_id",
                _("Give an id of at most %(n)d characters.") % {"n": MAX_CUSTOMER_EXTERNAL_ID_LENGTH},
            )
        keys[_normalised(EXTERNAL_ID, ref.external_id, "customer.external_id")] = None
    for position, (kind, value) in enumerate(ref.identities):
        keys[_normalised(kind, value, f"customer.identities[{position}]")] = None
    if not keys:
        raise _Rejected("customer", _("Give the customer's id, external_id or identities."))
    return tuple(keys)


def _normalised(kind: str, value: str, path: str) -> tuple[str, str]:
    try:
        return normalise_identity(kind, value)
    except ValidationError as exc:
        raise _Rejected(path, " ".join(exc.messages))


def _ingest(*, rows: list[_Row], now: datetime, source: str) -> EventsIngestResult:
    """The database part of events_ingest, in its transaction: it may run again after a lost race, so
    it builds its result afresh."""
    outcome = EventsIngestResult()
    # Repeats of stored events are dropped before any customer work: a retried batch creates nothing.
    stored = {
        external_id
        for (external_id,) in rows_where_in(
            Event,
            "external_id",
            [r.item.external_id for r in rows if r.item.external_id is not None],
            ["external_id"],
        )
    }
    if stored:
        outcome.duplicates += [r.index for r in rows if r.item.external_id in stored]
        rows = [r for r in rows if r.item.external_id not in stored]

    customer_ids = _customers_for(rows=rows, now=now, source=source, outcome=outcome)
    ready = [(r, customer_ids[r.index]) for r in rows if r.index in customer_ids]
    if not ready:
        return outcome
    outcome.inserted, inserted_ids = _insert_events(ready, now=now)
    # A concurrent request may have stored the same event id between our read and our insert.
    outcome.duplicates += [
        r.index
        for r, _c in ready
        if r.item.external_id is not None and r.item.external_id not in inserted_ids
    ]
    return outcome


# --- Data access: plain SQL over arrays on PostgreSQL, the ORM elsewhere ----------------------------------
#
# Django's cursor binds parameters client-side: psycopg quotes every element of a 1,000-element list in
# Python, a large share of a request (see BENCHMARKS.md, HTTP bulk event ingestion).
# crm.db.server_binding_cursor (same connection, so the same transaction) sends them apart from the statement,
# in binary format (%b), dumped in C. The ORM path serves the embedded SQLite set-up; tests run it on
# PostgreSQL too by turning PG_ARRAYS off.
PG_ARRAYS = True
# Marks rows of the Customer half of the owners query; no identity kind can start with "#".
_CUSTOMER_ROW = "#customer"


def _pg_arrays() -> bool:
    return PG_ARRAYS and connection.vendor == "postgresql"


def _owner_rows(*, values: list[str], external_ids: list[str], ids: list[int]) -> list[tuple[str, str, int]]:
    """(kind, value, customer_id) of the identities with one of `values`, plus (_CUSTOMER_ROW,
    external_id, id) of the customers with one of `external_ids` or `ids`."""
    if _pg_arrays():
        with server_binding_cursor() as cursor:
            cursor.execute(
                f"""
                SELECT kind, value, customer_id FROM {CustomerIdentity._meta.db_table} WHERE value = ANY(%b::text[])
                UNION ALL
                SELECT %b::text, external_id, id FROM {Customer._meta.db_table}
                WHERE external_id = ANY(%b::text[]) OR id = ANY(%b::bigint[])
                """,
                [values, _CUSTOMER_ROW, external_ids, ids],
            )
            return cursor.fetchall()
    identities = CustomerIdentity.objects.filter(value__in=values).values_list("kind", "value", "customer_id")
    customers = (
        Customer.objects.filter(Q(external_id__in=external_ids) | Q(id__in=ids))
        .annotate(marker=Value(_CUSTOMER_ROW, output_field=CharField()))
        .order_by()
        .values_list("marker", "external_id", "id")
    )
    return list(identities.union(customers, all=True))


def _owners(*, keys: set[tuple[str, str]], ids: set[int]) -> tuple[dict[tuple[str, str], set[int]], set[int]]:
    """Who each identifier belongs to, and which of `ids` exist, in one query. A customer's external id
    counts whether it is stored as an identity or only in the column (customers made in the admin)."""
    rows = _owner_rows(
        values=list({value for _kind, value in keys}),
        external_ids=[value for kind, value in keys if kind == EXTERNAL_ID],
        ids=list(ids),
    )
    owners: dict[tuple[str, str], set[int]] = {}
    existing: set[int] = set()
    for kind, value, customer_id in rows:
        if kind == _CUSTOMER_ROW:
            existing.add(customer_id)
            kind = EXTERNAL_ID
        if (kind, value) in keys:
            owners.setdefault((kind, value), set()).add(customer_id)
    return owners, existing


def customer_ids_find(*, refs: Sequence[CustomerRef]) -> list[int | None]:
    """For each ref, the one existing customer it points at when recording it would change nothing about
    customers (no identifier to attach, nothing to merge or create); None otherwise. One query."""
    keys_of: list[tuple[tuple[str, str], ...] | None] = []
    for ref in refs:
        try:
            keys_of.append(_keys_of(ref))
        except _Rejected:
            keys_of.append(None)
    owners, existing = _owners(
        keys={k for keys in keys_of if keys for k in keys}, ids={r.id for r in refs if r.id is not None}
    )
    found: list[int | None] = []
    for ref, keys in zip(refs, keys_of, strict=True):
        if ref.id is not None:
            found.append(ref.id if keys == () and ref.id in existing else None)
        elif keys and all(k in owners for k in keys):
            owner_ids = set().union(*(owners[k] for k in keys))
            found.append(owner_ids.pop() if len(owner_ids) == 1 else None)
        else:
            found.append(None)
    return found


def _customers_for(
    *, rows: list[_Row], now: datetime, source: str, outcome: EventsIngestResult
) -> dict[int, int]:
    """The customer id of every row (by row index); rows whose customer cannot be found are reported."""
    keys = {k for r in rows for k in r.keys}
    ids = {r.item.customer.id for r in rows if r.item.customer.id is not None}
    owners, existing = _owners(keys=keys, ids=ids)

    found: dict[int, int] = {}
    for r in rows:
        if r.item.customer.id is not None:
            if r.item.customer.id in existing:
                found[r.index] = r.item.customer.id
            else:
                outcome.errors.append(
                    RowError(
                        index=r.index,
                        field="customer.id",
                        message=_("No customer with id %(id)s.") % {"id": r.item.customer.id},
                    )
                )

    # Rows sharing an identifier, directly or through other rows, are about one person: group the
    # identifiers into connected sets (union-find), then settle each set once.
    parent: dict[tuple[str, str], tuple[str, str]] = {}

    def root(key):
        while parent.setdefault(key, key) != key:
            parent[key] = parent[parent[key]]
            key = parent[key]
        return key

    for r in rows:
        for key in r.keys[1:]:
            parent[root(key)] = root(r.keys[0])
    groups: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for key in keys:
        groups.setdefault(root(key), []).append(key)
    first_row_of: dict[tuple[str, str], _Row] = {}
    for r in rows:
        if r.keys:
            first_row_of.setdefault(root(r.keys[0]), r)

    customer_of_group: dict[tuple[str, str], int] = {}
    refusals: dict[tuple[str, str], str] = {}
    prospects: dict[tuple[str, str], Customer] = {}
    new_identities: list[tuple[tuple[str, str], tuple[str, str]]] = []  # (group, identifier)
    for group, members in groups.items():
        members.sort()  # deterministic: which of several emails a prospect gets as its profile email
        owner_ids = set().union(*(owners.get(k, set()) for k in members))
        if len(owner_ids) > 1:
            try:
                customer_of_group[group], merged = _merge_through_upsert(members, source=source)
            except MergeRefused as refused:
                refusals[group] = str(refused)  # its savepoint is rolled back; the batch goes on
                continue
            outcome.customers_merged += merged
            continue
        if owner_ids:
            customer_of_group[group] = next(iter(owner_ids))
        else:
            prospects[group] = _prospect(members, first_row_of[group], now=now)
        new_identities += [(group, k) for k in members if k not in owners]

    if prospects:
        created = _create_with_history(Customer, list(prospects.values()), now=now, source=source)
        customer_of_group.update(zip(prospects, created, strict=True))
        outcome.customers_created = len(created)
    if new_identities:
        # Inserted in key order: two batches adding overlapping identifiers then wait for each other on
        # the unique index instead of deadlocking.
        new_identities.sort(key=lambda pair: pair[1])
        _create_with_history(
            CustomerIdentity,
            [
                CustomerIdentity(
                    customer_id=customer_of_group[group],
                    kind=kind,
                    value=value,
                    source=source,
                    created_at=now,
                )
                for group, (kind, value) in new_identities
            ],
            now=now,
            source=source,
        )
    for r in rows:
        if not r.keys:
            continue
        group = root(r.keys[0])
        if group not in refusals:
            found[r.index] = customer_of_group[group]
            continue
        # The merge its set needed was refused; a row whose own identifiers all name one customer
        # still has a customer, the others are refused.
        own = set().union(*(owners.get(k, set()) for k in r.keys))
        if len(own) == 1 and all(k in owners for k in r.keys):
            found[r.index] = own.pop()
        else:
            outcome.errors.append(RowError(index=r.index, field="customer", message=refusals[group]))
    return found


def _prospect(members: list[tuple[str, str]], first: _Row, *, now: datetime) -> Customer:
    """A customer known only by identifiers seen in behaviour; profile fields are filled from them."""
    values = {kind: value for kind, value in reversed(members)}
    email = values.get(IdentityKind.EMAIL, "")
    try:
        validate_email(email)
    except ValidationError:
        email = ""  # an identifier of kind email need not be deliverable; the profile field must be
    phone = values.get(IdentityKind.PHONE, "")
    return Customer(
        external_id=values.get(EXTERNAL_ID),
        email=email,
        phone=phone if len(phone) <= MAX_CUSTOMER_PHONE_LENGTH else "",
        acquisition_channel=first.item.channel,
        created_at=now,
    )


def _merge_through_upsert(members: list[tuple[str, str]], *, source: str) -> tuple[int, int]:
    external_id = next((value for kind, value in members if kind == EXTERNAL_ID), None)
    result = customer_upsert(
        external_id=external_id,
        identities=[k for k in members if k != (EXTERNAL_ID, external_id)],
        source=source,
    )
    return result.customer.pk, len(result.merged_customer_ids)


def _create_with_history(model, objs: list, *, now: datetime, source: str) -> list[int]:
    """Insert new rows, and the "created" rows django-simple-history keeps for them; return their ids in
    the order of `objs` (which is why this is not insert_new_rows: a prospect has no unique key to be
    found by). On PostgreSQL one INSERT over arrays: through bulk_create, prospects were a large share of
    a request's CPU even at one new device in twenty events (see BENCHMARKS.md, HTTP bulk event
    ingestion)."""
    if _pg_arrays():
        quote = connection.ops.quote_name
        fields = [f for f in model._meta.concrete_fields if not f.primary_key]
        arrays = [[f.get_db_prep_save(f.pre_save(obj, True), connection) for obj in objs] for f in fields]
        with server_binding_cursor() as cursor:
            cursor.execute(
                f"INSERT INTO {quote(model._meta.db_table)} ({', '.join(quote(f.column) for f in fields)}) "
                f"SELECT * FROM unnest({', '.join(f'%b::{f.db_type(connection)}[]' for f in fields)}) "
                "RETURNING id",
                arrays,
            )
            ids = [pk for (pk,) in cursor.fetchall()]
    else:
        ids = [obj.pk for obj in model._default_manager.bulk_create(objs)]
    history_copy_rows(model, ids, reason=source, when=now)
    return ids


def _insert_events(ready: list[tuple[_Row, int]], *, now: datetime) -> tuple[int, set[str]]:
    """Insert the events; return how many went in and the external ids among them."""
    if not _pg_arrays():
        # Without RETURNING from ON CONFLICT, what went in is taken to be everything: exact with SQLite's
        # one writer at a time, since _ingest already dropped the stored repeats.
        Event.objects.bulk_create(
            [
                Event(
                    customer_id=customer_id,
                    type=r.item.type,
                    properties=json.loads(r.properties),
                    occurred_at=r.item.occurred_at,
                    channel=r.item.channel,
                    external_id=r.item.external_id,
                    received_at=now,
                )
                for r, customer_id in ready
            ],
            ignore_conflicts=True,
        )
        return len(ready), {r.item.external_id for r, _c in ready if r.item.external_id is not None}
    # One statement with one array per column: it parses and plans once for the whole batch, and
    # RETURNING tells exactly which events were new, which bulk_create(ignore_conflicts=True) cannot.
    with server_binding_cursor() as cursor:
        cursor.execute(
            f"""
            INSERT INTO {Event._meta.db_table}
                (customer_id, type, properties, occurred_at, channel, external_id, received_at)
            SELECT u.customer_id, u.type, u.properties, u.occurred_at, u.channel, u.external_id, %b
            FROM unnest(%b::bigint[], %b::text[], %b::jsonb[], %b::timestamptz[], %b::text[], %b::text[])
                AS u(customer_id, type, properties, occurred_at, channel, external_id)
            ON CONFLICT (external_id) WHERE external_id IS NOT NULL DO NOTHING
            RETURNING external_id
            """,
            [
                now,
                [customer_id for _r, customer_id in ready],
                [r.item.type for r, _c in ready],
                [r.properties for r, _c in ready],
                [r.item.occurred_at for r, _c in ready],
                [r.item.channel for r, _c in ready],
                [r.item.external_id for r, _c in ready],
            ],
        )
        returned = cursor.fetchall()
    return len(returned), {external_id for (external_id,) in returned if external_id is not None}


# --- Customers and orders arriving through the API: one transaction per item ---------------------------


@dataclass(frozen=True, slots=True)
class ConsentInput:
    channel: str
    status: str
    occurred_at: datetime | None = None
    source: str = ""


def customer_ingest(
    *,
    external_id: str | None = None,
    profile: dict | None = None,
    identities: Sequence[tuple[str, str]] = (),
    consents: Sequence[ConsentInput] = (),
    tags: Sequence[str] = (),
    source: str = "api",
    performed_by=None,
) -> UpsertResult:
    """One customer record from outside: customer_upsert (find, create or merge), then its consents and
    tags, in one transaction, so a record refused half-way (a rule-applied tag) leaves nothing behind.

    Raises ValidationError naming the field at fault."""
    with transaction.atomic():
        try:
            result = customer_upsert(
                external_id=external_id,
                profile=profile,
                identities=list(identities),
                source=source,
                performed_by=performed_by,
            )
        except MergeRefused as refused:
            raise ValidationError(str(refused))
        for consent in consents:
            consent_set(
                customer=result.customer,
                channel=consent.channel,
                status=consent.status,
                occurred_at=consent.occurred_at,
                source=consent.source or source,
                changed_by=performed_by,
            )
        _tags_add(customer=result.customer, names=tags, source=source)
    return result


def _tags_add(*, customer: Customer, names: Sequence[str], source: str) -> None:
    source = source[: CustomerTag._meta.get_field("source").max_length]
    for name in dict.fromkeys(names):
        # get_or_create survives a concurrent request creating the same tag (it re-reads on IntegrityError).
        tag, _created = Tag.objects.get_or_create(name=name)
        if tag.kind != Tag.Kind.MANUAL:
            # Rule tags are recomputed from behaviour; one set by hand would be wiped at the next run.
            message = _("The tag %(name)s is applied by a rule and cannot be set directly.") % {"name": name}
            raise ValidationError({"tags": message})
        try:
            customer_tag_add(customer=customer, tag=tag, source=source)
        except TagRefused:
            raise ValidationError({"tags": _("An erased customer cannot be tagged.")})


def orders_with_customers_ingest(
    *, items: Sequence[tuple[OrderInput, CustomerRef]], source: str = "api"
) -> tuple[OrdersIngestResult, dict[int, int]]:
    """Orders whose customer is given by id or identifiers; returns orders_ingest's result (error indexes
    are positions in `items`) and the customer id of each accepted position.

    Orders of customers that are already known, with nothing new about them, go to orders_ingest in one
    set. The others (a customer to create, identifiers to attach or customers to merge) go one by one,
    each in its own transaction with its customer work, so a refused order leaves no prospect behind."""
    result = OrdersIngestResult()
    customer_of: dict[int, int] = {}
    known = customer_ids_find(refs=[ref for _order, ref in items])
    batch = [position for position, customer_id in enumerate(known) if customer_id is not None]
    if batch:
        part = orders_ingest(
            orders=[replace(items[p][0], customer_id=known[p]) for p in batch], source=source
        )
        _fold(result, part, positions=batch)
        customer_of.update({p: known[p] for p in batch})
    for position, (order, ref) in enumerate(items):
        if known[position] is None:
            part, customer_id = _order_with_customer(order=order, ref=ref, source=source)
            _fold(result, part, positions=[position])
            if customer_id is not None:
                customer_of[position] = customer_id
    rejected = {e.index for e in result.errors}
    result.errors.sort(key=lambda e: e.index)
    return result, {p: c for p, c in customer_of.items() if p not in rejected}


def _order_with_customer(*, order: OrderInput, ref: CustomerRef, source: str):
    with transaction.atomic():
        if ref.id is not None:
            if not Customer.objects.filter(pk=ref.id).exists():
                message = _("No customer with id %(id)s.") % {"id": ref.id}
                return OrdersIngestResult(
                    errors=[RowError(index=0, field="customer.id", message=message)]
                ), None
            customer_id, created = ref.id, False
        else:
            try:
                upsert = customer_upsert(
                    external_id=ref.external_id, identities=list(ref.identities), source=source
                )
            except (ValidationError, MergeRefused) as exc:
                message = " ".join(exc.messages) if isinstance(exc, ValidationError) else str(exc)
                return OrdersIngestResult(errors=[RowError(index=0, field="customer", message=message)]), None
            customer_id, created = upsert.customer.pk, upsert.created
        part = orders_ingest(orders=[replace(order, customer_id=customer_id)], source=source)
        if part.errors:
            transaction.set_rollback(True)  # the order is refused: so is the customer work done for it
            return part, None
    part.customers_created += int(created)
    return part, customer_id


def _fold(result: OrdersIngestResult, part: OrdersIngestResult, *, positions: list[int]) -> None:
    result.created += part.created
    result.unchanged += part.unchanged
    result.customers_created += part.customers_created
    result.errors += [replace(e, index=positions[e.index]) for e in part.errors]
