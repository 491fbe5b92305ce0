"""The nightly win-back selection: who is dormant, whom to wake first within the budget and the channels'
capacity, who is held out, and the enrollment of the treated into the programme's journey.

One run per programme and business night (WinbackRun, unique). The run holds its row's lease and goes
through two phases:

1. select: one transaction. The candidates (customers the dormancy rules catch, each with the first reason
   that keeps them out, their opening channel, offer and score) go into a temporary table; the counts are
   read from it; the assignments are inserted from it by one INSERT ... SELECT whose window functions rank
   within the channels' capacity and then within the budget. The assignments' unique key (programme,
   customer, cycle) makes a rerun of the night insert nothing.
2. enroll: batches of ENROLL_BATCH treated assignments not yet enrolled, in rank order, each one
   transaction: journey entry (set-based, idempotent on the occurrence "winback:<run>"), coupons issued
   through loyalty, points bonuses on the ledger (key "winback:<assignment>"), and the assignments'
   `enrolled_at`. A worker killed mid-batch loses only that batch's transaction; the reaper resumes the
   run (winback_run_resume) from the first assignment not yet enrolled, so nobody is enrolled twice.

The score is the expected incremental value of treating a customer: P(the treatment brings them back) x
their expected order value - the offer's cost. Before any run has matured, P is the model's: p_alive x
(1 - exp(-window / purchase cycle)), the chance a live customer orders within the window. Once past runs'
windows have closed, the measured uplift (treated rate - holdout rate) per value tier and channel is
blended in, weighted by how many customers measured it (winback_uplift_learned).

The holdout is a hash of (run, customer): deterministic when a run is resumed or rerun, independent of the
score, and drawn over the same ranked list as the treated (a holdout customer is recorded where they would
have been selected, without spending budget or capacity), so both arms come from the same population.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from django.db import connection, transaction
from django.utils import timezone

from campaigns.services.channels import CHANNEL_ORDER
from crm.clock import business_today
from crm.models.metrics import LifecycleSettings
from crm.services.leases import (
    Lease,
    LeaseLost,
    lease_claim,
    lease_heartbeat,
    lease_release,
    leased_job_register,
    leased_job_resume_task,
)
from journeys.models import (
    Arm,
    BudgetKind,
    Enrollment,
    WinbackAssignment,
    WinbackAudience,
    WinbackPhase,
    WinbackProgramme,
    WinbackRun,
    WinbackRunStatus,
)
from loyalty.ledger_reasons import reason_code

logger = logging.getLogger(__name__)

ENROLL_BATCH = 5_000
# How many measured customers (the smaller arm of a tier and channel) weigh as much as the model's guess.
UPLIFT_PRIOR_WEIGHT = 200
RESUME_TASK = "journeys.tasks.winback_run_resume"


@dataclass
class Preview:
    considered: int = 0
    dormant: int = 0
    eligible: int = 0
    suppressed: dict[str, int] = field(default_factory=dict)


# --- SQL pieces ----------------------------------------------------------------------------------------


def _bucket_sql(key_sql: str) -> str:
    """0..9999 from the md5 of `key_sql`: the first 6 hex digits as a number. SQLite has no hex cast, so
    there the digits are read one by one (Django registers MD5 on its SQLite connections)."""
    if connection.vendor == "postgresql":
        return f"(('x' || substr(md5({key_sql}), 1, 6))::bit(24)::int %% 10000)"
    digits = " + ".join(
        f"(instr('0123456789abcdef', substr(md5({key_sql}), {i + 1}, 1)) - 1) * {16 ** (5 - i)}"
        for i in range(6)
    )
    return f"(({digits}) %% 10000)"


def _default_cycle_days(settings: LifecycleSettings) -> float:
    """The purchase cycle of one-time buyers (like the lifecycle stages): the setting, or the median cycle
    of repeat buyers."""
    if settings.default_cycle_days:
        return float(settings.default_cycle_days)
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY purchase_cycle_days) "
                "FROM crm_customermetrics WHERE purchase_cycle_days IS NOT NULL"
            )
            row = cursor.fetchone()
            median = row[0] if row else None
        else:
            cursor.execute(
                "SELECT purchase_cycle_days FROM crm_customermetrics WHERE purchase_cycle_days IS NOT NULL "
                "ORDER BY purchase_cycle_days"
            )
            values = [r[0] for r in cursor.fetchall()]
            median = values[len(values) // 2] if values else None
    return float(median) if median else float(settings.max_cycle_days)


def _candidates_sql(
    *, programme: WinbackProgramme, now: datetime, run_id: int, uplift: dict
) -> tuple[str, list]:
    """The SELECT of every customer the programme's dormancy rules catch, with the first reason that keeps
    them out (NULL: eligible), the channel the win-back would open on, the offer, score and arm."""
    settings = LifecycleSettings.load()
    default_cycle = _default_cycle_days(settings)
    params: list = []
    tier_filter = ""
    if programme.value_tiers:
        tier_filter = f"AND m.value_tier IN ({', '.join(['%s'] * len(programme.value_tiers))})"
    stage_filter = (
        "AND m.lifecycle_stage = 'at_risk'" if programme.audience == WinbackAudience.AT_RISK else ""
    )
    # The channel the day-0 message goes out on: the customer's preferred channel when it is open to us,
    # otherwise the first open one in the delivery pipeline's order (campaigns.services.channels), so the
    # journey's "best channel" sends on the channel whose capacity the selection counted.
    order = [c for c in CHANNEL_ORDER if c in ("sms", "wechat", "email")]
    opened = {
        "sms": "o.sms_open = 1",
        "wechat": "o.wechat_open = 1",
        "email": "o.email_open = 1",
    }
    preferred = " ".join(f"WHEN o.preferred = '{c}' AND {opened[c]} THEN '{c}'" for c in order)
    fallback = " ".join(f"WHEN {opened[c]} THEN '{c}'" for c in order)
    learned_rows = [(t, c, float(v["weight"]), float(v["uplift"])) for (t, c), v in uplift.items()] or [
        ("", "", 0.0, 0.0)
    ]
    learned_values = ", ".join(
        "(%s, %s, CAST(%s AS DOUBLE PRECISION), CAST(%s AS DOUBLE PRECISION))" for _ in learned_rows
    )
    since_message = now - timedelta(days=programme.recent_message_days)
    cooldown_since = business_today(now) - timedelta(days=programme.cooldown_days)
    other_since = now - timedelta(days=90)
    hash_key = f"'{int(run_id)}:' || CAST(cy.id AS TEXT)"
    # Materialized on PostgreSQL: the channel CASE reads each open-channel flag several times, and inlining
    # the CTE would plan its EXISTS subqueries once per mention.
    materialized = "MATERIALIZED" if connection.vendor == "postgresql" else ""
    sql = f"""
        WITH learned(tier, channel, weight, uplift) AS (VALUES {learned_values}),
        base AS (
            SELECT m.customer_id AS id, m.value_tier AS tier, m.days_since_last_order AS days,
                   COALESCE(m.p_alive, 0) AS p_alive,
                   COALESCE(m.average_order_value, 0) AS spend,
                   CASE WHEN COALESCE(m.purchase_cycle_days, %s) < %s THEN %s
                        WHEN COALESCE(m.purchase_cycle_days, %s) > %s THEN %s
                        ELSE COALESCE(m.purchase_cycle_days, %s) END AS cycle,
                   cu.phone AS phone, cu.email AS email, cu.preferred_channel AS preferred
            FROM crm_customermetrics m
            JOIN crm_customer cu ON cu.id = m.customer_id AND cu.erased_at IS NULL
            WHERE m.order_count > 0 AND m.days_since_last_order IS NOT NULL {tier_filter} {stage_filter}
        ),
        dormant AS (
            SELECT * FROM base b WHERE b.days > %s * b.cycle AND b.p_alive < %s
        ),
        o AS {materialized} (
            SELECT d.*,
              CASE WHEN d.phone <> '' AND EXISTS (SELECT 1 FROM crm_consent k WHERE k.customer_id = d.id
                   AND k.channel = 'sms' AND k.status = 'opted_in') THEN 1 ELSE 0 END AS sms_open,
              CASE WHEN d.email <> '' AND EXISTS (SELECT 1 FROM crm_consent k WHERE k.customer_id = d.id
                   AND k.channel = 'email' AND k.status = 'opted_in') THEN 1 ELSE 0 END AS email_open,
              CASE WHEN EXISTS (SELECT 1 FROM crm_consent k WHERE k.customer_id = d.id
                   AND k.channel = 'wechat' AND k.status = 'opted_in')
                   AND EXISTS (SELECT 1 FROM crm_customeridentity i WHERE i.customer_id = d.id
                   AND i.kind = 'wechat_openid') THEN 1 ELSE 0 END AS wechat_open
            FROM dormant d
        ),
        cy AS (
            SELECT o.id, o.tier, o.days, o.p_alive, o.spend, o.cycle,
                   CASE {preferred} {fallback} END AS channel
            FROM o
        ),
        r AS (
            SELECT cy.*,
              CASE
                WHEN cy.channel IS NULL THEN 'no_consent'
                WHEN EXISTS (SELECT 1 FROM campaigns_message msg WHERE msg.customer_id = cy.id
                     AND msg.purpose = 'marketing' AND msg.created_at > %s AND msg.created_at <= %s
                     AND msg.status NOT IN ('suppressed', 'cancelled', 'failed')) THEN 'recently_messaged'
                WHEN EXISTS (SELECT 1 FROM journeys_winbackassignment a WHERE a.customer_id = cy.id
                     AND a.programme_id <> %s AND a.selected_at > %s) THEN 'in_other_winback'
                WHEN EXISTS (SELECT 1 FROM journeys_winbackassignment a WHERE a.customer_id = cy.id
                     AND a.programme_id = %s AND a.cycle > %s AND a.run_id <> %s) THEN 'cooldown'
              END AS reason,
              COALESCE(f.cost, 0) AS offer_cost,
              COALESCE(l.weight, 0) AS weight, COALESCE(l.uplift, 0) AS learned_uplift,
              CASE WHEN {_bucket_sql(hash_key)} < %s THEN 'holdout' ELSE 'treated' END AS arm
            FROM cy
            LEFT JOIN journeys_winbackoffer f ON f.programme_id = %s AND f.value_tier = cy.tier
            LEFT JOIN learned l ON l.tier = cy.tier AND l.channel = cy.channel
        )
        SELECT r.id, r.tier, r.channel, r.reason, r.arm, r.offer_cost, r.spend, p.p_back,
               p.p_back * r.spend - r.offer_cost AS score
        FROM r,
        LATERAL (SELECT CASE WHEN r.weight > 0 AND r.learned_uplift > 0 THEN
                      r.weight * r.learned_uplift
                      + (1 - r.weight) * r.p_alive * (1 - EXP(-CAST(%s AS DOUBLE PRECISION) / r.cycle))
                    WHEN r.weight > 0 THEN
                      (1 - r.weight) * r.p_alive * (1 - EXP(-CAST(%s AS DOUBLE PRECISION) / r.cycle))
                    ELSE r.p_alive * (1 - EXP(-CAST(%s AS DOUBLE PRECISION) / r.cycle)) END AS p_back) p
    """
    for row in learned_rows:
        params.extend(row)
    params.extend(
        [
            default_cycle,
            settings.min_cycle_days,
            settings.min_cycle_days,
            default_cycle,
            settings.max_cycle_days,
            settings.max_cycle_days,
            default_cycle,
        ]
    )
    params.extend(programme.value_tiers or [])
    params.extend([float(programme.cycles_without_order), float(programme.max_p_alive)])
    # An unsaved programme (the admin's preview) has no id: 0 matches no programme's rows.
    programme_id = programme.pk or 0
    params.extend([since_message, now, programme_id, other_since, programme_id, cooldown_since, run_id])
    params.extend([int(programme.holdout_percent) * 100, programme_id])
    window = float(programme.reactivation_days)
    params.extend([window, window, window])
    if connection.vendor != "postgresql":
        # SQLite has no LATERAL: the same expression inline.
        sql = sql.replace("FROM r,\n        LATERAL (", "FROM r JOIN (").replace(
            "END AS p_back) p", "END AS p_back, r.id AS pid FROM r) p ON p.pid = r.id"
        )
    return sql, params


def _counts(table: str) -> tuple[int, dict[str, int]]:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT reason, count(*) FROM {table} GROUP BY reason")
        by_reason = {reason: n for reason, n in cursor.fetchall()}
    dormant = sum(by_reason.values())
    return dormant, {k: v for k, v in by_reason.items() if k is not None}


def _considered(programme: WinbackProgramme) -> int:
    from crm.models import CustomerMetrics

    qs = CustomerMetrics.objects.filter(order_count__gt=0, customer__erased_at__isnull=True)
    if programme.value_tiers:
        qs = qs.filter(value_tier__in=programme.value_tiers)
    if programme.audience == WinbackAudience.AT_RISK:
        qs = qs.filter(lifecycle_stage="at_risk")
    return qs.count()


def winback_preview(*, programme: WinbackProgramme, now: datetime | None = None) -> Preview:
    """How many customers the programme's rules would catch tonight, and why the others are left out,
    without writing anything (the admin shows it before the programme is saved)."""
    now = now or timezone.now()
    sql, params = _candidates_sql(
        programme=programme,
        now=now,
        run_id=0,
        uplift=winback_uplift_learned(programme=programme, now=now) if programme.pk else {},
    )
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT reason, CASE WHEN score > 0 THEN 1 ELSE 0 END, count(*) FROM ({sql}) c GROUP BY 1, 2",
            params,
        )
        rows = cursor.fetchall()
    preview = Preview(considered=_considered(programme))
    for reason, worth, n in rows:
        preview.dormant += n
        if reason is None and worth:
            preview.eligible += n
        else:
            key = reason or "not_worth_it"
            preview.suppressed[key] = preview.suppressed.get(key, 0) + n
    return preview


# --- Learned uplift ------------------------------------------------------------------------------------


def winback_uplift_learned(*, programme: WinbackProgramme, now: datetime) -> dict[tuple[str, str], dict]:
    """{(value tier, channel): {"uplift", "weight", "treated", "holdout"}} from this programme's past
    assignments whose reactivation window has closed: the treated's reactivation rate less the
    holdout's, and the weight it gets against the model (n / (n + UPLIFT_PRIOR_WEIGHT), n the smaller arm)."""
    matured_before = now - timedelta(days=programme.reactivation_days)
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT value_tier, channel, arm, count(*),
                   sum(CASE WHEN returned_at IS NOT NULL THEN 1 ELSE 0 END)
            FROM journeys_winbackassignment
            WHERE programme_id = %s AND selected_at < %s
            GROUP BY value_tier, channel, arm
            """,
            [programme.pk, matured_before],
        )
        cells: dict[tuple[str, str], dict[str, tuple[int, int]]] = {}
        for tier, channel, arm, n, back in cursor.fetchall():
            cells.setdefault((tier, channel), {})[arm] = (int(n), int(back or 0))
    learned = {}
    for key, arms in cells.items():
        if Arm.TREATED not in arms or Arm.HOLDOUT not in arms:
            continue
        (nt, bt), (nh, bh) = arms[Arm.TREATED], arms[Arm.HOLDOUT]
        n = min(nt, nh)
        learned[key] = {
            "uplift": bt / nt - bh / nh,
            "weight": n / (n + UPLIFT_PRIOR_WEIGHT),
            "treated": nt,
            "holdout": nh,
        }
    return learned


# --- The run -------------------------------------------------------------------------------------------


def _runnable():
    return WinbackRun.objects.filter(status=WinbackRunStatus.RUNNING)


def winback_run(
    *, programme: WinbackProgramme, now: datetime | None = None, crash_after_batches: int | None = None
) -> WinbackRun:
    """Tonight's run of `programme`: started, or resumed when a run of the same night exists and its lease
    is free or lapsed, or returned as it is when it is done or another worker holds it.
    `crash_after_batches` is for the crash-and-resume test: raise after that many enrollment batches."""
    now = now or timezone.now()
    run_date = business_today(now)
    run, _created = WinbackRun.objects.get_or_create(
        programme=programme, run_date=run_date, defaults={"started_at": now}
    )
    # A night that failed is tried again from where it stopped (its phase), not skipped.
    WinbackRun.objects.filter(pk=run.pk, status=WinbackRunStatus.FAILED).update(
        status=WinbackRunStatus.RUNNING, error=""
    )
    return _run_held(run.pk, now=now, crash_after_batches=crash_after_batches)


def winback_run_resume(run_id: int) -> None:
    """The reaper's entry point: carry on a run whose worker died."""
    _run_held(run_id, now=timezone.now())


def _run_held(run_id: int, *, now: datetime, crash_after_batches: int | None = None) -> WinbackRun:
    lease = lease_claim(queryset=_runnable(), pk=run_id)
    if lease is None:
        return WinbackRun.objects.get(pk=run_id)
    run = WinbackRun.objects.select_related("programme").get(pk=run_id)
    try:
        if run.phase == WinbackPhase.SELECT:
            _select(run, lease=lease, now=now)
        if run.phase == WinbackPhase.ENROLL:
            _enroll(run, lease=lease, now=now, crash_after_batches=crash_after_batches)
        winback_run_counts_refresh(run=run)
        lease_release(
            lease=lease,
            values={
                "status": WinbackRunStatus.DONE,
                "phase": WinbackPhase.DONE,
                "finished_at": timezone.now(),
            },
        )
    except LeaseLost:
        logger.warning("win-back run %s was taken over by another worker", run_id)
    except _SimulatedCrash:
        raise
    except Exception:
        logger.exception("win-back run %s failed", run_id)
        lease_release(
            lease=lease,
            values={"status": WinbackRunStatus.FAILED, "error": "exception", "finished_at": timezone.now()},
        )
        raise
    run.refresh_from_db()
    return run


class _SimulatedCrash(RuntimeError):
    """Raised by a test's `crash_after_batches`: the worker dies with its lease still held."""


def _select(run: WinbackRun, *, lease: Lease, now: datetime) -> None:
    programme = run.programme
    started = time.monotonic()
    uplift = winback_uplift_learned(programme=programme, now=now)
    sql, params = _candidates_sql(programme=programme, now=now, run_id=run.pk, uplift=uplift)
    table = f"winback_candidates_{run.pk}"
    capacities = programme.channel_capacities()
    capacity_sql = " ".join(
        f"WHEN '{channel}' THEN {int(cap)}" for channel, cap in capacities.items() if cap is not None
    )
    capacity_case = (
        f"CASE channel {capacity_sql} ELSE CAST(NULL AS INTEGER) END"
        if capacity_sql
        else "CAST(NULL AS INTEGER)"
    )
    if programme.budget_kind == BudgetKind.MONEY:
        unit, budget = "offer_cost", float(programme.budget_amount or 0)
    else:
        unit, budget = "1", float(programme.budget_offers or 0)
    with transaction.atomic():
        if not lease_heartbeat(lease=lease):
            raise LeaseLost(lease)
        with connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                # The statement is large (a few dozen subplans) and runs once a night: JIT compiling it took
                # longer than running it (12 s of 20 s at 200,000 customers, bench_winback.py).
                cursor.execute("SET LOCAL jit = off")
            cursor.execute(f"DROP TABLE IF EXISTS {table}")
            cursor.execute(f"CREATE TEMP TABLE {table} AS {sql}", params)
            timings = {"candidates": round(time.monotonic() - started, 3)}
            dormant, by_reason = _counts(table)
            # Capacity first, within each channel, then the budget over what is left in score order: a
            # customer cut by capacity spends no budget, and since costs are never negative the budget
            # keeps a prefix of the ranking, so the two passes give the same answer as a joint walk. A
            # holdout customer takes the place they would have as treated but spends neither.
            cursor.execute(
                f"""
                WITH worth AS (
                    SELECT * FROM {table} WHERE reason IS NULL AND score > 0
                ),
                by_channel AS (
                    SELECT w.*,
                        SUM(CASE WHEN arm = 'treated' THEN 1 ELSE 0 END) OVER (
                            PARTITION BY channel ORDER BY score DESC, id ROWS UNBOUNDED PRECEDING
                        ) - CASE WHEN arm = 'treated' THEN 1 ELSE 0 END + 1 AS channel_place,
                        {capacity_case} AS capacity
                    FROM worth w
                ),
                in_capacity AS (
                    SELECT * FROM by_channel WHERE capacity IS NULL OR channel_place <= capacity
                ),
                by_budget AS (
                    SELECT c.*,
                        SUM(CASE WHEN arm = 'treated' THEN {unit} ELSE 0 END) OVER (
                            ORDER BY score DESC, id ROWS UNBOUNDED PRECEDING
                        ) - CASE WHEN arm = 'treated' THEN {unit} ELSE 0 END + {unit} AS spent_with
                    FROM in_capacity c
                ),
                chosen AS (
                    SELECT b.*, ROW_NUMBER() OVER (ORDER BY score DESC, id) AS place
                    FROM by_budget b WHERE spent_with <= %s
                )
                INSERT INTO journeys_winbackassignment
                    (run_id, programme_id, customer_id, cycle, arm, value_tier, channel, p_reactivation,
                     expected_spend, offer_cost, score, rank, selected_at, points_bonus, messages, orders,
                     revenue, coupon_order, coupon_discount)
                SELECT %s, %s, id, %s, arm, tier, channel, p_back, spend, offer_cost, score, place, %s,
                       0, 0, 0, 0, '', 0
                FROM chosen WHERE true
                ORDER BY place
                ON CONFLICT (programme_id, customer_id, cycle) DO NOTHING
                """,
                [budget + 1e-9, run.pk, programme.pk, run.run_date, now],
            )
            timings["assign"] = round(time.monotonic() - started, 3)
            cursor.execute(
                f"""
                SELECT
                    sum(CASE WHEN reason IS NULL AND score > 0 THEN 1 ELSE 0 END),
                    sum(CASE WHEN reason IS NULL AND score <= 0 THEN 1 ELSE 0 END)
                FROM {table}
                """
            )
            eligible, not_worth = (int(x or 0) for x in cursor.fetchone())
            cursor.execute(f"DROP TABLE {table}")
        assigned = WinbackAssignment.objects.filter(run=run)
        selected = assigned.count()
        held_out = assigned.filter(arm=Arm.HOLDOUT).count()
        suppressed = dict(by_reason)
        if not_worth:
            suppressed["not_worth_it"] = not_worth
        # What the ranking left out: eligible and worth it, but beyond a channel's capacity or the budget.
        cut = eligible - selected
        if cut > 0:
            suppressed["budget_or_capacity"] = cut
        spent = (
            sum(assigned.filter(arm=Arm.TREATED).values_list("offer_cost", flat=True), Decimal("0"))
            if programme.budget_kind == BudgetKind.MONEY
            else Decimal(assigned.filter(arm=Arm.TREATED).count())
        )
        values = {
            "phase": WinbackPhase.ENROLL,
            "considered": _considered(programme),
            "eligible": eligible,
            "selected": selected,
            "held_out": held_out,
            "suppressed": suppressed,
            "budget_spent": spent,
            "selected_at": now,
            "uplift": {f"{t}:{c}": v for (t, c), v in uplift.items()},
            "timings": timings,
        }
        # Only while the lease is ours: a worker that stalled past it must not commit a second selection.
        if not WinbackRun.objects.filter(pk=run.pk, lease_token=lease.token).update(**values):
            raise LeaseLost(lease)
        logger.info("win-back run %s: %s dormant, %s selected", run.pk, dormant, selected)
    run.refresh_from_db()


def _enroll(run: WinbackRun, *, lease: Lease, now: datetime, crash_after_batches: int | None) -> None:
    from journeys.services.winback_journey import winback_journey_version

    programme = run.programme
    version = winback_journey_version(programme=programme, now=now)
    offers = {o.value_tier: o for o in programme.offers.select_related("coupon_programme")}
    batches = 0
    timings: dict[str, float] = {}
    while True:
        with transaction.atomic():
            if not lease_heartbeat(lease=lease):
                raise LeaseLost(lease)
            if connection.vendor == "postgresql":
                # A batch's statements (5,000 rows through unnest) cost enough to be JIT-compiled, which
                # takes longer than running them.
                with connection.cursor() as cursor:
                    cursor.execute("SET LOCAL jit = off")
            batch = list(
                WinbackAssignment.objects.filter(run=run, arm=Arm.TREATED, enrolled_at__isnull=True)
                .order_by("rank")
                .values_list("pk", "customer_id", "value_tier")[:ENROLL_BATCH]
            )
            if not batch:
                break
            _enroll_batch(run, batch, version=version, offers=offers, now=now, timings=timings)
        batches += 1
        WinbackRun.objects.filter(pk=run.pk).update(
            timings={**run.timings, **{k: round(v, 3) for k, v in timings.items()}}
        )
        if crash_after_batches is not None and batches >= crash_after_batches:
            raise _SimulatedCrash(f"crashed after {batches} batches")


def _enroll_batch(run, batch, *, version, offers, now, timings: dict) -> None:
    from journeys.services.enrollments import enrollments_enter
    from loyalty.services.accrual import bonuses_award
    from loyalty.services.coupons import coupons_issue

    def lap(name: str, since: float) -> float:
        at = time.monotonic()
        timings[name] = timings.get(name, 0.0) + at - since
        return at

    t = time.monotonic()
    occurrence = f"winback:{run.pk}"
    customer_ids = [c for _pk, c, _tier in batch]
    enrollments_enter(version=version, customer_ids=customer_ids, occurrence=occurrence, now=now)
    entered = dict(
        Enrollment.objects.filter(
            journey_id=version.journey_id, customer_id__in=customer_ids, occurrence=occurrence
        ).values_list("customer_id", "pk")
    )
    t = lap("enroll_enter", t)
    coupons: dict[int, int] = {}
    points: dict[int, int] = {}
    by_tier: dict[str, list[int]] = {}
    for _pk, customer_id, tier in batch:
        if customer_id in entered:
            by_tier.setdefault(tier, []).append(customer_id)
    awards = []
    for tier, ids in by_tier.items():
        offer = offers.get(tier)
        if offer is None:
            continue
        if offer.coupon_programme_id and offer.coupon_programme.is_active:
            issued = coupons_issue(programme=offer.coupon_programme, customer_ids=ids, now=now)
            coupons.update({c: coupon.pk for c, coupon in issued.items()})
        if offer.points_bonus:
            points.update(dict.fromkeys(ids, offer.points_bonus))
    t = lap("enroll_coupons", t)
    assignment_of = {c: pk for pk, c, _tier in batch}
    for customer_id, bonus in points.items():
        awards.append(
            {
                "customer_id": customer_id,
                "rule": None,
                "key": f"winback:{assignment_of[customer_id]}",
                "reason": reason_code("welcome_back"),
                "reference": f"winback:{run.pk}",
                "extra_points": bonus,
            }
        )
    if awards:
        bonuses_award(awards=awards, now=now)
    t = lap("enroll_points", t)
    rows = [(pk, entered.get(c), coupons.get(c), points.get(c, 0)) for pk, c, _tier in batch]
    _assignments_mark_enrolled(rows, now=now)
    lap("enroll_mark", t)


def _assignments_mark_enrolled(rows: list[tuple[int, int | None, int | None, int]], *, now: datetime) -> None:
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                """
                UPDATE journeys_winbackassignment a
                SET enrolled_at = %s, enrollment_id = v.enrollment_id, coupon_id = v.coupon_id,
                    points_bonus = v.points
                FROM unnest(%s::bigint[], %s::bigint[], %s::bigint[], %s::int[])
                     AS v(id, enrollment_id, coupon_id, points)
                WHERE a.id = v.id
                """,
                [now, [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows], [r[3] for r in rows]],
            )
        return
    objects = [
        WinbackAssignment(
            pk=pk, enrolled_at=now, enrollment_id=enrollment, coupon_id=coupon, points_bonus=bonus
        )
        for pk, enrollment, coupon, bonus in rows
    ]
    WinbackAssignment.objects.bulk_update(
        objects, ["enrolled_at", "enrollment_id", "coupon_id", "points_bonus"], batch_size=500
    )


def winback_run_counts_refresh(*, run: WinbackRun) -> None:
    """The run log's enrolled, messaged and not-entered counts, from its assignments."""
    assigned = WinbackAssignment.objects.filter(run=run, arm=Arm.TREATED)
    enrolled = assigned.filter(enrollment__isnull=False).count()
    not_entered = assigned.filter(enrolled_at__isnull=False, enrollment__isnull=True).count()
    messaged = assigned.filter(messages__gt=0).count()
    suppressed = dict(WinbackRun.objects.values_list("suppressed", flat=True).get(pk=run.pk) or {})
    if not_entered:
        suppressed["not_entered"] = not_entered
    WinbackRun.objects.filter(pk=run.pk).update(enrolled=enrolled, messaged=messaged, suppressed=suppressed)


def winback_nightly(*, now: datetime | None = None) -> list[WinbackRun]:
    """Every active programme's run for tonight (the beat task's service), outcomes refreshed first so the
    learned uplift sees the latest orders."""
    now = now or timezone.now()
    runs = []
    for programme in WinbackProgramme.objects.filter(is_active=True).order_by("pk"):
        winback_outcomes_refresh(programme=programme, now=now)
        runs.append(winback_run(programme=programme, now=now))
    return runs


# --- Outcomes ------------------------------------------------------------------------------------------


def winback_outcomes_refresh(
    *,
    programme: WinbackProgramme | None = None,
    run_ids: Iterable[int] | None = None,
    now: datetime | None = None,
) -> int:
    """Write each assignment's outcome: orders and revenue placed within the reactivation window after it
    was selected (both arms alike: intention to treat), the first such order's time, the messages its
    enrollment was sent, and the order its win-back coupon was redeemed in. Set-based: a few UPDATEs for
    all the programme's assignments whose window was open at their last refresh."""
    now = now or timezone.now()
    qs = WinbackAssignment.objects.all()
    if programme is not None:
        qs = qs.filter(programme=programme)
    if run_ids is not None:
        qs = qs.filter(run_id__in=list(run_ids))
    run_filter_ids = sorted(set(qs.values_list("run_id", flat=True).distinct()))
    if not run_filter_ids:
        return 0
    placeholders = ", ".join(["%s"] * len(run_filter_ids))
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                f"""
                UPDATE journeys_winbackassignment a
                SET orders = COALESCE(s.orders, 0), revenue = COALESCE(s.revenue, 0), returned_at = s.first_at
                FROM journeys_winbackassignment a2
                JOIN journeys_winbackprogramme p ON p.id = a2.programme_id
                LEFT JOIN LATERAL (
                    SELECT count(*) AS orders, sum(o.total - o.refunded_amount) AS revenue,
                           min(o.placed_at) AS first_at
                    FROM crm_order o
                    WHERE o.customer_id = a2.customer_id AND o.placed_at > a2.selected_at
                      AND o.placed_at <= a2.selected_at + (p.reactivation_days * INTERVAL '1 day')
                      AND o.status <> 'cancelled'
                ) s ON true
                WHERE a.id = a2.id AND a2.run_id IN ({placeholders})
                """,
                run_filter_ids,
            )
            cursor.execute(
                f"""
                UPDATE journeys_winbackassignment a
                SET messages = m.n
                FROM (
                    SELECT a2.id, count(msg.id) AS n
                    FROM journeys_winbackassignment a2
                    JOIN journeys_enrollment e ON e.id = a2.enrollment_id
                    JOIN campaigns_message msg ON msg.source_kind = 'journey'
                      AND msg.customer_id = a2.customer_id
                      AND msg.occurrence LIKE CAST(e.id AS TEXT) || ':%%'
                      AND msg.status IN ('sending', 'sent', 'delivered', 'opened', 'clicked', 'unknown')
                    WHERE a2.run_id IN ({placeholders})
                    GROUP BY a2.id
                ) m
                WHERE a.id = m.id
                """,
                run_filter_ids,
            )
            cursor.execute(
                f"""
                UPDATE journeys_winbackassignment a
                SET coupon_order = r.order_reference, coupon_discount = r.discount
                FROM loyalty_couponredemption r
                WHERE r.coupon_id = a.coupon_id AND a.run_id IN ({placeholders})
                """,
                run_filter_ids,
            )
        else:
            _outcomes_refresh_portable(run_filter_ids)
    # The run log's "messaged" and "enrolled" follow the outcomes (a few queries per run; runs are nightly).
    for run in WinbackRun.objects.filter(pk__in=run_filter_ids):
        winback_run_counts_refresh(run=run)
    return len(run_filter_ids)


def _outcomes_refresh_portable(run_ids: list[int]) -> None:
    # SQLite (the embedded demo): the same in a few ORM reads and a bulk update; thousands of rows, not millions.
    from campaigns.models import Message
    from crm.models import Order
    from loyalty.models import CouponRedemption

    assignments = list(WinbackAssignment.objects.filter(run_id__in=run_ids).select_related("programme"))
    customers = {a.customer_id for a in assignments}
    orders_by: dict[int, list] = {}
    for customer_id, placed_at, total, refunded in (
        Order.objects.filter(customer_id__in=customers)
        .exclude(status="cancelled")
        .values_list("customer_id", "placed_at", "total", "refunded_amount")
    ):
        orders_by.setdefault(customer_id, []).append((placed_at, total - refunded))
    enrollment_ids = {a.enrollment_id for a in assignments if a.enrollment_id}
    sent: dict[int, int] = {}
    for occurrence in Message.objects.filter(
        source_kind="journey",
        customer_id__in=customers,
        status__in=["sending", "sent", "delivered", "opened", "clicked", "unknown"],
    ).values_list("occurrence", flat=True):
        head = occurrence.split(":", 1)[0]
        if head.isdigit() and int(head) in enrollment_ids:
            sent[int(head)] = sent.get(int(head), 0) + 1
    redemptions = {
        r.coupon_id: r
        for r in CouponRedemption.objects.filter(
            coupon_id__in=[a.coupon_id for a in assignments if a.coupon_id]
        )
    }
    for a in assignments:
        end = a.selected_at + timedelta(days=a.programme.reactivation_days)
        inside = [(t, v) for t, v in orders_by.get(a.customer_id, []) if a.selected_at < t <= end]
        a.orders = len(inside)
        a.revenue = sum((v for _t, v in inside), Decimal("0"))
        a.returned_at = min((t for t, _v in inside), default=None)
        a.messages = sent.get(a.enrollment_id, 0) if a.enrollment_id else 0
        redemption = redemptions.get(a.coupon_id)
        a.coupon_order = redemption.order_reference if redemption else ""
        a.coupon_discount = redemption.discount if redemption else Decimal("0")
    WinbackAssignment.objects.bulk_update(
        assignments,
        ["orders", "revenue", "returned_at", "messages", "coupon_order", "coupon_discount"],
        batch_size=500,
    )


# --- Message data --------------------------------------------------------------------------------------


def winback_message_data(enrollment_ids: list[int]) -> dict[int, dict]:
    """{enrollment id: {"winback": {...}}}: the coupon and points bonus of the win-back assignment behind
    each enrollment, for the journey's messages to show (`{{ data.winback.coupon_code }}`). One query."""
    from loyalty.services.coupons import code_display

    found = {}
    for enrollment_id, code, valid_until, points, kind, value in WinbackAssignment.objects.filter(
        enrollment_id__in=enrollment_ids
    ).values_list(
        "enrollment_id",
        "coupon__code",
        "coupon__valid_until",
        "points_bonus",
        "coupon__programme__discount_kind",
        "coupon__programme__discount_value",
    ):
        data: dict = {"points": points}
        if code:
            data.update(
                {
                    "coupon_code": code,
                    "coupon_code_display": code_display(code),
                    "valid_until": valid_until.date().isoformat() if valid_until else "",
                    "discount": f"{value:.0f}%" if kind == "percent" else f"{value:.2f}",
                }
            )
        found[enrollment_id] = {"winback": data}
    return found


def winback_runs_reaper_register() -> None:
    """Let the lease reaper resume win-back runs whose worker died (journeys' AppConfig.ready calls this)."""
    leased_job_register(
        name="journeys.winbackrun", active=_runnable, resume=leased_job_resume_task(RESUME_TASK)
    )
