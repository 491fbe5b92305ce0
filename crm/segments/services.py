"""Writes for segments: snapshots of members and static-list membership.

A snapshot is one `INSERT INTO ... SELECT` of the compiled rule, so its members are the rule's matches
at a single moment and no customer passes through Python. Static-list uploads resolve identifiers in
batches of one query each and insert with `bulk_create`.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO

from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from crm.models import (
    Customer,
    CustomerIdentity,
    IdentityKind,
    Segment,
    SegmentSnapshot,
    StaticList,
    StaticListMember,
)
from crm.segments.fields import RuleInvalid
from crm.segments.selectors import segment_count, segment_customers
from crm.segments.sql import segment_query_settings
from crm.services.identities import normalise_identity

MAX_UPLOAD_LINES = 1_000_000
RESOLVE_BATCH = 5_000
MAX_REPORTED_PROBLEMS = 100

# What an uploaded file's values can be matched on, besides any identifier kind (`wechat_openid`,
# `channel:douyin`, ...): the customer's database id and external id.
CUSTOMER_ID = "customer_id"
EXTERNAL_ID = "external_id"


@transaction.atomic
def segment_snapshot_create(
    *, segment: Segment, purpose: str = "", created_by=None, now: datetime | None = None
) -> SegmentSnapshot:
    """Freeze the segment's current members (set-based INSERT ... SELECT). Raises fields.RuleInvalid
    when the segment's rule no longer compiles (a tag it names was deleted, for instance)."""
    now = now or timezone.now()
    members = segment_customers(segment=segment, now=now).order_by().values("id")
    snapshot = SegmentSnapshot.objects.create(
        segment=segment,
        segment_name=segment.name,
        rule=segment.rule,
        purpose=purpose,
        created_by=created_by,
        created_at=now,
    )
    select_sql, params = members.query.sql_with_params()
    table = _snapshot_member_table()
    customers = connection.ops.quote_name(Customer._meta.db_table)
    # The members' keys are checked here, for the set (the table has no foreign keys: see
    # SegmentSnapshotMember): each customer is locked FOR KEY SHARE before its row goes in, so one
    # deleted meanwhile is skipped, and a merge or delete after it waits for this transaction.
    with segment_query_settings(), connection.cursor() as cursor:
        cursor.execute(
            f"WITH locked AS (SELECT c.id FROM {customers} c JOIN ({select_sql}) AS m ON m.id = c.id "
            f"FOR KEY SHARE OF c) INSERT INTO {table} (snapshot_id, customer_id) SELECT %s, id FROM locked",
            [*params, snapshot.pk],
        )
        count = cursor.rowcount
    snapshot.member_count = count
    snapshot.save(update_fields=["member_count"])
    Segment.objects.filter(pk=segment.pk).update(last_count=count, last_counted_at=now)
    return snapshot


def _snapshot_member_table() -> str:
    from crm.models import SegmentSnapshotMember

    return connection.ops.quote_name(SegmentSnapshotMember._meta.db_table)


def segment_save(*, segment: Segment, created_by=None) -> Segment:
    """Save a segment (a new one records who made it) and, once committed, its member count for the
    list's "members" column (one query)."""
    if segment._state.adding and created_by is not None:
        segment.created_by = created_by
    segment.save()
    transaction.on_commit(lambda: _segment_count_refresh(segment))
    return segment


def _segment_count_refresh(segment: Segment) -> None:
    try:
        segment_count_record(segment=segment, count=segment_count(segment=segment))
    except RuleInvalid:
        pass  # a tag or list the rule names was deleted meanwhile; the page will say so next time


def segment_count_record(*, segment: Segment, count: int, now: datetime | None = None) -> None:
    """Remember the latest count shown for a segment (the changelist's "members" column)."""
    Segment.objects.filter(pk=segment.pk).update(last_count=count, last_counted_at=now or timezone.now())


# --- Static lists -------------------------------------------------------------------------------------


@dataclass
class LineProblem:
    line: int
    value: str
    message: str

    def __str__(self) -> str:
        return _("line %(line)s (%(value)s): %(message)s") % {
            "line": self.line,
            "value": self.value,
            "message": self.message,
        }


@dataclass
class UploadResult:
    lines: int = 0
    matched: int = 0
    added: int = 0
    already_members: int = 0
    unmatched: list[LineProblem] = field(default_factory=list)
    unmatched_count: int = 0


class UploadRejected(ValueError):
    """The file cannot be used as it is; nothing was added. `problems` name the lines."""

    def __init__(self, message: str, problems: list[LineProblem] | None = None):
        super().__init__(message)
        self.message = message
        self.problems = problems or []


def match_kinds() -> list[tuple[str, str]]:
    """What an upload can match on, for the admin form."""
    return [
        (CUSTOMER_ID, _("Customer id (database)")),
        (EXTERNAL_ID, _("Customer external id")),
        *[(k, str(label)) for k, label in IdentityKind.choices if k != IdentityKind.EXTERNAL_ID],
    ]


def _read_values(file: IO, match_by: str | None) -> tuple[str, list[tuple[int, str]]]:
    raw = file.read()
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise UploadRejected(_("The file is not UTF-8 text. Save it as CSV UTF-8 and upload it again."))
    rows = csv.reader(io.StringIO(raw))
    values: list[tuple[int, str]] = []
    for line, row in enumerate(rows, start=1):
        cells = [c.strip() for c in row]
        if not any(cells):
            continue
        if line == 1 and match_by is None:
            header = cells[0].lower()
            if header in {k for k, _label in match_kinds()} or header.startswith("channel:"):
                match_by = header
                continue
        if line == 1 and match_by is not None and cells[0].lower() == match_by:
            continue  # a header naming the chosen column
        values.append((line, cells[0]))
        if len(values) > MAX_UPLOAD_LINES:
            raise UploadRejected(_("The file has more than %(n)s lines.") % {"n": MAX_UPLOAD_LINES})
    if match_by is None:
        raise UploadRejected(
            _(
                "Say what the values are: choose 'match by', or start the file with a header line naming "
                "the column (customer_id, external_id, email, phone, wechat_openid, ...)."
            )
        )
    return match_by, values


def _normalise(
    match_by: str, lines: list[tuple[int, str]]
) -> tuple[list[tuple[int, str, str]], list[LineProblem]]:
    """(line, original, normalised) for every line, or the problems of the lines that are malformed."""
    out, problems = [], []
    for line, value in lines:
        try:
            if match_by == CUSTOMER_ID:
                if not (value.isascii() and value.isdigit()):
                    raise ValidationError(_("not a customer id (a whole number)"))
                normalised = value
            elif match_by == EXTERNAL_ID:
                normalised = value
            else:
                normalised = normalise_identity(match_by, value)[1]
        except ValidationError as e:
            problems.append(LineProblem(line, value[:60], " ".join(e.messages)))
            continue
        out.append((line, value, normalised))
    return out, problems


def _resolve(match_by: str, values: list[str]) -> dict[str, int]:
    """normalised value -> customer id, for customers that are not erased."""
    found: dict[str, int] = {}
    for start in range(0, len(values), RESOLVE_BATCH):
        batch = values[start : start + RESOLVE_BATCH]
        if match_by == CUSTOMER_ID:
            rows = Customer.objects.filter(pk__in=[int(v) for v in batch], erased_at__isnull=True)
            found.update((str(pk), pk) for pk in rows.values_list("pk", flat=True))
        elif match_by == EXTERNAL_ID:
            rows = Customer.objects.filter(external_id__in=batch, erased_at__isnull=True)
            found.update(rows.values_list("external_id", "pk"))
        else:
            rows = CustomerIdentity.objects.filter(
                kind=match_by, value__in=batch, customer__erased_at__isnull=True
            )
            found.update(rows.values_list("value", "customer_id"))
    return found


@transaction.atomic
def static_list_upload(
    *, static_list: StaticList, file: IO, match_by: str | None = None, source: str = "upload"
) -> UploadResult:
    """Add the customers a CSV names (first column; one customer a line) to a static list.

    A malformed value (a customer id that is not a number, a phone that is not a phone) rejects the whole
    file, naming the lines, and adds nothing. Values that are well formed but match no customer are
    reported (the first 100) and the rest are added."""
    match_by, lines = _read_values(file, match_by)
    if match_by not in {k for k, _label in match_kinds()} and not match_by.startswith("channel:"):
        raise UploadRejected(_("Cannot match on '%(kind)s'.") % {"kind": match_by})
    normalised, problems = _normalise(match_by, lines)
    if problems:
        raise UploadRejected(
            _("%(n)s lines are not valid; nothing was added.") % {"n": len(problems)},
            problems[:MAX_REPORTED_PROBLEMS],
        )
    found = _resolve(match_by, sorted({n for _line, _value, n in normalised}))
    result = UploadResult(lines=len(lines))
    customer_ids = []
    for line, value, norm in normalised:
        if norm in found:
            customer_ids.append(found[norm])
        else:
            result.unmatched_count += 1
            if len(result.unmatched) < MAX_REPORTED_PROBLEMS:
                result.unmatched.append(LineProblem(line, value[:60], _("no customer has this identifier")))
    added, already = static_list_add(static_list=static_list, customer_ids=customer_ids, source=source)
    result.matched, result.added, result.already_members = len(set(customer_ids)), added, already
    return result


@transaction.atomic
def static_list_add(
    *, static_list: StaticList, customer_ids: Iterable[int], source: str = "manual"
) -> tuple[int, int]:
    """Add customers to a list; returns (added, already members). Erased customers are skipped."""
    StaticList.objects.select_for_update().filter(pk=static_list.pk).first()  # one writer per list at a time
    wanted = sorted(set(customer_ids))
    now = timezone.now()
    added = already = 0
    # In batches: PostgreSQL takes at most 65,535 parameters per statement.
    for start in range(0, len(wanted), RESOLVE_BATCH):
        batch = wanted[start : start + RESOLVE_BATCH]
        ids = set(Customer.objects.filter(pk__in=batch, erased_at__isnull=True).values_list("pk", flat=True))
        existing = set(
            StaticListMember.objects.filter(static_list=static_list, customer_id__in=ids).values_list(
                "customer_id", flat=True
            )
        )
        new = sorted(ids - existing)
        StaticListMember.objects.bulk_create(
            [
                StaticListMember(static_list=static_list, customer_id=pk, source=source, added_at=now)
                for pk in new
            ],
            batch_size=RESOLVE_BATCH,
            ignore_conflicts=True,
        )
        added += len(new)
        already += len(existing)
    StaticList.objects.filter(pk=static_list.pk).update(updated_at=now)
    return added, already


@transaction.atomic
def static_list_remove(*, static_list: StaticList, customer_ids: Iterable[int]) -> int:
    wanted = sorted(set(customer_ids))
    deleted = 0
    for start in range(0, len(wanted), RESOLVE_BATCH):
        n, _by_model = StaticListMember.objects.filter(
            static_list=static_list, customer_id__in=wanted[start : start + RESOLVE_BATCH]
        ).delete()
        deleted += n
    return deleted
