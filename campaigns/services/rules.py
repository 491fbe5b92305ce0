"""The eligibility pass every message goes through before it is rendered: one set-based screen of a batch.

`messages_screen(messages=..., now=...)` answers, for each message of a batch the outbox claimed, send it
now, defer it to a later time, or suppress it, with the reason as a code and parameters
(campaigns/reasons.py) and the address it goes to. It reads what it needs for the whole batch in a fixed
number of queries (customers with their addresses, consent, the suppression list, the caps, the delivery
settings, what was sent lately), never a query per message: the outbox screens batches of thousands.

The checks, in order:

1. expired (`expires_at` passed): suppressed;
2. the customer was erased: suppressed;
3. consent to the channel (crm Consent, opted in): no consent, no message, transactional ones included;
4. an address on the channel, valid for it (campaigns/addresses.py), and not on the suppression list;
5. transactional messages go now: caps, priority and quiet hours are for marketing;
6. quiet hours in the customer's own time zone: deferred to the next allowed local time;
7. frequency caps and priority: per customer, the batch's marketing messages are taken highest priority
   first (then earliest due, then oldest); each one takes a slot if every cap that applies to it (its
   channel's and the all-channel ones) still has room, counting what was sent in the period (every
   source) and what this batch already let through. One that finds a cap full is deferred to the start of
   the period after (then quiet hours) or dropped, as its `on_cap` says; when a higher-priority message of
   this batch took the slot, the reason names that message's source (`lower_priority`).

A test send (purpose "test", to a staff address) is only checked for a valid address.

Periods are calendar periods of the customer's own time zone: a day from local midnight, a week from
local Monday 00:00, a month from the 1st. Every local moment is turned into UTC with zoneinfo at the
instant it names, never by adding hours to a UTC time: across a DST change a local day lasts 23 or 25
hours and "08:00 tomorrow" is not "now + n hours" computed with today's offset.

Caps hold when two workers screen messages of the same customer at the same time. Counting only what was
sent is not enough: both would count the same past and both let a message through. So the cap step runs
in one short transaction that first takes a transaction-level advisory lock per customer of the batch (in
one statement, in key order, so two screens never wait for each other in a cycle), then counts what was
sent plus the slots held by messages in flight (`sending`, let through by an earlier screen that committed
its `screened_at`), decides, and marks the messages it lets through before it commits. The second screen
waits for the first one's commit and counts its messages. A batch of more customers than
`_CUSTOMER_LOCKS_MAX` takes one exclusive lock instead (every smaller screen holds it shared), so a
benchmark-sized batch does not fill PostgreSQL's shared lock table. SQLite's IMMEDIATE transaction
serialises the step by itself.
"""

from __future__ import annotations

import zoneinfo
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Protocol

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Case, Count, DateTimeField, Q, Value, When
from django.utils import timezone

from campaigns.addresses import address_annotations, address_check
from campaigns.models import (
    DeliverySettings,
    FrequencyCap,
    Message,
    MessagePurpose,
    MessageStatus,
    OnCap,
    Suppression,
)
from crm.db import AnyOf
from crm.models import Consent, ConsentStatus, Customer

SEND = "send"
DEFER = "defer"
SUPPRESS = "suppress"


@dataclass(frozen=True)
class Decision:
    message_id: int
    action: str  # SEND, DEFER or SUPPRESS
    until: datetime | None = None  # for DEFER: the UTC time the message is due again
    reason: str = ""  # a code of campaigns/reasons.py; "" for SEND
    params: dict = field(default_factory=dict)
    address: str = ""  # normalised when valid; as stored when not; "" when there is none


class ScreenedMessage(Protocol):
    """What the screen reads of a message: a Message row, or any object with these attributes (the
    outbox may pass rows it read with .values()/.only() as simple objects). `source_label`, `address`,
    `expires_at`, `priority`, `on_cap` and `due_at` are optional."""

    id: int
    customer_id: int
    channel: str
    purpose: str


# ---- time --------------------------------------------------------------------------------------------


def local_to_utc(wall: datetime, zone: zoneinfo.ZoneInfo) -> datetime:
    """The first instant at which the clocks of `zone` read `wall` (naive), or, when they never read it
    (`wall` falls in the hour skipped by a spring-forward change), the instant the clocks jump past it.
    An ambiguous wall time (the hour repeated in autumn) gives its first occurrence."""
    first = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    if first.astimezone(zone).replace(tzinfo=None) == wall:
        return first
    # In a gap: fold=0 read the wall time with the offset from before the change, which lands after the
    # gap by as much as the wall time is into it; fold=1 lands before the gap. The change is in between:
    # find it to the second.
    low, high = wall.replace(tzinfo=zone, fold=1).astimezone(UTC), first
    if low > high:
        low, high = high, low
    while high - low > timedelta(seconds=1):
        mid = low + (high - low) / 2
        if mid.astimezone(zone).replace(tzinfo=None) >= wall:
            high = mid
        else:
            low = mid
    return high.replace(microsecond=0) if high.microsecond else high


def period_start(period: str, local_day: date) -> date:
    if period == FrequencyCap.Period.DAY:
        return local_day
    if period == FrequencyCap.Period.WEEK:
        return local_day - timedelta(days=local_day.weekday())
    if period == FrequencyCap.Period.MONTH:
        return local_day.replace(day=1)
    raise ValueError(f"unknown period {period!r}")


def period_next_start(period: str, local_day: date) -> date:
    start = period_start(period, local_day)
    if period == FrequencyCap.Period.DAY:
        return start + timedelta(days=1)
    if period == FrequencyCap.Period.WEEK:
        return start + timedelta(days=7)
    return (start + timedelta(days=32)).replace(day=1)


def quiet_until(moment: datetime, zone: zoneinfo.ZoneInfo, start: time, end: time) -> datetime | None:
    """When quiet hours [start, end) of `zone`'s local clock hold at `moment`, the UTC instant they end;
    otherwise None. A window with start > end crosses midnight (21:00-08:00); start == end: no quiet."""
    if start == end:
        return None
    local = moment.astimezone(zone)
    wall_time = local.time().replace(tzinfo=None)
    if start < end:
        quiet, end_day = start <= wall_time < end, local.date()
    else:
        quiet = wall_time >= start or wall_time < end
        end_day = local.date() + timedelta(days=1) if wall_time >= start else local.date()
    if not quiet:
        return None
    wall_end = datetime.combine(end_day, end)
    until = local_to_utc(wall_end, zone)
    if until <= moment:
        # The autumn hour that repeats: the clock reads `end` a second time after `moment`.
        until = wall_end.replace(tzinfo=zone, fold=1).astimezone(UTC)
        if until <= moment:
            return None
    return until


_ZONES: dict[str, zoneinfo.ZoneInfo] = {}


def _zone(name: str) -> zoneinfo.ZoneInfo:
    """The customer's zone; one that is not an IANA name (a row written around the model's validator) is
    counted in the default customer zone rather than failing the batch."""
    found = _ZONES.get(name)
    if found is None:
        try:
            found = zoneinfo.ZoneInfo(name)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            found = zoneinfo.ZoneInfo(settings.DEFAULT_CUSTOMER_TIME_ZONE)
        _ZONES[name] = found
    return found


class _ZoneClock:
    """Everything the screen needs of one time zone at the batch's `now`, worked out once per zone (the
    whole batch shares `now`, and customers share a handful of zones)."""

    def __init__(self, zone: zoneinfo.ZoneInfo, now: datetime, quiet: DeliverySettings) -> None:
        self.zone = zone
        self.now = now
        self.local_day = now.astimezone(zone).date()
        self.quiet_start, self.quiet_end = quiet.quiet_start, quiet.quiet_end
        self.quiet_now = quiet_until(now, zone, self.quiet_start, self.quiet_end)
        self._starts: dict[str, datetime] = {}
        self._next: dict[str, datetime] = {}

    def start(self, period: str) -> datetime:
        if period not in self._starts:
            day = period_start(period, self.local_day)
            self._starts[period] = local_to_utc(datetime.combine(day, time.min), self.zone)
        return self._starts[period]

    def next_slot(self, period: str, quiet_applies: bool) -> datetime:
        """The start of the period after this one, moved past quiet hours when they hold then."""
        key = f"{period}:{quiet_applies}"
        if key not in self._next:
            day = period_next_start(period, self.local_day)
            slot = local_to_utc(datetime.combine(day, time.min), self.zone)
            if quiet_applies:
                slot = quiet_until(slot, self.zone, self.quiet_start, self.quiet_end) or slot
            self._next[key] = slot
        return self._next[key]

    def local_text(self, moment: datetime) -> str:
        return moment.astimezone(self.zone).strftime("%Y-%m-%d %H:%M")


# ---- the screen --------------------------------------------------------------------------------------

# Batches larger than this are read in slices on databases with a low limit on bound parameters
# (SQLite); PostgreSQL takes the whole list in one statement.
_SQLITE_SLICE = 5_000


def _slices(values: Sequence) -> Iterable[Sequence]:
    if connection.vendor == "postgresql" or len(values) <= _SQLITE_SLICE:
        yield values
        return
    for offset in range(0, len(values), _SQLITE_SLICE):
        yield values[offset : offset + _SQLITE_SLICE]


@dataclass
class _Customer:
    zone_name: str
    erased: bool
    raw_addresses: dict[str, str]


def _customers(customer_ids: list[int], channels: set[str]) -> dict[int, _Customer]:
    annotations: dict = {}
    for channel in sorted(channels):
        annotations.update(address_annotations(channel))
    keys = [f"address_{channel}" for channel in sorted(channels)]
    found: dict[int, _Customer] = {}
    for ids in _slices(customer_ids):
        rows = (
            Customer.objects.filter(AnyOf("id", ids))
            .annotate(**annotations)
            .values_list("pk", "time_zone", "erased_at", *keys)
        )
        for pk, zone_name, erased_at, *addresses in rows:
            found[pk] = _Customer(
                zone_name=zone_name,
                erased=erased_at is not None,
                raw_addresses={
                    channel: value or "" for channel, value in zip(sorted(channels), addresses, strict=True)
                },
            )
    return found


def _opted_in(customer_ids: list[int], channels: set[str]) -> set[tuple[int, str]]:
    found: set[tuple[int, str]] = set()
    for ids in _slices(customer_ids):
        found.update(
            Consent.objects.filter(
                AnyOf("customer_id", ids), channel__in=sorted(channels), status=ConsentStatus.OPTED_IN
            ).values_list("customer_id", "channel")
        )
    return found


def _suppressed(addresses: set[tuple[str, str]]) -> dict[tuple[str, str], str]:
    if not addresses:
        return {}
    values = sorted({address for _channel, address in addresses})
    found: dict[tuple[str, str], str] = {}
    for chunk in _slices(values):
        for channel, address, reason in Suppression.objects.filter(AnyOf("address", chunk)).values_list(
            "channel", "address", "reason"
        ):
            if (channel, address) in addresses:
                found[(channel, address)] = reason
    return found


def _sent_counts(
    customer_ids: list[int],
    zone_names: dict[int, str],
    clocks: dict[str, _ZoneClock],
    periods: set[str],
    now: datetime,
) -> dict[tuple[int, str], dict[str, int]]:
    """{(customer, channel): {period: marketing messages sent in the current period}}, one query: the
    start of each customer's period is picked by their zone name in SQL (a CASE over the batch's zones),
    so the database counts and only one row per customer and channel comes back."""
    if not customer_ids or not periods:
        return {}
    names = sorted(set(zone_names.values()))
    earliest = min(clocks[name].start(period) for name in names for period in periods)

    def start_of(period: str):
        if len(names) == 1:
            return Value(clocks[names[0]].start(period), output_field=DateTimeField())
        return Case(
            *[When(customer__time_zone=name, then=Value(clocks[name].start(period))) for name in names],
            default=Value(earliest),
            output_field=DateTimeField(),
        )

    counts: dict[tuple[int, str], dict[str, int]] = {}
    for ids in _slices(customer_ids):
        rows = (
            Message.objects.filter(
                AnyOf("customer_id", ids),
                purpose=MessagePurpose.MARKETING,
                sent_at__gte=earliest,
                sent_at__lte=now,
            )
            .values("customer_id", "channel")
            .annotate(
                **{
                    f"n_{period}": Count("pk", filter=Q(sent_at__gte=start_of(period)))
                    for period in sorted(periods)
                }
            )
            .order_by()
        )
        for row in rows:
            counts[(row["customer_id"], row["channel"])] = {period: row[f"n_{period}"] for period in periods}
    return counts


# pg_advisory_xact_lock(namespace, key) namespaces of the cap step: one key per customer (hashint8 of the
# id: two customers sharing a key only wait for each other), and one for the whole screen, held shared by
# every screen that locks customers one by one and exclusive by one that has too many to.
_CAP_LOCK_CUSTOMER = 0x63617073  # "caps"
_CAP_LOCK_ALL = 0x63617041
_CUSTOMER_LOCKS_MAX = 2_000


def _cap_locks(customer_ids: list[int]) -> None:
    """Take the cap step's locks for these customers; call inside the step's transaction."""
    if connection.vendor != "postgresql" or not customer_ids:
        return
    with connection.cursor() as cursor:
        if len(customer_ids) > _CUSTOMER_LOCKS_MAX:
            cursor.execute("SELECT pg_advisory_xact_lock(%s, 0)", [_CAP_LOCK_ALL])
            return
        cursor.execute("SELECT pg_advisory_xact_lock_shared(%s, 0)", [_CAP_LOCK_ALL])
        # Volatile functions in the select list run after the ORDER BY (PostgreSQL >= 9.6): the locks are
        # taken in key order, the same in every screen, so two screens cannot deadlock on them.
        cursor.execute(
            "SELECT count(*) FROM (SELECT pg_advisory_xact_lock(%s, k) FROM "
            "(SELECT DISTINCT hashint8(id) AS k FROM unnest(%s::bigint[]) AS id) keys ORDER BY k) locked",
            [_CAP_LOCK_CUSTOMER, customer_ids],
        )


def _slots_in_flight(customer_ids: list[int], batch_ids: set[int]) -> dict[tuple[int, str], int]:
    """{(customer, channel): marketing messages of other batches let through and not yet recorded}: they
    go out now, so they count in every current period (the campaigns_message_slots index: a few rows)."""
    found: dict[tuple[int, str], int] = defaultdict(int)
    for ids in _slices(customer_ids):
        rows = Message.objects.filter(
            AnyOf("customer_id", ids),
            purpose=MessagePurpose.MARKETING,
            status=MessageStatus.SENDING,
            screened_at__isnull=False,
        ).values_list("id", "customer_id", "channel")
        for pk, customer_id, channel in rows:
            if pk not in batch_ids:
                found[(customer_id, channel)] += 1
    return found


def _slots_hold(messages: list, now: datetime) -> None:
    """Mark the claimed messages the cap step let through, in its transaction (see the module docstring).
    Rows not claimed (a caller screening queued rows to see what would happen) have nothing to hold."""
    ids = [m.id for m in messages if _attr(m, "claim_token") is not None]
    if not ids:
        return
    for chunk in _slices(ids):
        Message.objects.filter(AnyOf("id", chunk), status=MessageStatus.SENDING).update(screened_at=now)


def _attr(message, name: str, default=None):
    return getattr(message, name, default)


def messages_screen(*, messages: Iterable[ScreenedMessage], now: datetime) -> list[Decision]:
    """One decision per message, in the order given (see the module docstring for the rules)."""
    if timezone.is_naive(now):
        raise ValueError("now must be an aware datetime")
    messages = list(messages)
    if not messages:
        return []
    decided: dict[int, Decision] = {}

    customer_ids = sorted({m.customer_id for m in messages})
    channels = {m.channel for m in messages}
    customers = _customers(customer_ids, channels)
    delivery = DeliverySettings.current()
    quiet_channels = set(delivery.quiet_channels or [])
    clocks: dict[str, _ZoneClock] = {}

    def clock_for(customer: _Customer) -> _ZoneClock:
        clock = clocks.get(customer.zone_name)
        if clock is None:
            clock = clocks[customer.zone_name] = _ZoneClock(_zone(customer.zone_name), now, delivery)
        return clock

    # Addresses: a test send goes to the address it carries (a staff member's), falling back to the
    # customer's; every other message to the customer's current address, so that one deferred yesterday
    # goes where the customer now says.
    address_of: dict[int, tuple[str, str]] = {}  # message id -> (address, problem)
    for m in messages:
        customer = customers.get(m.customer_id)
        raw = ""
        if m.purpose == MessagePurpose.TEST:
            raw = _attr(m, "address", "") or ""
        if not raw and customer is not None:
            raw = customer.raw_addresses.get(m.channel, "")
        if not raw.strip():
            address_of[m.id] = ("", "no_address")
        else:
            address_of[m.id] = address_check(m.channel, raw)

    def suppress(m, reason: str, **params) -> None:
        decided[m.id] = Decision(m.id, SUPPRESS, None, reason, params, address_of[m.id][0])

    checked = []  # what passed the per-message checks and still needs consent and the suppression list
    for m in messages:
        address, problem = address_of[m.id]
        if m.purpose == MessagePurpose.TEST:
            if problem == "no_address":
                suppress(m, "no_address", channel=m.channel)
            elif problem:
                suppress(m, "invalid_address", channel=m.channel, address=address, problem=problem)
            else:
                decided[m.id] = Decision(m.id, SEND, address=address)
            continue
        expires_at = _attr(m, "expires_at")
        customer = customers.get(m.customer_id)
        if expires_at is not None and expires_at <= now:
            suppress(m, "expired")
        elif customer is None or customer.erased:
            suppress(m, "customer_erased")
        else:
            checked.append(m)

    opted_in = _opted_in(sorted({m.customer_id for m in checked}), {m.channel for m in checked})
    consented = []
    for m in checked:
        address, problem = address_of[m.id]
        if (m.customer_id, m.channel) not in opted_in:
            suppress(m, "no_consent", channel=m.channel)
        elif problem == "no_address":
            suppress(m, "no_address", channel=m.channel)
        elif problem:
            suppress(m, "invalid_address", channel=m.channel, address=address, problem=problem)
        else:
            consented.append(m)

    suppressed = _suppressed({(m.channel, address_of[m.id][0]) for m in consented})
    marketing = []
    for m in consented:
        address = address_of[m.id][0]
        why = suppressed.get((m.channel, address))
        if why is not None:
            suppress(m, "suppressed_address", why=why)
        elif m.purpose == MessagePurpose.TRANSACTIONAL:
            decided[m.id] = Decision(m.id, SEND, address=address)
        else:
            marketing.append(m)

    def defer(m, until: datetime, reason: str, clock: _ZoneClock, **params) -> None:
        expires_at = _attr(m, "expires_at")
        if expires_at is not None and until > expires_at:
            # It would wait past its end: say so now rather than keep it to fail later.
            suppress(m, "expired", deferred_by=reason, until=clock.local_text(until))
            return
        params["until"] = clock.local_text(until)
        decided[m.id] = Decision(m.id, DEFER, until, reason, params, address_of[m.id][0])

    def quiet_applies(m) -> bool:
        return not quiet_channels or m.channel in quiet_channels

    capped_candidates = []
    for m in marketing:
        clock = clock_for(customers[m.customer_id])
        if clock.quiet_now is not None and quiet_applies(m):
            defer(m, clock.quiet_now, "quiet_hours", clock, time_zone=clock.zone.key)
        else:
            capped_candidates.append(m)

    caps = list(FrequencyCap.objects.filter(active=True).order_by("channel", "period", "pk"))
    if not caps:
        for m in capped_candidates:
            decided[m.id] = Decision(m.id, SEND, address=address_of[m.id][0])
        return [decided[m.id] for m in messages]

    capped_ids = sorted({m.customer_id for m in capped_candidates})
    with transaction.atomic():
        _cap_locks(capped_ids)
        winners = _caps_decide(
            capped_candidates,
            caps,
            customers,
            clock_for,
            quiet_applies,
            send=lambda m: decided.__setitem__(m.id, Decision(m.id, SEND, address=address_of[m.id][0])),
            suppress=suppress,
            defer=defer,
            now=now,
        )
        _slots_hold(winners, now)
    return [decided[m.id] for m in messages]


def _caps_decide(capped_candidates, caps, customers, clock_for, quiet_applies, *, send, suppress, defer, now):
    """Step 7 of the module docstring, under the customers' cap locks: decide every candidate (through
    `send`, `suppress`, `defer`) and return the messages let through."""
    capped_ids = sorted({m.customer_id for m in capped_candidates})
    periods = {cap.period for cap in caps}
    sent = _sent_counts(
        capped_ids,
        {pk: customers[pk].zone_name for pk in capped_ids},
        {customers[pk].zone_name: clock_for(customers[pk]) for pk in capped_ids},
        periods,
        now,
    )
    for key, n in _slots_in_flight(capped_ids, {m.id for m in capped_candidates}).items():
        counts = sent.setdefault(key, {period: 0 for period in periods})
        for period in periods:
            counts[period] = counts.get(period, 0) + n

    sent_all: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for (pk, _channel), counts in sent.items():
        for period, n in counts.items():
            sent_all[pk][period] += n

    by_customer: dict[int, list] = defaultdict(list)
    for m in capped_candidates:
        by_customer[m.customer_id].append(m)

    far_past = datetime.min.replace(tzinfo=UTC)
    let_through: list = []
    for customer_id, candidates in by_customer.items():
        clock = clock_for(customers[customer_id])
        candidates.sort(key=lambda m: (-(_attr(m, "priority", 0) or 0), _attr(m, "due_at") or far_past, m.id))
        winners: list = []
        for m in candidates:
            priority = _attr(m, "priority", 0) or 0
            full = []  # (cap, higher-priority winners of this batch that count on it)
            for cap in caps:
                if cap.channel and cap.channel != m.channel:
                    continue
                if cap.channel:
                    used = sent.get((customer_id, cap.channel), {}).get(cap.period, 0)
                else:
                    used = sent_all.get(customer_id, {}).get(cap.period, 0)
                on_cap = [w for w in winners if not cap.channel or w.channel == cap.channel]
                if used + len(on_cap) >= cap.limit:
                    full.append((cap, [w for w in on_cap if (_attr(w, "priority", 0) or 0) > priority]))
            if not full:
                winners.append(m)
                let_through.append(m)
                send(m)
                continue
            # The cap that frees last decides when the message may go.
            applies = quiet_applies(m)
            cap, _higher = max(full, key=lambda item: clock.next_slot(item[0].period, applies))
            until = clock.next_slot(cap.period, applies)
            higher = [w for _cap, ws in full for w in ws]
            drop = (_attr(m, "on_cap", OnCap.DEFER) or OnCap.DEFER) == OnCap.DROP
            if higher:
                best = max(higher, key=lambda w: _attr(w, "priority", 0) or 0)
                than = _attr(best, "source_label", "") or f"#{best.id}"
                if drop:
                    suppress(m, "lower_priority", than=than)
                else:
                    defer(m, until, "lower_priority", clock, than=than)
                continue
            params = {"limit": cap.limit, "period": cap.period}
            if cap.channel:
                params["channel"] = cap.channel
            if drop:
                suppress(m, "capped" if cap.channel else "capped_all", **params)
            else:
                defer(m, until, "capped_deferred" if cap.channel else "capped_all_deferred", clock, **params)
    return let_through
