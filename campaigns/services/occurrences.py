"""The one dispatcher of scheduled campaigns: beat wakes `campaign_occurrences_dispatch` (a thin task in
campaigns/tasks.py, entry in campaigns/schedule.py), which

1. for every recurring campaign that is scheduled (or sending an earlier occurrence), works out the
   occurrences due since its last one (campaigns/recurrence.py) and writes each as a CampaignRun, the
   unique (campaign, occurrence) key making a second dispatcher, a retried task or a re-run of the same
   occurrence a no-op; occurrences older than the catch-up window are written as cancelled runs with
   the code "occurrence_missed", so the history shows what did not go out and why;
2. a recurring campaign's run never started within the window (the workers were down too) is missed;
3. the pass over runs (campaign_runs_dispatch) queues a start (campaign_run_start, a thin task)
   for every due run, these and the once-only runs campaign_approve made alike, takes over a start whose
   lease lapsed and settles finished runs. The start is leased and idempotent.

Never a PeriodicTask per campaign: due work is rows (DESIGN.md §5).
"""

from __future__ import annotations

import datetime
import time
import zoneinfo
from dataclasses import dataclass

from django.conf import settings
from django.db import transaction
from django.db.models import Q

from campaigns.models import (
    CalendarDate,
    Campaign,
    CampaignRun,
    CampaignStatus,
    RunStatus,
    ScheduleKind,
)
from campaigns.recurrence import (
    Occurrence,
    RecurrenceError,
    ScheduleSpec,
    occurrences_plan,
)
from campaigns.services.campaigns import campaign_runs_dispatch
from crm.clock import business_time_zone
from crm.models import Customer

MISSED = "occurrence_missed"
INVALID_SCHEDULE = "schedule_invalid"

# The zone whose clock is furthest ahead (UTC+14): no customer reaches a wall time before it does, so a
# local campaign not yet due there is not due anywhere and the customers' zones need not be read.
_EARLIEST_POSSIBLE_ZONE = zoneinfo.ZoneInfo("Etc/GMT-14")

# A recurring campaign keeps producing occurrences while scheduled and while an earlier one sends.
_ACTIVE = (CampaignStatus.SCHEDULED, CampaignStatus.SENDING)


@dataclass(frozen=True)
class DispatchResult:
    created: tuple[int, ...]  # ids of the runs created to be sent
    missed: int  # occurrences recorded as missed (never written, or written and never started)
    started: tuple[int, ...]  # ids of the runs whose start was queued


def catch_up_window() -> datetime.timedelta:
    return datetime.timedelta(seconds=settings.CAMPAIGN_CATCH_UP_SECONDS)


# customer_time_zones() is a DISTINCT over every customer: between the moment the furthest-ahead zone
# reaches a local campaign's wall time and the moment the earliest customer zone does (hours), every wake
# would repeat it. Zones change rarely, so each process keeps them for ZONES_TTL_SECONDS: a customer in a
# new, earlier zone waits at most that long for a local run that only their zone has reached.
ZONES_TTL_SECONDS = 300.0
_zones_cache: dict[str, tuple[float, tuple[zoneinfo.ZoneInfo, ...]]] = {}


def customer_time_zones_cached() -> tuple[zoneinfo.ZoneInfo, ...]:
    from django.db import connection

    key = connection.settings_dict.get("NAME") or ""
    cached = _zones_cache.get(key)
    if cached is None or time.monotonic() - cached[0] > ZONES_TTL_SECONDS:
        cached = (time.monotonic(), customer_time_zones())
        _zones_cache[key] = cached
    return cached[1]


def customer_time_zones_forget() -> None:
    _zones_cache.clear()


def customer_time_zones() -> tuple[zoneinfo.ZoneInfo, ...]:
    """Every zone customers have (one DISTINCT over customers, read only when a local campaign may be
    due); the business zone when there are none. A zone nobody is in does not make a run early."""
    names = set(Customer.objects.order_by().values_list("time_zone", flat=True).distinct())
    zones = set()
    for name in names:
        try:
            zones.add(zoneinfo.ZoneInfo(name or business_time_zone().key))
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            zones.add(business_time_zone())  # validated on write; a bad legacy value gets the brand's
    return tuple(sorted(zones, key=str)) or (business_time_zone(),)


def schedule_spec(campaign: Campaign) -> ScheduleSpec:
    return ScheduleSpec(
        recurrence_kind=campaign.recurrence_kind,
        cron=campaign.cron,
        interval=campaign.interval,
        anchor=campaign.send_at or campaign.approved_at or campaign.created_at,
        calendar_code=campaign.calendar_code,
        calendar_offset_days=campaign.calendar_offset_days,
        send_time=campaign.send_time,
        local_time=campaign.local_time,
        ends_at=campaign.ends_at,
    )


def _run_row(campaign: Campaign, occurrence: Occurrence, *, now, status, error_code="", params=None):
    return CampaignRun(
        campaign=campaign,
        occurrence=occurrence.key,
        due_at=occurrence.due_at,
        local_date=occurrence.local_date,
        local_time=occurrence.local_time,
        status=status,
        created_at=now,
        finished_at=now if status == RunStatus.CANCELLED else None,
        error_code=error_code,
        error_params=params or {},
    )


def campaign_occurrences_create(*, now: datetime.datetime) -> tuple[list[int], int]:
    """Step 1: the runs of recurring campaigns' due occurrences. Returns (new run ids, missed count)."""
    business_zone = business_time_zone()
    window = catch_up_window()
    zones_cache: list[tuple[zoneinfo.ZoneInfo, ...]] = []

    def zones() -> tuple[zoneinfo.ZoneInfo, ...]:
        if not zones_cache:
            zones_cache.append(customer_time_zones_cached())
        return zones_cache[0]

    created: list[int] = []
    missed = 0
    with transaction.atomic():
        # SKIP LOCKED: a second dispatcher (beat firing twice, a retry) passes over the campaigns this one
        # holds instead of waiting; a campaign being paused or edited is picked up on the next wake.
        campaigns = list(
            Campaign.objects.select_for_update(skip_locked=True, of=("self",))
            .filter(schedule_kind=ScheduleKind.RECURRING, status__in=_ACTIVE)
            .filter(Q(ends_at__isnull=True) | Q(ends_at__gte=now - window))
            .order_by("pk")
        )
        if not campaigns:
            return [], 0
        last = {
            campaign_id: (due, local_date, local_time)
            for campaign_id, due, local_date, local_time in CampaignRun.objects.filter(campaign__in=campaigns)
            .order_by("campaign_id", "-due_at")
            .distinct("campaign_id")
            .values_list("campaign_id", "due_at", "local_date", "local_time")
        }
        codes = {c.calendar_code for c in campaigns if c.recurrence_kind == "calendar" and c.calendar_code}
        dates: dict[str, list[datetime.date]] = {}
        for code, day in CalendarDate.objects.filter(code__in=codes).values_list("code", "date"):
            dates.setdefault(code, []).append(day)

        rows: list[CampaignRun] = []
        for campaign in campaigns:
            spec = schedule_spec(campaign)
            last_due, last_date, last_time = last.get(campaign.pk, (None, None, None))
            after = last_due or campaign.approved_at or campaign.created_at
            after_wall = datetime.datetime.combine(last_date, last_time) if last_date and last_time else None
            calendar_dates = dates.get(campaign.calendar_code, ())
            try:
                if spec.local_time:
                    probe = occurrences_plan(
                        spec, after=after, now=now, catch_up=window, zones=(_EARLIEST_POSSIBLE_ZONE,),
                        business_zone=business_zone, calendar_dates=calendar_dates, after_wall=after_wall,
                    )  # fmt: skip
                    if probe.run is None and not probe.missed:
                        continue
                plan = occurrences_plan(
                    spec, after=after, now=now, catch_up=window, zones=zones(),
                    business_zone=business_zone, calendar_dates=calendar_dates, after_wall=after_wall,
                )  # fmt: skip
            except RecurrenceError:
                # Validated by the form; a schedule broken behind its back (a shell edit) is skipped,
                # not allowed to stop every other campaign's occurrences.
                continue
            for occurrence in plan.missed:
                late = int((now - occurrence.due_at).total_seconds())
                rows.append(
                    _run_row(
                        campaign, occurrence, now=now, status=RunStatus.CANCELLED, error_code=MISSED,
                        params={"late_seconds": late, "window_seconds": int(window.total_seconds())},
                    )
                )  # fmt: skip
            if plan.more_missed and rows:
                rows[-1].error_params["more_missed"] = True
            if plan.run is not None:
                rows.append(_run_row(campaign, plan.run, now=now, status=RunStatus.SCHEDULED))
        # ON CONFLICT DO NOTHING on (campaign, occurrence): an occurrence exists once, whoever wrote it.
        # bulk_create with ignore_conflicts returns rows without ids, so the new ones are read back.
        CampaignRun.objects.bulk_create(rows, ignore_conflicts=True)
        keys = [(r.campaign_id, r.occurrence) for r in rows if r.status == RunStatus.SCHEDULED]
        if keys:
            condition = Q()
            for campaign_id, occurrence in keys:
                condition |= Q(campaign_id=campaign_id, occurrence=occurrence)
            created = list(
                CampaignRun.objects.filter(condition, created_at=now, status=RunStatus.SCHEDULED).values_list(
                    "pk", flat=True
                )
            )
        missed = sum(1 for r in rows if r.status == RunStatus.CANCELLED)
    return created, missed


def runs_overdue_expire(*, now: datetime.datetime) -> int:
    """A recurring campaign's run that was never started within the catch-up window (the workers were
    down too) is missed like an occurrence the dispatcher missed: today's 9:00 greeting does not go out
    at 15:00. A once-only run is started however late: nothing else would ever send it."""
    window = catch_up_window()
    return CampaignRun.objects.filter(
        status=RunStatus.SCHEDULED,
        due_at__lt=now - window,
        campaign__schedule_kind=ScheduleKind.RECURRING,
    ).update(
        status=RunStatus.CANCELLED,
        finished_at=now,
        error_code=MISSED,
        error_params={"window_seconds": int(window.total_seconds()), "not_started": True},
    )


def campaign_occurrences_dispatch(*, now: datetime.datetime) -> DispatchResult:
    """One wake of the dispatcher (see the module's docstring): the occurrences' runs, the overdue ones
    missed, then the pass over runs (start the due ones through the start task, take over a
    lapsed start lease, settle the finished ones)."""
    created, missed = campaign_occurrences_create(now=now)
    missed += runs_overdue_expire(now=now)
    passed = campaign_runs_dispatch(now=now)
    return DispatchResult(created=tuple(created), missed=missed, started=tuple(passed["started"]))


# --- Validation of the schedule fields (the campaign form, the API) ---------------------------------

MIN_INTERVAL = datetime.timedelta(hours=1)
MAX_CALENDAR_OFFSET_DAYS = 60


def campaign_schedule_problems(*, values: dict, now: datetime.datetime) -> dict[str, str]:
    """What is wrong with a campaign's schedule fields, as {field: translated message} (empty: fine).
    `values` holds the Campaign field names (a form's cleaned_data)."""
    from django.utils.translation import gettext as _

    problems: dict[str, str] = {}
    kind = values.get("schedule_kind")
    send_at, ends_at = values.get("send_at"), values.get("ends_at")
    if kind == ScheduleKind.AT and not send_at:
        problems["send_at"] = _("Say when to send.")
    if kind != ScheduleKind.RECURRING:
        return problems
    recurrence = values.get("recurrence_kind")
    if not recurrence:
        problems["recurrence_kind"] = _("Choose how the campaign recurs.")
    elif recurrence == "cron":
        try:
            from campaigns.recurrence import cron_parse

            cron_parse(values.get("cron") or "")
        except RecurrenceError as exc:
            problems["cron"] = exc.message
    elif recurrence == "interval":
        interval = values.get("interval")
        if interval is None or interval < MIN_INTERVAL:
            problems["interval"] = _(
                "Give an interval of at least one hour (frequency caps apply on top of it)."
            )
    elif recurrence == "calendar":
        code = values.get("calendar_code") or ""
        offset = values.get("calendar_offset_days") or 0
        if not values.get("send_time"):
            problems["send_time"] = _("A calendar schedule needs a send time.")
        if abs(offset) > MAX_CALENDAR_OFFSET_DAYS:
            problems["calendar_offset_days"] = _("At most %(n)d days before or after the date.") % {
                "n": MAX_CALENDAR_OFFSET_DAYS
            }
        if not CalendarDate.objects.filter(code=code).exists():
            problems["calendar_code"] = _("“%(code)s” is not in the marketing calendar.") % {"code": code}
        elif not CalendarDate.objects.filter(
            code=code, date__gte=(now + datetime.timedelta(days=-offset - 1)).date()
        ).exists():
            problems["calendar_code"] = _(
                "The marketing calendar has no coming date for “%(code)s”: add next year’s date first."
            ) % {"code": code}
    if ends_at and ends_at <= max(filter(None, [send_at, now])):
        problems["ends_at"] = _("The end must be later than the start and than now.")
    return problems


def _duration_words(seconds: int) -> str:
    from django.utils.translation import gettext as _

    hours, minutes = divmod(max(int(seconds), 0) // 60, 60)
    return _("%(hours)d h %(minutes)02d min") % {"hours": hours, "minutes": minutes}


def run_error_message(run: CampaignRun) -> str:
    """A run's error code and parameters in the reader's language, for the codes this module writes
    ("" for others: the campaign pages put their own codes into words)."""
    from django.utils.translation import gettext as _

    if run.error_code != MISSED:
        return ""
    params = run.error_params or {}
    window = _duration_words(params.get("window_seconds", 0))
    if params.get("not_started"):
        text = _("Not sent: it was not started within the catch-up window (%(window)s).") % {"window": window}
    else:
        text = _(
            "Not sent: the dispatcher reached this occurrence %(late)s after its time, past the catch-up "
            "window (%(window)s)."
        ) % {"late": _duration_words(params.get("late_seconds", 0)), "window": window}
    if params.get("more_missed"):
        text += " " + _("Further occurrences were missed as well and are not listed.")
    return text
