"""Reads of the outbox that the staff pages use: a customer's messages (the 360 "Messages" panel), the
delivery overview (queue depth, send rate, failures), the dead letters and the admin home's figures.

Each is a fixed number of queries whatever the table's size, each served by an index of
campaigns/models/outbox.py (see BENCHMARKS.md, messages panel)."""

from __future__ import annotations

import datetime as dt
import zoneinfo
from dataclasses import dataclass, field

from django.db.models import Count
from django.db.models.functions import TruncMinute
from django.utils import formats, timezone
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from campaigns.models import Channel, Message, MessagePurpose, MessageStatus
from campaigns.models.outbox import DUE_STATUSES, MessageSource
from campaigns.reasons import reason_text
from crm.clock import business_day_start, business_today

# Statuses that mean the message reached (or was handed to) the provider: no "why not" for these.
SENT_STATUSES = (MessageStatus.SENT, MessageStatus.DELIVERED, MessageStatus.OPENED, MessageStatus.CLICKED)
# What the panel reads of a message: never the template data, the links or the whole history.
_PANEL_FIELDS = (
    "id",
    "channel",
    "purpose",
    "source_kind",
    "source_label",
    "source_ref",
    "status",
    "reason",
    "reason_params",
    "due_at",
    "created_at",
    "sent_at",
    "delivered_at",
    "opened_at",
    "clicked_at",
    "finished_at",
    "error_code",
    "error_detail",
    "subject",
    "attempts",
    "address",
)


@dataclass(frozen=True)
class MessageRow:
    id: int
    source: str  # the source's own name ("双11大促"), or its kind when it has none
    source_kind: str  # "Campaign", "Journey", ... (translated)
    channel: str
    channel_label: str
    purpose: str
    status: str
    status_label: str
    created_at: dt.datetime
    at: dt.datetime  # when the message reached its status (sent, opened, ...) or, waiting, when it is due
    why: str  # for a message not sent: why, in the active language; "" otherwise
    subject: str
    test_address: str = ""  # a staff test send about this customer: the staff address it went to


@dataclass(frozen=True)
class CustomerMessages:
    rows: list[MessageRow]
    has_more: bool
    offset: int
    limit: int


def _local_moment(value: dt.datetime, *, tz: dt.tzinfo, now: dt.datetime) -> str:
    """A moment as staff read it next to a reason: "08:00" today (in `tz`), the date too otherwise."""
    local = value.astimezone(tz)
    if local.date() == now.astimezone(tz).date():
        return formats.time_format(local, "H:i")
    return formats.date_format(local, "SHORT_DATETIME_FORMAT")


def reason_display(code: str, params: dict | None, *, tz: dt.tzinfo, now: dt.datetime) -> str:
    """reason_text, with a stored moment ("until": ISO 8601 with its offset, or a local wall-clock time with
    the params' "time_zone") shown in `tz` (the customer's time zone: quiet hours are the customer's own)."""
    values = dict(params or {})
    until = values.get("until")
    if isinstance(until, str):
        try:
            moment = dt.datetime.fromisoformat(until)
        except ValueError:
            pass
        else:
            if timezone.is_naive(moment):
                # The rules screen writes the local wall-clock time with the zone it is in
                # ({"until": "2026-12-08 08:00", "time_zone": "Asia/Shanghai"}); read as UTC, it showed
                # 16:00 for an 08:00 in Shanghai. A naive time without a zone is taken as UTC.
                moment = moment.replace(
                    tzinfo=_zone(values.get("time_zone")) if values.get("time_zone") else dt.UTC
                )
            values["until"] = _local_moment(moment, tz=tz, now=now)
    return reason_text(code, values)


def message_why(message, *, tz: dt.tzinfo, now: dt.datetime) -> str:
    """Why a message was not sent (deferred, suppressed, failed, cancelled, to reconcile); "" when it was
    sent or simply waits its turn."""
    if message.status in SENT_STATUSES:
        return ""
    if message.reason:
        return reason_display(message.reason, message.reason_params, tz=tz, now=now)
    if message.status == MessageStatus.FAILED and (message.error_code or message.error_detail):
        return gettext("provider error: %(error)s") % {
            "error": " ".join(filter(None, [message.error_code, message.error_detail]))[:200]
        }
    return ""


def _status_at(message) -> dt.datetime:
    by_status = {
        MessageStatus.SENT: message.sent_at,
        MessageStatus.DELIVERED: message.delivered_at,
        MessageStatus.OPENED: message.opened_at,
        MessageStatus.CLICKED: message.clicked_at,
        MessageStatus.QUEUED: message.due_at,
        MessageStatus.DEFERRED: message.due_at,
    }
    return by_status.get(message.status) or message.finished_at or message.created_at


def _label(choices, value: str) -> str:
    try:
        return str(choices(value).label)
    except ValueError:
        return value


def message_row(message, *, tz: dt.tzinfo, now: dt.datetime) -> MessageRow:
    kind = _label(MessageSource, message.source_kind)
    return MessageRow(
        id=message.pk,
        source=message.source_label or kind,
        source_kind=kind,
        channel=message.channel,
        channel_label=_label(Channel, message.channel),
        purpose=message.purpose,
        status=message.status,
        status_label=_label(MessageStatus, message.status),
        created_at=message.created_at,
        at=_status_at(message),
        why=message_why(message, tz=tz, now=now),
        subject=message.subject,
        test_address=message.address if message.purpose == MessagePurpose.TEST else "",
    )


def _zone(name: str | None) -> dt.tzinfo:
    if name:
        try:
            return zoneinfo.ZoneInfo(name)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            pass
    return timezone.get_default_timezone()


def customer_messages(
    *, customer_id: int, limit: int = 10, offset: int = 0, time_zone: str | None = None, now=None
) -> CustomerMessages:
    """Every message considered for the customer, newest first (created_at, then id): one query on the
    campaigns_message_customer index, one row more than `limit` to tell whether there is an older page
    without counting. `time_zone` is the customer's (read from the customer, one query more, when not
    given): the reasons' times are shown in it. The texts are in the active language."""
    now = now or timezone.now()
    if time_zone is None:
        from crm.models import Customer

        time_zone = Customer.objects.filter(pk=customer_id).values_list("time_zone", flat=True).first()
    tz = _zone(time_zone)
    limit = max(1, min(int(limit), 200))
    offset = max(0, int(offset))
    messages = list(
        Message.objects.filter(customer_id=customer_id)
        .order_by("-created_at", "-id")
        .only(*_PANEL_FIELDS)[offset : offset + limit + 1]
    )
    rows = [message_row(m, tz=tz, now=now) for m in messages[:limit]]
    return CustomerMessages(rows=rows, has_more=len(messages) > limit, offset=offset, limit=limit)


# --- The delivery overview ---------------------------------------------------------------------------

# A reason grouped over many messages has no one set of parameters: the overview names it in a few words
# and shows the error code beside it (the dead letters' reason filter uses the same words).
FAILURE_LABELS = {
    "provider_rejected": _("Provider refused it"),
    "retries_exhausted": _("Gave up after retries"),
    "bounced": _("Bounced"),
    "complained": _("Marked as spam"),
    "render_failed": _("Template could not be rendered"),
    "screen_failed": _("Checks before sending failed"),
}
RATE_WINDOW = dt.timedelta(hours=1)
FAILURE_WINDOW = dt.timedelta(days=1)
# Waiting or in flight: what "queue depth" counts.
IN_FLIGHT = (MessageStatus.SENDING,)


@dataclass
class DeliveryOverview:
    now: dt.datetime
    queue: list[dict]  # [{"channel", "channel_label", "status", "status_label", "count"}]
    queue_by_channel: dict[str, dict[str, int]]  # channel -> status -> count
    queue_total: int
    to_reconcile: int
    rate: list[dict]  # one per minute of the last hour: {"minute": datetime, "count": n, "by_channel": {...}}
    sent_last_hour: int
    per_minute: float
    failures: list[dict]  # [{"reason", "why", "error_code", "count"}], most first
    failed_last_day: int
    channels: list[tuple[str, str]] = field(
        default_factory=lambda: [(c.value, str(c.label)) for c in Channel]
    )


def _queue() -> tuple[list[dict], int]:
    """Messages waiting (queued, deferred), in flight (sending) and to reconcile (unknown), by channel and
    status: one GROUP BY answered from the campaigns_message_queue index alone."""
    rows = list(
        Message.objects.filter(status__in=[*DUE_STATUSES, *IN_FLIGHT, MessageStatus.UNKNOWN])
        .values("channel", "status")
        .annotate(count=Count("*"))
        .order_by()
    )
    to_reconcile = sum(r["count"] for r in rows if r["status"] == MessageStatus.UNKNOWN)
    return [r for r in rows if r["status"] != MessageStatus.UNKNOWN], to_reconcile


def delivery_overview(*, now: dt.datetime) -> DeliveryOverview:
    """Queue depth by channel and status, messages sent a minute over the last hour (from sent_at), and
    the failures of the last day by reason. Three queries, each on a partial index."""
    queue_rows, to_reconcile = _queue()
    order = {s: i for i, s in enumerate(MessageStatus.values)}
    channel_order = {c: i for i, c in enumerate(Channel.values)}
    queue_rows.sort(key=lambda r: (channel_order.get(r["channel"], 99), order.get(r["status"], 99)))
    queue = [
        {
            **r,
            "channel_label": _label(Channel, r["channel"]),
            "status_label": _label(MessageStatus, r["status"]),
        }
        for r in queue_rows
    ]
    by_channel: dict[str, dict[str, int]] = {}
    for r in queue_rows:
        by_channel.setdefault(r["channel"], {})[r["status"]] = r["count"]

    end = now.replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
    start = end - RATE_WINDOW
    per_minute = (
        Message.objects.filter(sent_at__gte=start, sent_at__lt=end)
        .annotate(minute=TruncMinute("sent_at", tzinfo=dt.UTC))
        .values("minute", "channel")
        .annotate(count=Count("*"))
        .order_by()
    )
    minutes = {start + dt.timedelta(minutes=i): {} for i in range(int(RATE_WINDOW.total_seconds() // 60))}
    for r in per_minute:
        minutes.setdefault(r["minute"], {})[r["channel"]] = r["count"]
    rate = [{"minute": m, "count": sum(c.values()), "by_channel": c} for m, c in sorted(minutes.items())]
    # The last hour ends with the current minute, which has only begun: the rate is over whole minutes.
    sent_last_hour = sum(r["count"] for r in rate)

    failures = list(
        Message.objects.filter(status=MessageStatus.FAILED, finished_at__gte=now - FAILURE_WINDOW)
        .values("reason", "error_code")
        .annotate(count=Count("*"))
        .order_by("-count", "reason", "error_code")
    )
    for f in failures:
        f["why"] = str(FAILURE_LABELS.get(f["reason"], "")) or reason_text(f["reason"], {})
    return DeliveryOverview(
        now=now,
        queue=queue,
        queue_by_channel=by_channel,
        queue_total=sum(r["count"] for r in queue_rows),
        to_reconcile=to_reconcile,
        rate=rate,
        sent_last_hour=sent_last_hour,
        per_minute=sent_last_hour / (RATE_WINDOW.total_seconds() / 60),
        failures=failures,
        failed_last_day=sum(f["count"] for f in failures),
    )


def dead_letters():
    """Messages that failed for good, newest first (the campaigns_message_failed index)."""
    return Message.objects.filter(status=MessageStatus.FAILED).order_by("-finished_at", "-id")


# --- The admin home ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MessagesHomeFigures:
    sent_today: int
    queued: int
    failed_today: int
    day_start: dt.datetime


def messages_home_figures(*, now: dt.datetime) -> MessagesHomeFigures:
    """Messages sent since the start of the business day, waiting to be sent, and failed today: three
    counts, each on its partial index (one aggregate with FILTERs would read the whole table)."""
    start = business_day_start(business_today(now))
    return MessagesHomeFigures(
        sent_today=Message.objects.filter(sent_at__gte=start).count(),
        queued=Message.objects.filter(status__in=DUE_STATUSES).count(),
        failed_today=Message.objects.filter(status=MessageStatus.FAILED, finished_at__gte=start).count(),
        day_start=start,
    )
