"""Reads over segments: who is in one, how many, a sample, rows for an export."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from django.db import connection, transaction
from django.db.models import Count, QuerySet, Window
from django.utils.translation import gettext as _

from crm.models import Customer, Segment, SegmentSnapshot, StaticList
from crm.segments.compiler import rule_queryset
from crm.segments.sql import segment_query_settings

# A live count while someone edits a rule must not hold a connection for minutes.
PREVIEW_STATEMENT_TIMEOUT_MS = 15_000
SAMPLE_SIZE = 10
EXPORT_COLUMNS = [
    "id",
    "external_id",
    "name",
    "email",
    "phone",
    "city",
    "region",
    "acquisition_channel",
    "created_at",
]


def segment_customers(*, segment: Segment | None = None, rule: Any = None, now: datetime | None = None):
    """The customers matching a segment (or a rule being edited), as one lazy queryset. Raises
    fields.RuleInvalid when the rule cannot be compiled."""
    return rule_queryset(segment.rule if segment is not None else rule, now=now)


def static_list_customers(*, static_list: StaticList) -> QuerySet[Customer]:
    return Customer.objects.filter(erased_at__isnull=True, pk__in=static_list.members.values("customer_id"))


def snapshot_customers(*, snapshot: SegmentSnapshot) -> QuerySet[Customer]:
    """A snapshot's members, less any erased since it was taken."""
    return Customer.objects.filter(erased_at__isnull=True, pk__in=snapshot.members.values("customer_id"))


def segment_count(*, segment: Segment | None = None, rule: Any = None, now: datetime | None = None) -> int:
    customers = segment_customers(segment=segment, rule=rule, now=now)
    with segment_query_settings():
        return customers.count()


def segment_sample(
    *, segment: Segment | None = None, rule: Any = None, n: int = SAMPLE_SIZE, now: datetime | None = None
) -> list[dict]:
    """A few members (newest customers first) to show beside the live count."""
    rows = segment_customers(segment=segment, rule=rule, now=now).order_by("-pk")
    with segment_query_settings():
        return list(rows.values("id", "name", "email", "phone", "city")[:n])


def segment_preview(*, rule: Any, n: int = SAMPLE_SIZE, now: datetime | None = None) -> dict:
    """Count and sample for the builder in one query (COUNT(*) OVER () beside the newest n members, so
    the rule is evaluated once), bounded by a statement timeout so a heavy rule being edited cannot tie
    up the database. Raises fields.RuleInvalid for a bad rule and PreviewTooSlow when it does not finish
    in time."""
    from django.db import OperationalError

    customers = segment_customers(rule=rule, now=now)  # validates before any query runs
    with transaction.atomic(), segment_query_settings():  # a savepoint: a cancelled query rolls back to it
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute(f"SET LOCAL statement_timeout = {int(PREVIEW_STATEMENT_TIMEOUT_MS)}")
        try:
            rows = list(
                customers.annotate(segment_total=Window(Count("pk")))
                .order_by("-pk")
                .values("id", "name", "email", "phone", "city", "segment_total")[:n]
            )
        except OperationalError as e:
            if getattr(getattr(e, "__cause__", None), "sqlstate", None) == "57014":  # query_canceled
                raise PreviewTooSlow(
                    _("Counting this rule took longer than %(s)s seconds; simplify it or narrow its windows.")
                    % {"s": f"{PREVIEW_STATEMENT_TIMEOUT_MS / 1000:g}"}
                )
            raise
    count = rows[0]["segment_total"] if rows else 0
    for row in rows:
        del row["segment_total"]
    return {"count": count, "sample": rows}


class PreviewTooSlow(Exception):
    pass


class _Echo:
    def write(self, value):
        return value


def customers_csv_rows(queryset: QuerySet[Customer]) -> Iterator[str]:
    """CSV lines (header first) for a members export, read with a server-side cursor in chunks so a
    million members stream without being held in memory."""
    writer = csv.writer(_Echo())
    yield writer.writerow(EXPORT_COLUMNS)
    rows = queryset.order_by("pk").values_list(*EXPORT_COLUMNS)
    for row in rows.iterator(chunk_size=5000):
        yield writer.writerow(
            ["" if v is None else (v.isoformat() if hasattr(v, "isoformat") else v) for v in row]
        )
