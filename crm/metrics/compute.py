"""From per-customer order aggregates to scores, stages and predictions: pure NumPy, no database.

Both pipelines (PostgreSQL and the generic ORM one) read the same `BuyerColumns` and write the same
`Scores`, so the rules live here once."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from crm.metrics import clv, lifecycle, rfm
from crm.metrics.notes import note

logger = logging.getLogger(__name__)

EXPECTED_PURCHASES_DAYS = 90
CLV_DAYS = 365
# A next purchase the model does not expect within the value horizon is left empty: a date years ahead
# is not something anyone plans a campaign around.
MAX_NEXT_PURCHASE_DAYS = CLV_DAYS
# Below these counts a maximum-likelihood fit says more about the optimiser than about the customers.
MIN_BUYERS_FOR_FIT = 20
MIN_REPEAT_BUYERS_FOR_FIT = 5


@dataclass
class BuyerColumns:
    """One entry per customer with at least one counted order (days are integers since 1970-01-01)."""

    customer_id: np.ndarray
    order_count: np.ndarray
    purchase_days: np.ndarray
    first_day: np.ndarray
    last_day: np.ndarray
    total_value: np.ndarray  # net, float (exact money stays in SQL / Decimal)
    repeat_value: np.ndarray  # net value of the purchase days after the first

    def __len__(self) -> int:
        return len(self.customer_id)


@dataclass
class Scores:
    customer_id: np.ndarray
    r: np.ndarray
    f: np.ndarray
    m: np.ndarray
    segment: np.ndarray  # index into rfm.SEGMENT_CODES
    stage: np.ndarray  # index into lifecycle.STAGE_CODES
    p_alive: np.ndarray  # NaN without a fit
    expected_purchases: np.ndarray  # next EXPECTED_PURCHASES_DAYS; NaN without a fit
    clv: np.ndarray  # next CLV_DAYS; NaN without both fits
    next_purchase_days: np.ndarray  # days after as_of; NaN when none is expected
    churn_risk: np.ndarray
    tier: np.ndarray  # index into lifecycle.TIER_CODES
    sleeping_high_value: np.ndarray  # bool


@dataclass
class ComputeResult:
    scores: Scores
    bgnbd: clv.BgNbdParams | None
    gamma_gamma: clv.GammaGammaParams | None
    fallback_cycle_days: float
    repeat_buyers: int
    notes: list[dict] = field(default_factory=list)  # crm.metrics.notes codes


@dataclass(frozen=True)
class WarmStart:
    """The previous computation's parameters: tonight's customers are last night's plus a day, so the
    optimiser starts next to the answer and needs a handful of iterations instead of twenty."""

    bgnbd: tuple[float, float, float, float] | None = None
    gamma_gamma: tuple[float, float, float] | None = None


@dataclass
class PipelineOutput:
    result: ComputeResult
    timings: dict[str, float]
    customers: int
    stage_changes: int


def compute_scores(
    cols: BuyerColumns,
    *,
    as_of_day: int,
    thresholds: lifecycle.Thresholds,
    warm_start: WarmStart | None = None,
) -> ComputeResult:
    n = len(cols)
    notes: list[dict] = []
    x = (cols.purchase_days - 1).astype(float)
    t_x = (cols.last_day - cols.first_day).astype(float)
    T = (as_of_day - cols.first_day).astype(float)
    days_since_last = (as_of_day - cols.last_day).astype(float)
    repeat = x > 0
    m = np.zeros(n)
    m[repeat] = cols.repeat_value[repeat] / x[repeat]
    repeat_buyers = int(repeat.sum())

    # RFM
    r_score = rfm.quintile_scores(days_since_last, higher_is_better=False)
    f_score = rfm.quintile_scores(cols.order_count)
    m_score = rfm.quintile_scores(cols.total_value)
    segment = rfm.segment_codes(r_score, f_score, m_score) if n else np.zeros(0, dtype=np.int16)

    # Lifecycle
    own_cycle = np.full(n, np.nan)
    own_cycle[repeat] = t_x[repeat] / x[repeat]
    cycle, fallback = lifecycle.stage_cycles(own_cycle, thresholds)
    stage = lifecycle.stage_codes(tenure_days=T, days_since_last=days_since_last, cycle=cycle, th=thresholds)

    # Predictions
    p_alive = np.full(n, np.nan)
    expected = np.full(n, np.nan)
    clv_value = np.full(n, np.nan)
    next_days = np.full(n, np.nan)
    bg = gg = None
    if n >= MIN_BUYERS_FOR_FIT and repeat_buyers >= MIN_REPEAT_BUYERS_FOR_FIT:
        (xu, txu, Tu), counts, inverse = clv.compress(x, t_x, T)
        warm_start = warm_start or WarmStart()
        bg = clv.bgnbd_fit(xu, txu, Tu, counts, initial=warm_start.bgnbd)
        if not bg.converged:
            notes.append(note("bgnbd_not_converged"))
        pa_u = clv.bgnbd_p_alive(bg, xu, txu, Tu)
        p_alive = pa_u[inverse]
        exp_u = clv.bgnbd_expected_purchases(bg, EXPECTED_PURCHASES_DAYS, xu, txu, Tu)
        expected = exp_u[inverse]
        year_u = clv.bgnbd_expected_purchases(bg, CLV_DAYS, xu, txu, Tu)
        wait_u = clv.bgnbd_next_purchase_wait(bg, xu, Tu, pa_u)
        next_days = np.where(wait_u <= MAX_NEXT_PURCHASE_DAYS, np.ceil(wait_u), np.nan)[inverse]
        gg = clv.gamma_gamma_fit(x, m, initial=warm_start.gamma_gamma)
        if not gg.converged:
            notes.append(note("gg_not_converged"))
        if gg.q > 1.0:
            clv_value = year_u[inverse] * clv.gamma_gamma_expected_spend(gg, x, m)
        else:
            notes.append(note("gg_unbounded", q=f"{gg.q:.3f}"))
    else:
        notes.append(
            note(
                "too_few",
                buyers=int(n),
                repeat=int(repeat_buyers),
                min_buyers=MIN_BUYERS_FOR_FIT,
                min_repeat=MIN_REPEAT_BUYERS_FOR_FIT,
            )
        )
    # Without a fit the overdue purchase cycle alone makes the churn risk.
    churn = lifecycle.churn_risk(
        p_alive=np.where(np.isnan(p_alive), 1.0, p_alive), days_since_last=days_since_last, cycle=cycle
    )
    tier = lifecycle.value_tier_codes(cols.total_value, thresholds)
    sleeping = (tier == lifecycle.TIER_CODES.index("high")) & (stage == lifecycle.DORMANT_CODE)

    return ComputeResult(
        scores=Scores(
            customer_id=cols.customer_id,
            r=r_score,
            f=f_score,
            m=m_score,
            segment=segment,
            stage=stage,
            p_alive=p_alive,
            expected_purchases=expected,
            clv=clv_value,
            next_purchase_days=next_days,
            churn_risk=churn,
            tier=tier,
            sleeping_high_value=sleeping,
        ),
        bgnbd=bg,
        gamma_gamma=gg,
        fallback_cycle_days=fallback,
        repeat_buyers=repeat_buyers,
        notes=notes,
    )
