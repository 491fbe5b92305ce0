"""The generic pipeline: the same computation through the ORM, for SQLite (`make run`) and small data.

It reads one row per (customer, purchase day) and writes with bulk_create(update_conflicts=True); fine for
the few thousand customers of a demo, not for production scale (use PostgreSQL there)."""

from __future__ import annotations

import time
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

import numpy as np
from django.db.models import Count, DecimalField, F, Q, Sum
from django.db.models.functions import TruncDate

from crm.clock import business_date_of, business_time_zone
from crm.metrics import lifecycle, rfm
from crm.metrics.compute import BuyerColumns, PipelineOutput, WarmStart, compute_scores
from crm.models import Customer, Order
from crm.models.metrics import LIFECYCLE_STAGE_CHANGED, CustomerMetrics, LifecycleStage
from crm.services.event_log import NewEvent, events_append

EPOCH = date(1970, 1, 1)
CENT = Decimal("0.01")
BATCH = 2000

_UPDATE_FIELDS = [
    f.name
    for f in CustomerMetrics._meta.concrete_fields
    if not f.primary_key and f.name not in {"stage_since"}
] + ["stage_since"]


def _money(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


def _float_or_none(value: float) -> float | None:
    return None if np.isnan(value) else float(value)


def run(
    *,
    as_of: date,
    cutoff: datetime,
    now: datetime,
    thresholds: lifecycle.Thresholds,
    warm_start: WarmStart | None = None,
    emit_events: bool = True,
) -> PipelineOutput:
    timings: dict[str, float] = {}
    started = time.monotonic()
    money = DecimalField(max_digits=16, decimal_places=2)
    day_rows = (
        Order.objects.filter(Q(refunded_amount__lt=F("total")) | Q(total=0), placed_at__lt=cutoff)
        .annotate(day=TruncDate("placed_at", tzinfo=business_time_zone()))
        .values("customer_id", "day")
        .annotate(orders=Count("id"), value=Sum(F("total") - F("refunded_amount"), output_field=money))
        .order_by("customer_id", "day")
    )
    agg: dict[int, dict] = {}
    for row in day_rows.iterator(chunk_size=BATCH):
        value = _money(Decimal(row["value"]))
        a = agg.get(row["customer_id"])
        if a is None:
            agg[row["customer_id"]] = {
                "orders": row["orders"],
                "days": 1,
                "first": row["day"],
                "last": row["day"],
                "total": value,
                "repeat": Decimal(0),
            }
        else:  # rows come in day order
            a["orders"] += row["orders"]
            a["days"] += 1
            a["last"] = row["day"]
            a["total"] += value
            a["repeat"] += value
    ids = np.fromiter(agg.keys(), dtype=np.int64, count=len(agg))
    values = list(agg.values())
    buyers = BuyerColumns(
        customer_id=ids,
        order_count=np.array([a["orders"] for a in values], dtype=np.int64),
        purchase_days=np.array([a["days"] for a in values], dtype=np.int64),
        first_day=np.array([(a["first"] - EPOCH).days for a in values], dtype=np.int64),
        last_day=np.array([(a["last"] - EPOCH).days for a in values], dtype=np.int64),
        total_value=np.array([float(a["total"]) for a in values]),
        repeat_value=np.array([float(a["repeat"]) for a in values]),
    )
    timings["aggregate"] = round(time.monotonic() - started, 3)
    result = compute_scores(
        buyers, as_of_day=(as_of - EPOCH).days, thresholds=thresholds, warm_start=warm_start
    )
    timings["fit_and_score"] = round(time.monotonic() - started - timings["aggregate"], 3)
    s = result.scores
    position = {int(cid): i for i, cid in enumerate(s.customer_id)}

    previous = {
        cid: (stage, since, prev_as_of)
        for cid, stage, since, prev_as_of in CustomerMetrics.objects.values_list(
            "customer_id", "lifecycle_stage", "stage_since", "as_of"
        )
    }
    rows: list[CustomerMetrics] = []
    new_events: list[NewEvent] = []
    occurred_at = min(cutoff, now)
    for cid, created_at, erased_at in Customer.objects.values_list("id", "created_at", "erased_at").iterator(
        chunk_size=BATCH
    ):
        i = position.get(cid)
        metrics = CustomerMetrics(customer_id=cid, as_of=as_of, computed_at=now)
        if i is None:
            stage = LifecycleStage.PROSPECT.value
            since = min(business_date_of(created_at), as_of)
        else:
            a = agg[cid]
            x = a["days"] - 1
            stage = lifecycle.STAGE_CODES[s.stage[i]]
            since = a["first"] if stage == LifecycleStage.NEW else as_of
            clv = _float_or_none(s.clv[i])
            next_days = _float_or_none(s.next_purchase_days[i])
            metrics.order_count = a["orders"]
            metrics.first_order_date = a["first"]
            metrics.last_order_date = a["last"]
            metrics.total_value = a["total"]
            metrics.average_order_value = _money(a["total"] / a["orders"])
            metrics.purchase_cycle_days = (a["last"] - a["first"]).days / x if x else None
            metrics.days_since_last_order = (as_of - a["last"]).days
            metrics.frequency = x
            metrics.recency_days = (a["last"] - a["first"]).days
            metrics.tenure_days = (as_of - a["first"]).days
            metrics.monetary_value = _money(a["repeat"] / x) if x else Decimal(0)
            metrics.r_score, metrics.f_score, metrics.m_score = int(s.r[i]), int(s.f[i]), int(s.m[i])
            metrics.rfm_segment = rfm.SEGMENT_CODES[s.segment[i]]
            metrics.p_alive = _float_or_none(s.p_alive[i])
            metrics.expected_purchases_90d = _float_or_none(s.expected_purchases[i])
            metrics.predicted_clv_365d = None if clv is None else _money(Decimal(repr(clv)))
            metrics.expected_next_purchase_date = (
                None if next_days is None else as_of + timedelta(days=next_days)
            )
            metrics.churn_risk = float(s.churn_risk[i])
            metrics.value_tier = lifecycle.TIER_CODES[s.tier[i]]
            metrics.sleeping_high_value = bool(s.sleeping_high_value[i])
        metrics.lifecycle_stage = stage
        old_stage, old_since, old_as_of = previous.get(cid, (LifecycleStage.PROSPECT.value, None, None))
        if old_since is not None and old_stage == stage:
            since = old_since
        elif old_since is not None:
            since = as_of
        metrics.stage_since = since
        rows.append(metrics)
        if (
            emit_events
            and erased_at is None
            and stage != old_stage
            and (old_as_of is None or old_as_of <= as_of)
        ):
            new_events.append(
                NewEvent(
                    type=LIFECYCLE_STAGE_CHANGED,
                    customer_id=cid,
                    occurred_at=occurred_at,
                    properties={"from": old_stage, "to": stage, "as_of": as_of.isoformat()},
                )
            )
    events_append(events=new_events, now=now, batch_size=BATCH)
    CustomerMetrics.objects.bulk_create(
        rows,
        batch_size=BATCH,
        update_conflicts=True,
        unique_fields=["customer"],
        update_fields=_UPDATE_FIELDS,
    )
    timings["write"] = round(time.monotonic() - started - timings["aggregate"] - timings["fit_and_score"], 3)
    return PipelineOutput(result=result, timings=timings, customers=len(rows), stage_changes=len(new_events))
