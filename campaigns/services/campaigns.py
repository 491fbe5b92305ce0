"""Campaigns: prepare, submit, approve and schedule, start a run, pause, resume and cancel it, and settle it
as sent or partly delivered once every message has a final status.

A run's start (`campaign_run_start`) is set-based SQL over the audience, never a query per customer:

1. the lease: one conditional UPDATE makes the run `starting` under a fresh token; a second start (a
   retried task, a double click, a second beat) finds it taken, or over, and does nothing. A worker killed
   midway leaves a lapsing lease that `campaign_runs_dispatch` takes over.
2. one transaction, with the run's row locked (pause and cancel wait for it): the audience frozen (a
   segment's snapshot, or the static list, or everyone with consent on the channel) less the exclusions,
   each customer's arm and phase from a hash of the campaign and customer ids (`arm_assign` is the same
   arithmetic in Python), the recipients by INSERT ... SELECT, the messages by INSERT ... SELECT ... ON
   CONFLICT DO NOTHING under the outbox's unique key (customer, "campaign", campaign id, run id). A kill
   before the commit leaves nothing behind; a second start after it finds every key taken.

The outbox's rules (consent, suppression, caps, quiet hours) run at dispatch, as for every message.

PostgreSQL only (md5 in SQL, the run counts' triggers): on the embedded SQLite demo a start says so."""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.db import connection, transaction
from django.db.models import Count, Q
from django.db.models.functions import Now
from django.utils.translation import gettext, gettext_noop

from campaigns.models import (
    HOLDOUT_ARM,
    AudienceKind,
    Campaign,
    CampaignRecipient,
    CampaignRun,
    CampaignStatus,
    CampaignVariant,
    MessageStatus,
    RunPhase,
    RunStatus,
    ScheduleKind,
)
from campaigns.models.outbox import DUE_STATUSES, FINAL_STATUSES
from crm.models import ConsentStatus, Customer, SegmentSnapshotMember, StaticListMember
from crm.segments.selectors import segment_customers
from crm.segments.services import segment_snapshot_create
from crm.segments.sql import segment_query_settings
from crm.task_queue import task_queue_on_commit

START_TASK = "campaigns.tasks.campaign_run_start"
APPROVE_PERMISSION = "campaigns.approve_campaign"
# A start is one transaction of a few seconds per million recipients; the lease outlasts it by far, and a
# killed start is taken over by the dispatcher once it lapses.
START_LEASE = timedelta(minutes=5)
# Where a paused message waits: never due, finite so that every reader can load it as a datetime.
PAUSED_UNTIL = datetime(9999, 1, 1, tzinfo=UTC)
PAUSE_REASON = "campaign_paused"
CANCEL_REASON = "source_cancelled"
_HASH_SPACE = 2**32
_PENDING = tuple(str(s) for s in DUE_STATUSES) + (str(MessageStatus.SENDING),)


class CampaignError(Exception):
    """A campaign or run cannot do what was asked (wrong status, invalid set-up): a code with parameters,
    put into words in the reader's language by `message`."""

    MESSAGES = {
        "not_postgresql": gettext_noop("Starting a campaign needs PostgreSQL (DATABASE_URL)."),
        "wrong_status": gettext_noop("The campaign is %(status)s: it cannot be %(action)s now."),
        "no_variants": gettext_noop("Add at least one variant (a template) before submitting."),
        "weights": gettext_noop("The variants' splits must add up to 100%% (they add up to %(total)s%%)."),
        "no_segment": gettext_noop("Choose the segment to send to."),
        "no_static_list": gettext_noop("Choose the static list to send to."),
        "no_send_at": gettext_noop("Choose when to send it."),
        "exclude_days": gettext_noop("Say over how many days the excluded campaign's messages count."),
        "variant_channel": gettext_noop("Variant %(key)s's template is for %(template)s, not %(channel)s."),
        "not_allowed": gettext_noop("You may not approve campaigns."),
    }

    def __init__(self, code: str, **params):
        super().__init__(code)
        self.code = code
        self.params = params

    @property
    def message(self) -> str:
        return gettext(self.MESSAGES[self.code]) % {k: str(v) for k, v in self.params.items()}

    def __str__(self) -> str:
        return self.message


# --- Preparing and approving -------------------------------------------------------------------------


def campaign_problems(
    campaign: Campaign, variants: list[CampaignVariant] | None = None
) -> list[CampaignError]:
    """What keeps the campaign from being submitted or approved, for the form and the services alike."""
    problems = []
    if campaign.audience_kind == AudienceKind.SEGMENT and not campaign.segment_id:
        problems.append(CampaignError("no_segment"))
    if campaign.audience_kind == AudienceKind.STATIC_LIST and not campaign.static_list_id:
        problems.append(CampaignError("no_static_list"))
    if campaign.schedule_kind == ScheduleKind.AT and not campaign.send_at:
        problems.append(CampaignError("no_send_at"))
    if campaign.exclude_campaign_id and not campaign.exclude_campaign_days:
        problems.append(CampaignError("exclude_days"))
    if variants is None:
        variants = list(campaign.variants.select_related("template")) if campaign.pk else []
    if not variants:
        problems.append(CampaignError("no_variants"))
    else:
        total = sum(v.weight or 0 for v in variants)
        if total != 100:
            problems.append(CampaignError("weights", total=total))
        for v in variants:
            channel = v.channel or campaign.channel
            if v.template_id and v.template.channel != channel:
                problems.append(
                    CampaignError("variant_channel", key=v.key, template=v.template.channel, channel=channel)
                )
    return problems


def _transition(campaign: Campaign, allowed: tuple, action: str) -> None:
    if campaign.status not in allowed:
        raise CampaignError("wrong_status", status=campaign.get_status_display(), action=gettext(action))


@transaction.atomic
def campaign_submit(*, campaign: Campaign, by) -> Campaign:
    """A marketer hands the prepared campaign over for approval."""
    campaign = Campaign.objects.select_for_update().get(pk=campaign.pk)
    _transition(campaign, (CampaignStatus.DRAFT,), gettext_noop("submitted"))
    problems = campaign_problems(campaign)
    if problems:
        raise problems[0]
    campaign.status = CampaignStatus.AWAITING_APPROVAL
    campaign._change_reason = "submitted"
    campaign.save(update_fields=["status", "updated_at"])
    return campaign


@transaction.atomic
def campaign_approve(*, campaign: Campaign, by, now: datetime) -> Campaign:
    """Someone with the approve permission approves and schedules it: a once-only campaign gets its run
    ("once", due now or at send_at); a recurring one's runs are made by the schedule's dispatcher."""
    if not by.has_perm(APPROVE_PERMISSION):
        raise PermissionDenied(CampaignError("not_allowed").message)
    campaign = Campaign.objects.select_for_update().get(pk=campaign.pk)
    _transition(campaign, (CampaignStatus.DRAFT, CampaignStatus.AWAITING_APPROVAL), gettext_noop("approved"))
    problems = campaign_problems(campaign)
    if problems:
        raise problems[0]
    campaign.status = CampaignStatus.SCHEDULED
    campaign.approved_by = by
    campaign.approved_at = now
    campaign._change_reason = "approved"
    campaign.save(update_fields=["status", "approved_by", "approved_at", "updated_at"])
    if campaign.schedule_kind in (ScheduleKind.NOW, ScheduleKind.AT):
        due = now if campaign.schedule_kind == ScheduleKind.NOW else max(campaign.send_at, now)
        run, _ = CampaignRun.objects.get_or_create(
            campaign=campaign, occurrence="once", defaults={"due_at": due, "created_at": now}
        )
        if run.due_at <= now:
            task_queue_on_commit(START_TASK, run.pk)
    return campaign


# --- Arms --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Thresholds:
    """The hash cut-offs of one campaign's assignment, integers over [0, 2**32), computed once here and
    passed to the SQL, so Python (`arm_assign`) and PostgreSQL agree exactly."""

    holdout: int
    test: int  # below: the test phase; 0 when there is no automatic winner (everyone is phase "all")
    arms: tuple[tuple[str, int], ...]  # (key, upper bound), ascending


def _cut(percent: Decimal | int) -> int:
    return int(Decimal(percent) * _HASH_SPACE / 100)


def thresholds(campaign: Campaign, variants: list[CampaignVariant]) -> Thresholds:
    variants = sorted(variants, key=lambda v: v.key)
    total = sum(v.weight for v in variants) or 1
    arms, running = [], 0
    for v in variants:
        running += v.weight
        arms.append((v.key, running * _HASH_SPACE // total))
    return Thresholds(
        holdout=_cut(campaign.holdout_percent), test=_cut(campaign.test_percent), arms=tuple(arms)
    )


def _hashes(campaign_id: int, customer_id: int) -> tuple[int, int, int]:
    digest = hashlib.md5(f"{campaign_id}:{customer_id}".encode()).hexdigest()
    return int(digest[0:8], 16), int(digest[8:16], 16), int(digest[16:24], 16)


def arm_assign(campaign_id: int, customer_id: int, t: Thresholds) -> tuple[str, str]:
    """(arm, phase) of one customer: three independent 32-bit slices of md5("campaign:customer") decide
    holdout or not, the arm, and test or rest. The rest's arm is the winner's, set when it is sent."""
    h_holdout, h_arm, h_test = _hashes(campaign_id, customer_id)
    phase = RunPhase.ALL if not t.test else (RunPhase.TEST if h_test < t.test else RunPhase.REST)
    if h_holdout < t.holdout:
        return HOLDOUT_ARM, str(phase)
    if phase == RunPhase.REST:
        return "", str(phase)
    for key, upper in t.arms:
        if h_arm < upper:
            return key, str(phase)
    return t.arms[-1][0], str(phase)


def _hash_slices_sql(h: str = "h") -> str:
    """The select list of the three 32-bit slices of `h` (md5 hex of "campaign:customer"), as columns
    h_holdout, h_arm and h_test. Selected once in a fenced subquery (OFFSET 0) under `_arm_sql`'s CASEs:
    flattened, PostgreSQL would compute the md5 and the slices again in every CASE branch that names
    them and again for every outer reference to the arm (see BENCHMARKS.md, campaign start)."""
    return ", ".join(
        f"('x' || substr({h}, {start}, 8))::bit(32)::bigint AS {name}"
        for name, start in (("h_holdout", 1), ("h_arm", 9), ("h_test", 17))
    )


def _arm_sql(t: Thresholds) -> tuple[str, str, list, list]:
    """SQL expressions for the arm and the phase over the columns of `_hash_slices_sql`, and each
    one's parameters."""
    if t.test:
        phase = "CASE WHEN h_test < %s THEN 'test' ELSE 'rest' END"
        phase_params = [t.test]
    else:
        phase, phase_params = "'all'", []
    cases = " ".join("WHEN h_arm < %s THEN %s" for _ in t.arms)
    arm_params = [p for key, upper in t.arms for p in (upper, key)]
    rest = "WHEN h_test >= %s THEN '' " if t.test else ""
    rest_params = [t.test] if t.test else []
    arm = f"CASE WHEN h_holdout < %s THEN '{HOLDOUT_ARM}' {rest}{cases} ELSE %s END"
    return arm, phase, [t.holdout, *rest_params, *arm_params, t.arms[-1][0]], phase_params


# --- Starting a run ----------------------------------------------------------------------------------


def _pg() -> bool:
    return connection.vendor == "postgresql"


def _claim(run_id: int, now: datetime) -> uuid.UUID | None:
    token = uuid.uuid4()
    claimed = (
        CampaignRun.objects.filter(pk=run_id, status__in=[RunStatus.SCHEDULED, RunStatus.STARTING])
        .filter(Q(claim_token__isnull=True) | Q(claimed_until__lt=Now()))
        .update(
            status=RunStatus.STARTING,
            claim_token=token,
            claimed_until=Now() + START_LEASE,
            heartbeat_at=Now(),
        )
    )
    return token if claimed else None


def _audience_sql(campaign: Campaign, run: CampaignRun, now: datetime) -> tuple[str, list, int]:
    """SELECT customer_id of the frozen audience (before exclusions), its parameters, and its size."""
    if campaign.audience_kind == AudienceKind.SEGMENT:
        snapshot = segment_snapshot_create(
            segment=campaign.segment, purpose=f"campaign {campaign.pk} run {run.pk}", now=now
        )
        run.snapshot = snapshot
        table = SegmentSnapshotMember._meta.db_table
        return f"SELECT customer_id FROM {table} WHERE snapshot_id = %s", [snapshot.pk], snapshot.member_count
    if campaign.audience_kind == AudienceKind.STATIC_LIST:
        table = StaticListMember._meta.db_table
        size = StaticListMember.objects.filter(static_list_id=campaign.static_list_id).count()
        return f"SELECT customer_id FROM {table} WHERE static_list_id = %s", [campaign.static_list_id], size
    from crm.models import Consent

    consents = Consent.objects.filter(channel=campaign.channel, status=ConsentStatus.OPTED_IN)
    return (
        f"SELECT customer_id FROM {Consent._meta.db_table} WHERE channel = %s AND status = %s",
        [campaign.channel, ConsentStatus.OPTED_IN],
        consents.count(),
    )


def _exclusions_sql(campaign: Campaign, now: datetime) -> tuple[str, list]:
    """AND NOT EXISTS (...) clauses over `a.customer_id` (anti-joins: PostgreSQL hashes each set once)."""
    clauses, params = [], []
    for segment in campaign.exclude_segments.all():
        sql, p = segment_customers(segment=segment, now=now).order_by().values("id").query.sql_with_params()
        clauses.append(f"AND NOT EXISTS (SELECT 1 FROM ({sql}) x WHERE x.id = a.customer_id)")
        params += list(p)
    if campaign.exclude_campaign_id and campaign.exclude_campaign_days:
        clauses.append(
            "AND NOT EXISTS (SELECT 1 FROM campaigns_message x WHERE x.customer_id = a.customer_id "
            "AND x.source_kind = 'campaign' AND x.source_ref = %s AND x.sent_at >= %s)"
        )
        params += [str(campaign.exclude_campaign_id), now - timedelta(days=campaign.exclude_campaign_days)]
    return " ".join(clauses), params


def _recipients_insert(campaign, run, variants, now) -> tuple[int, int]:
    """Insert the run's recipients; returns (audience size before exclusions, recipients inserted)."""
    audience, audience_params, size = _audience_sql(campaign, run, now)
    exclusions, exclusion_params = _exclusions_sql(campaign, now)
    arm, phase, arm_params, phase_params = _arm_sql(thresholds(campaign, variants))
    customers = Customer._meta.db_table
    sql = (
        f"INSERT INTO {CampaignRecipient._meta.db_table} (run_id, customer_id, arm, phase, enqueued) "
        "SELECT %s, customer_id, arm, phase, arm <> '' AND arm <> %s AND phase <> 'rest' FROM ("
        f"  SELECT customer_id, {arm} AS arm, {phase} AS phase FROM ("
        f"    SELECT customer_id, {_hash_slices_sql()} FROM ("
        "      SELECT a.customer_id, md5(%s || ':' || a.customer_id) AS h "
        f"      FROM (SELECT DISTINCT customer_id FROM ({audience}) s) a "
        f"      JOIN {customers} c ON c.id = a.customer_id AND c.erased_at IS NULL "
        f"      WHERE TRUE {exclusions} OFFSET 0"
        "    ) hashed OFFSET 0"
        "  ) sliced OFFSET 0"
        ") assigned ORDER BY customer_id ON CONFLICT (run_id, customer_id) DO NOTHING"
    )
    params = [
        run.pk,
        HOLDOUT_ARM,
        *arm_params,
        *phase_params,
        str(campaign.pk),
        *audience_params,
        *exclusion_params,
    ]
    with segment_query_settings(), connection.cursor() as cursor:
        cursor.execute(sql, params)
        return size, cursor.rowcount


def _messages_insert(*, campaign, run, phase: str, variant_key: str | None, now: datetime) -> int:
    """Queue one message per enqueued recipient of `phase` (not the holdout), set-based, under the outbox's
    key; a recipient whose message already exists gets nothing new (ON CONFLICT DO NOTHING)."""
    history = json.dumps([{"status": "queued", "at": now.isoformat(), "reason": "", "params": {}}])
    # A recurring local run carries its own wall time (a cron's 9:00); an "at" local one uses send_time.
    local_wall = run.local_time or campaign.send_time
    if campaign.local_time and run.local_date and local_wall:
        # Each customer's own zone (the business zone when blank): PostgreSQL applies the zone's offset on
        # that date, summer time included. A wall time in a spring-forward gap is read on the old
        # offset, as campaigns/recurrence.py's wall_to_utc does, so the run's due_at and its messages agree.
        due = "((%s::date + %s::time) AT TIME ZONE COALESCE(NULLIF(c.time_zone, ''), %s))"
        due_params = [run.local_date, local_wall, settings.TIME_ZONE]
    else:
        due, due_params = "%s::timestamptz", [run.due_at]
    # The customers' table is read only for their zones: a start that is not "local" never probes it.
    customers_join = (
        f"JOIN {Customer._meta.db_table} c ON c.id = r.customer_id " if "c.time_zone" in due else ""
    )
    arm_match = "v.key = %s" if variant_key else "v.key = r.arm"
    arm_params = [variant_key] if variant_key else []
    sql = (
        "INSERT INTO campaigns_message (customer_id, channel, purpose, source_kind, source_ref, occurrence, "
        "source_label, payload_fingerprint, template_id, language, data, priority, on_cap, status, due_at, "
        "address, history, reason, reason_params, attempts, provider, provider_message_id, error_code, "
        "error_detail, subject, created_at) "
        "SELECT r.customer_id, COALESCE(NULLIF(v.channel, ''), %s), 'marketing', 'campaign', %s, %s, "
        "%s, '', v.template_id, '', '{}'::jsonb, %s, %s, 'queued', "
        f"{due} + COALESCE(v.send_delay, interval '0'), '', %s::jsonb, '', '{{}}'::jsonb, 0, '', '', '', "
        "'', '', %s "
        f"FROM {CampaignRecipient._meta.db_table} r "
        f"JOIN {CampaignVariant._meta.db_table} v ON v.campaign_id = %s AND {arm_match} "
        f"{customers_join}"
        "WHERE r.run_id = %s AND r.phase = %s AND r.enqueued "
        "ORDER BY r.customer_id ON CONFLICT DO NOTHING"
    )
    params = [
        campaign.channel,
        str(campaign.pk),
        str(run.pk),
        campaign.name[:200],
        campaign.priority,
        campaign.on_cap,
        *due_params,
        history,
        now,
        campaign.pk,
        *arm_params,
        run.pk,
        phase,
    ]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        created = cursor.rowcount
        # The outbox's counts trigger counts updates and deletes only: on a million-row INSERT its
        # transition table would hold every new row (see BENCHMARKS.md, campaign start). Every message
        # queued here is "queued".
        cursor.execute(
            "INSERT INTO campaigns_campaignruncount (run_id, status, reason, n) VALUES (%s, 'queued', '', %s) "
            "ON CONFLICT (run_id, status, reason) DO UPDATE SET n = campaigns_campaignruncount.n + EXCLUDED.n",
            [run.pk, created],
        )
        return created


@contextmanager
def _hash_joins():
    """The recipients' statement reads the snapshot's members that this same transaction has just
    written: they have no statistics yet, so PostgreSQL estimates one row and plans nested loops, an index
    probe of the customers per member, twice (see BENCHMARKS.md, campaign start); its joins are over the
    whole audience, which hash joins do in one pass at any size. Put back after it: the messages'
    statement is best as the nested loop over the recipients' (run, customer) index, already in the
    order it inserts, where a hash join would sort every message (on disk at a million)."""
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_nestloop = off")
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL enable_nestloop = on")


@dataclass
class StartResult:
    started: bool
    audience: int = 0
    recipients: int = 0
    enqueued: int = 0
    seconds: dict | None = None  # each step's wall time, for the benchmark


def campaign_run_start(*, run: CampaignRun, now: datetime) -> StartResult:
    """Start a run (see the module docstring): leased, resumable, idempotent. Call outside a transaction:
    the lease must be visible to other workers at once."""
    if not _pg():
        raise CampaignError("not_postgresql")
    token = _claim(run.pk, now)
    if token is None:
        return StartResult(started=False)
    with transaction.atomic():
        run = CampaignRun.objects.select_for_update().select_related("campaign").get(pk=run.pk)
        if run.claim_token != token or run.status != RunStatus.STARTING:
            return StartResult(started=False)
        campaign = run.campaign
        variants = list(campaign.variants.all())
        clock = [time.perf_counter()]
        with _hash_joins():
            size, inserted = _recipients_insert(campaign, run, variants, now)
        clock.append(time.perf_counter())
        counts = dict(
            CampaignRecipient.objects.filter(run=run)
            .values("arm")
            .annotate(n=Count("id"))
            .values_list("arm", "n")
        )
        recipients = sum(counts.values())
        first_phase = RunPhase.TEST if campaign.test_percent else RunPhase.ALL
        enqueued = _messages_insert(campaign=campaign, run=run, phase=first_phase, variant_key=None, now=now)
        clock.append(time.perf_counter())
        run.audience_size = recipients
        run.holdout_size = counts.get(HOLDOUT_ARM, 0)
        run.treated_size = recipients - run.holdout_size
        run.excluded_size = max(size - recipients, 0)
        run.enqueued_size = enqueued
        run.phase = first_phase
        run.status = RunStatus.SENDING
        run.started_at = now
        run.claim_token = None
        run.claimed_until = None
        run.save()
        Campaign.objects.filter(pk=campaign.pk, status=CampaignStatus.SCHEDULED).update(
            status=CampaignStatus.SENDING
        )
    clock.append(time.perf_counter())
    steps = ("audience and recipients", "messages", "commit")
    seconds = {name: round(b - a, 3) for name, a, b in zip(steps, clock, clock[1:], strict=False)}
    return StartResult(started=True, audience=size, recipients=inserted, enqueued=enqueued, seconds=seconds)


def campaign_recipients_enqueue(*, run: CampaignRun, phase: str, variant_key: str | None = None, now) -> int:
    """Queue the messages of the recipients of `phase` (the automatic winner: phase "rest" with the
    winner's key, which becomes their arm). Idempotent: already-queued recipients get nothing new."""
    with transaction.atomic():
        run = CampaignRun.objects.select_for_update().select_related("campaign").get(pk=run.pk)
        if run.status in (RunStatus.CANCELLED, RunStatus.SENT, RunStatus.PARTIAL):
            raise CampaignError("wrong_status", status=run.get_status_display(), action=gettext("sent"))
        updates = {"enqueued": True}
        if variant_key:
            updates["arm"] = variant_key
        CampaignRecipient.objects.filter(run=run, phase=phase).exclude(arm=HOLDOUT_ARM).update(**updates)
        created = _messages_insert(
            campaign=run.campaign, run=run, phase=phase, variant_key=variant_key, now=now
        )
        if run.status == RunStatus.PAUSED:
            _withdraw_for_pause(run, now)
        CampaignRun.objects.filter(pk=run.pk).update(
            enqueued_size=run.enqueued_size + created, phase=phase if phase == RunPhase.REST else run.phase
        )
    return created


# --- Pause, resume, cancel ---------------------------------------------------------------------------


def _run_messages_update(run: CampaignRun, set_sql: str, where_sql: str, params: list) -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE campaigns_message SET {set_sql} WHERE {where_sql} "
            "AND source_kind = 'campaign' AND occurrence = %s",
            [*params, str(run.pk)],
        )
        return cursor.rowcount


def _withdraw_for_pause(run: CampaignRun, now: datetime) -> int:
    entry = json.dumps({"status": "deferred", "at": now.isoformat(), "reason": PAUSE_REASON, "params": {}})
    # The message's status, reason and due time are kept in its reason parameters, put back on resume.
    return _run_messages_update(
        run,
        "reason_params = jsonb_build_object('status', status, 'reason', reason, 'params', reason_params, "
        "'due_at', due_at), status = 'deferred', reason = %s, due_at = %s, "
        "history = history || jsonb_build_array(%s::jsonb)",
        "status IN ('queued', 'deferred') AND reason <> %s",
        [PAUSE_REASON, PAUSED_UNTIL, entry, PAUSE_REASON],
    )


def _locked_runs(campaign: Campaign, statuses) -> list[CampaignRun]:
    return list(CampaignRun.objects.select_for_update().filter(campaign=campaign, status__in=statuses))


@transaction.atomic
def campaign_pause(*, campaign: Campaign, by=None, now: datetime) -> int:
    """Hold what is still queued (a message being sent finishes); returns how many messages were held."""
    campaign = Campaign.objects.select_for_update().get(pk=campaign.pk)
    _transition(campaign, (CampaignStatus.SCHEDULED, CampaignStatus.SENDING), gettext_noop("paused"))
    held = 0
    for run in _locked_runs(campaign, [RunStatus.SCHEDULED, RunStatus.STARTING, RunStatus.SENDING]):
        if run.status == RunStatus.SENDING:
            held += _withdraw_for_pause(run, now)
        run.status = RunStatus.PAUSED
        run.save(update_fields=["status"])
    campaign.status = CampaignStatus.PAUSED
    campaign._change_reason = "paused"
    campaign.save(update_fields=["status", "updated_at"])
    return held


@transaction.atomic
def campaign_resume(*, campaign: Campaign, by=None, now: datetime) -> int:
    """Put the held messages back as they were (a due time already past is due now)."""
    campaign = Campaign.objects.select_for_update().get(pk=campaign.pk)
    _transition(campaign, (CampaignStatus.PAUSED,), gettext_noop("resumed"))
    entry = json.dumps({"status": "queued", "at": now.isoformat(), "reason": "", "params": {}})
    resumed, any_sending = 0, False
    for run in _locked_runs(campaign, [RunStatus.PAUSED]):
        if run.started_at is None:
            run.status = RunStatus.SCHEDULED
        else:
            any_sending = True
            run.status = RunStatus.SENDING
            resumed += _run_messages_update(
                run,
                "status = reason_params->>'status', reason = reason_params->>'reason', "
                "due_at = GREATEST((reason_params->>'due_at')::timestamptz, %s), "
                "reason_params = COALESCE(reason_params->'params', '{}'::jsonb), "
                "history = history || jsonb_build_array(%s::jsonb)",
                "status = 'deferred' AND reason = %s",
                [now, entry, PAUSE_REASON],
            )
        run.save(update_fields=["status"])
        if run.status == RunStatus.SCHEDULED and run.due_at <= now:
            task_queue_on_commit(START_TASK, run.pk)
    campaign.status = CampaignStatus.SENDING if any_sending else CampaignStatus.SCHEDULED
    campaign._change_reason = "resumed"
    campaign.save(update_fields=["status", "updated_at"])
    if any_sending:
        _dispatch_wake()
    return resumed


@transaction.atomic
def campaign_cancel(*, campaign: Campaign, by=None, now: datetime) -> int:
    """Withdraw every message still queued or held (cancelled, reason "campaign was cancelled"); a message
    already handed to a provider is not stopped. Returns how many were withdrawn."""
    campaign = Campaign.objects.select_for_update().get(pk=campaign.pk)
    _transition(
        campaign,
        (
            CampaignStatus.DRAFT,
            CampaignStatus.AWAITING_APPROVAL,
            CampaignStatus.SCHEDULED,
            CampaignStatus.SENDING,
            CampaignStatus.PAUSED,
        ),
        gettext_noop("cancelled"),
    )
    params = json.dumps({"source": campaign.name})
    entry = json.dumps({"status": "cancelled", "at": now.isoformat(), "reason": CANCEL_REASON, "params": {}})
    withdrawn = 0
    active = [RunStatus.SCHEDULED, RunStatus.STARTING, RunStatus.SENDING, RunStatus.PAUSED]
    for run in _locked_runs(campaign, active):
        withdrawn += _run_messages_update(
            run,
            "status = 'cancelled', reason = %s, reason_params = %s::jsonb, finished_at = %s, "
            "history = history || jsonb_build_array(%s::jsonb)",
            "status IN ('queued', 'deferred')",
            [CANCEL_REASON, params, now, entry],
        )
        run.status = RunStatus.CANCELLED
        run.finished_at = now
        run.save(update_fields=["status", "finished_at"])
    campaign.status = CampaignStatus.CANCELLED
    campaign._change_reason = "cancelled"
    campaign.save(update_fields=["status", "updated_at"])
    return withdrawn


def _dispatch_wake() -> None:
    from campaigns.schedule import DISPATCH_TASK

    task_queue_on_commit(DISPATCH_TASK)


# --- Settling and dispatching ------------------------------------------------------------------------


def run_counts(run_id: int) -> dict[tuple[str, str], int]:
    from campaigns.models import CampaignRunCount

    return {
        (status, reason): n
        for status, reason, n in CampaignRunCount.objects.filter(run_id=run_id, n__gt=0).values_list(
            "status", "reason", "n"
        )
    }


def campaign_run_settle(*, run: CampaignRun, now: datetime) -> str:
    """A sending run whose every message has a final status is over: sent, or partly delivered when some
    failed or are unknown. A run waiting for its automatic winner is not over. Returns the run's status."""
    if run.status != RunStatus.SENDING:
        return run.status
    if _waits(run):
        return run.status
    counts = run_counts(run.pk)
    if any(n for (status, _), n in counts.items() if status in _PENDING):
        return run.status
    finished = sum(n for (status, _), n in counts.items() if status in {str(s) for s in FINAL_STATUSES})
    if finished < run.enqueued_size:
        return run.status  # a count not yet committed: look again later
    troubled = sum(n for (status, _), n in counts.items() if status in ("failed", "unknown"))
    status = RunStatus.PARTIAL if troubled else RunStatus.SENT
    with transaction.atomic():
        if not CampaignRun.objects.filter(pk=run.pk, status=RunStatus.SENDING).update(
            status=status, finished_at=now
        ):
            return CampaignRun.objects.get(pk=run.pk).status
        campaign = Campaign.objects.select_for_update().get(pk=run.campaign_id)
        if campaign.status == CampaignStatus.SENDING and campaign.schedule_kind != ScheduleKind.RECURRING:
            campaign.status = CampaignStatus.PARTIAL if troubled else CampaignStatus.SENT
            campaign._change_reason = "finished"
            campaign.save(update_fields=["status", "updated_at"])
        elif campaign.status == CampaignStatus.SENDING:
            campaign.status = CampaignStatus.SCHEDULED  # the next occurrence
            campaign.save(update_fields=["status", "updated_at"])
    run.status = status
    return status


def _waits(run: CampaignRun) -> bool:
    return run.phase == RunPhase.TEST and not run.winner_key


def campaign_runs_dispatch(*, now: datetime, limit: int = 50) -> dict:
    """The beat's pass over runs: start the due ones (and take over a start whose lease lapsed), settle
    the sending ones that are over. Each start is its own task, so one large audience does not hold up
    the others."""
    due = list(
        CampaignRun.objects.filter(due_at__lte=now, status__in=[RunStatus.SCHEDULED, RunStatus.STARTING])
        .filter(Q(claim_token__isnull=True) | Q(claimed_until__lt=Now()))
        .order_by("due_at")
        .values_list("pk", flat=True)[:limit]
    )
    for pk in due:
        task_queue_on_commit(START_TASK, pk)
    settled = 0
    for run in CampaignRun.objects.filter(status=RunStatus.SENDING).order_by("pk")[:limit]:
        if campaign_run_settle(run=run, now=now) != RunStatus.SENDING:
            settled += 1
    return {"started": due, "settled": settled}
