"""Customer CSV import (`customers_import`): matched by external id in bulk, profiles, identities and
consent written set-based; rows whose identifiers belong to another customer go through
customer_upsert (which merges as the API would). The columns are documented in docs/csv-import.md."""

from __future__ import annotations

import logging
import zoneinfo
from dataclasses import dataclass
from datetime import date, datetime

import psycopg
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import DatabaseError, connection, transaction
from django.utils import timezone
from django.utils.translation import gettext_noop

from crm.clock import business_today
from crm.models import (
    PROFILE_FIELDS,
    Channel,
    Consent,
    ConsentChange,
    ConsentChannel,
    ConsentStatus,
    Customer,
    CustomerIdentity,
    IdentityKind,
    ImportJob,
)
from crm.services.bulk_sql import history_copy_rows, insert_new_rows, insert_rows, rows_where_in, update_rows
from crm.services.customers import customer_upsert
from crm.services.identities import normalise_identity
from crm.services.imports.messages import ImportMessage, message
from crm.services.imports.orders import _channel
from crm.services.imports.report import (
    BATCH_ROWS,
    ImportReport,
    Progress,
    _run_batches,
)
from crm.services.imports.source import _cell_getter, _open_csv, _Source, _too_many_cells, file_scan

logger = logging.getLogger(__name__)


PROFILE_COLUMNS = PROFILE_FIELDS  # a CSV column per profile field, named as the field
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
# Free-text columns and what their database column holds.
_LIMITS = {
    name: Customer._meta.get_field(name).max_length
    for name in ("external_id", "name", "email", "city", "region", "utm_source", "utm_medium", "utm_campaign")
}
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
    scan = file_scan(source)
    report.encoding = scan.encoding
    if scan.note:
        report.notes.append(scan.note)
    report.total_rows = max(scan.lines - 1, 0)
    with _Source(source).open() as binary:
        table = _open_csv(binary, scan, required=CUSTOMER_REQUIRED, optional=CUSTOMER_OPTIONAL, report=report)
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
            for line, cells, trouble in batch:
                if trouble is not None:  # a row the reader could not read as written
                    report.add_error(line, *trouble)
                    report.error_count += 1
                    continue
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
                _customers_store_isolating(rows, report=report, source=source_label, now=now)
            return len(batch)

        return _run_batches(report, batches(), handle, progress)


_VALID_ZONES = zoneinfo.available_timezones()


class _BadCell(Exception):
    def __init__(self, msg: ImportMessage):
        self.msg = msg


def _too_long(limit: int) -> _BadCell:
    return _BadCell(message(gettext_noop("Longer than %(limit)d characters."), limit=limit))


def _parse_customer(line, cells, *, get, width, present, report, today: date) -> _CustomerRow | None:
    problems: list[tuple[str, ImportMessage]] = []
    if _too_many_cells(cells, width):
        problems.append(("", message(gettext_noop("The row has more cells than the header."))))
    external_id = get(cells, "external_id")
    if not external_id:
        problems.append(("external_id", message(gettext_noop("The customer id is empty."))))
    elif len(external_id) > _LIMITS["external_id"]:
        problems.append(("external_id", _too_long(_LIMITS["external_id"]).msg))
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
                    raise _BadCell(
                        message(gettext_noop("%(value)r is not opted_in or opted_out."), value=value)
                    )
                consents[CONSENT_COLUMNS[column]] = status
            elif column in IDENTITY_COLUMNS:
                identities.append(normalise_identity(column, value))
            elif column == "email":
                value = value.lower()
                try:
                    validate_email(value)
                except ValidationError:
                    raise _BadCell(message(gettext_noop("%(value)s is not an email address."), value=value))
                if len(value) > _LIMITS["email"]:
                    raise _too_long(_LIMITS["email"])
                profile["email"] = value
                identities.insert(1, (IdentityKind.EMAIL.value, value))
            elif column == "phone":
                try:
                    kind, value = normalise_identity(IdentityKind.PHONE, value)
                except ValidationError:
                    raise _BadCell(message(gettext_noop("%(value)s is not a phone number."), value=value))
                if len(value) > 32:
                    raise _too_long(32)
                profile["phone"] = value
                identities.append((kind, value))
            elif column == "birthday":
                profile["birthday"] = _parse_birthday(value, today)
            elif column == "gender":
                if value.lower() not in GENDER_ALIASES:
                    raise _BadCell(
                        message(gettext_noop("%(value)r is not female, male or other."), value=value)
                    )
                profile["gender"] = GENDER_ALIASES[value.lower()]
            elif column == "time_zone":
                if value not in _VALID_ZONES:
                    raise _BadCell(
                        message(
                            gettext_noop("%(value)s is not an IANA time zone (e.g. Asia/Shanghai)."),
                            value=value,
                        )
                    )
                profile["time_zone"] = value
            elif column == "acquisition_channel":
                channel = _channel(value)
                if channel not in Channel.values:
                    raise _BadCell(
                        message(
                            gettext_noop("Unknown channel %(value)s; use one of %(choices)s."),
                            value=value,
                            choices=", ".join(Channel.values),
                        )
                    )
                profile["acquisition_channel"] = channel
            else:
                if len(value) > _LIMITS[column]:
                    raise _too_long(_LIMITS[column])
                profile[column] = value
        except _BadCell as exc:
            problems.append((column, exc.msg))
        except ValidationError as exc:  # from normalise_identity: its text, translated if it is a msgid
            problems.append((column, ImportMessage(" ".join(exc.messages))))
    if problems:
        for field_name, msg in problems:
            report.add_error(line, field_name, msg)
        report.error_count += 1
        return None
    return _CustomerRow(line, external_id, profile, identities, consents)


def _parse_birthday(value: str, today: date) -> date:
    text = value.replace("/", "-").replace(".", "-")
    try:
        day = date.fromisoformat(text) if "-" in text else datetime.strptime(text, "%Y%m%d").date()
    except ValueError:
        raise _BadCell(message(gettext_noop("%(value)r is not a date (e.g. 1990-05-20)."), value=value))
    if day > today or day.year < 1900:
        raise _BadCell(message(gettext_noop("%(value)s is not a plausible birthday."), value=value))
    return day


def _drop_repeats(rows: list[_CustomerRow], report: ImportReport) -> list[_CustomerRow]:
    first: dict[str, int] = {}
    kept = []
    for row in rows:
        if row.external_id in first:
            report.add_error(
                row.line,
                "external_id",
                message(
                    gettext_noop("Customer %(id)s already appears on line %(line)d; this row is skipped."),
                    id=row.external_id,
                    line=first[row.external_id],
                ),
            )
            report.error_count += 1
            continue
        first[row.external_id] = row.line
        kept.append(row)
    return kept


def _customers_store_isolating(
    rows: list[_CustomerRow], *, report: ImportReport, source: str, now: datetime
) -> None:
    """Store a batch in one transaction (a savepoint in a dry run); if the database refuses it (a value
    every check let through), store each half again, down to the row it refuses, which is rejected on its
    line: the rest of the batch is kept. What a refused attempt had counted is taken back."""
    counts = (report.created, report.updated, report.unchanged, report.error_count, len(report.errors))
    try:
        with transaction.atomic():
            _customers_batch(rows, report=report, source=source, now=now)
        return
    except (DatabaseError, psycopg.Error) as exc:  # psycopg's own from a raw cursor
        report.created, report.updated, report.unchanged, report.error_count = counts[:4]
        del report.errors[counts[4] :]
        if len(rows) == 1:
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            report.add_error(
                rows[0].line,
                "",
                message(
                    gettext_noop(
                        "The database refused this row (%(error)s); the other rows of the file were imported."
                    ),
                    error=reason,
                ),
            )
            report.error_count += 1
            return
        logger.info("customer import: the database refused a batch of %d rows, halving it", len(rows))
    middle = len(rows) // 2
    _customers_store_isolating(rows[:middle], report=report, source=source, now=now)
    _customers_store_isolating(rows[middle:], report=report, source=source, now=now)


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
            report.add_error(row.line, "", ImportMessage(" ".join(exc.messages)))
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
