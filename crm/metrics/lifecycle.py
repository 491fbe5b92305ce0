"""Lifecycle stages, churn risk and value tiers over NumPy columns of the customers with orders.

Customers without orders are prospects; the pipelines give them that stage without coming here."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from crm.metrics.rfm import mid_rank_positions
from crm.models.metrics import LifecycleSettings, LifecycleStage, ValueTier

STAGE_CODES: list[str] = [choice.value for choice in LifecycleStage]
TIER_CODES: list[str] = [choice.value for choice in ValueTier]
_NEW, _ACTIVE, _AT_RISK, _DORMANT, _CHURNED = (
    STAGE_CODES.index(s)
    for s in (
        LifecycleStage.NEW,
        LifecycleStage.ACTIVE,
        LifecycleStage.AT_RISK,
        LifecycleStage.DORMANT,
        LifecycleStage.CHURNED,
    )
)
DORMANT_CODE = _DORMANT
# Used when nobody has bought twice yet, so there is no median cycle to fall back on.
LAST_RESORT_CYCLE_DAYS = 30.0


@dataclass(frozen=True)
class Thresholds:
    mode: str = LifecycleSettings.Mode.CYCLE
    new_days: int = 30
    active_cycles: float = 1.5
    at_risk_cycles: float = 2.5
    dormant_cycles: float = 4.0
    min_cycle_days: float = 14.0
    max_cycle_days: float = 180.0
    default_cycle_days: float | None = None
    active_days: int = 90
    at_risk_days: int = 180
    dormant_days: int = 365
    high_value_share: float = 0.2
    medium_value_share: float = 0.3

    @classmethod
    def from_settings(cls, settings: LifecycleSettings) -> Thresholds:
        return cls(
            mode=settings.mode,
            new_days=settings.new_days,
            active_cycles=float(settings.active_cycles),
            at_risk_cycles=float(settings.at_risk_cycles),
            dormant_cycles=float(settings.dormant_cycles),
            min_cycle_days=float(settings.min_cycle_days),
            max_cycle_days=float(settings.max_cycle_days),
            default_cycle_days=None
            if settings.default_cycle_days is None
            else float(settings.default_cycle_days),
            active_days=settings.active_days,
            at_risk_days=settings.at_risk_days,
            dormant_days=settings.dormant_days,
            high_value_share=float(settings.high_value_share),
            medium_value_share=float(settings.medium_value_share),
        )


def stage_cycles(own_cycle: np.ndarray, th: Thresholds) -> tuple[np.ndarray, float]:
    """The cycle each customer's stage is judged by: their own mean days between purchase days, or for
    one-time buyers (NaN) the configured default or else the median of the repeat buyers' cycles;
    clipped to [min_cycle_days, max_cycle_days]. Returns the cycles and the fallback used."""
    own = np.asarray(own_cycle, dtype=float)
    known = own[~np.isnan(own)]
    if th.default_cycle_days is not None:
        fallback = th.default_cycle_days
    elif len(known):
        fallback = float(np.median(known))
    else:
        fallback = LAST_RESORT_CYCLE_DAYS
    cycle = np.where(np.isnan(own), fallback, own)
    return np.clip(cycle, th.min_cycle_days, th.max_cycle_days), fallback


def stage_codes(*, tenure_days: np.ndarray, days_since_last: np.ndarray, cycle: np.ndarray, th: Thresholds):
    """Stage codes (indexes into STAGE_CODES): new while the first purchase is younger than `new_days`;
    otherwise by the days since the last purchase, in purchase cycles (cycle mode) or in days (fixed)."""
    if th.mode == LifecycleSettings.Mode.FIXED:
        gap = np.asarray(days_since_last, dtype=float)
        limits = (th.active_days, th.at_risk_days, th.dormant_days)
    else:
        gap = days_since_last / cycle
        limits = (th.active_cycles, th.at_risk_cycles, th.dormant_cycles)
    codes = np.select(
        [gap <= limits[0], gap <= limits[1], gap <= limits[2]], [_ACTIVE, _AT_RISK, _DORMANT], _CHURNED
    ).astype(np.int16)
    codes[tenure_days < th.new_days] = _NEW
    return codes


def churn_risk(*, p_alive: np.ndarray, days_since_last: np.ndarray, cycle: np.ndarray) -> np.ndarray:
    """1 − P(alive) · P(on schedule), where P(on schedule) = exp(−max(0, gap/cycle − 1)) discounts a
    customer who is overdue for their next purchase. BG/NBD alone cannot see that a one-time buyer has
    gone quiet (they are alive with certainty in that model); the purchase cycle can."""
    overdue = np.maximum(0.0, days_since_last / cycle - 1.0)
    return 1.0 - p_alive * np.exp(-overdue)


def value_tier_codes(total_value: np.ndarray, th: Thresholds) -> np.ndarray:
    """Tier codes (indexes into TIER_CODES) by net spend: the top `high_value_share` of buyers are high
    value, the next `medium_value_share` medium, the rest low. Ties share a tier (mid-rank)."""
    if len(total_value) == 0:
        return np.zeros(0, dtype=np.int16)
    above_share = 1.0 - mid_rank_positions(total_value)
    high = TIER_CODES.index(ValueTier.HIGH)
    medium = TIER_CODES.index(ValueTier.MEDIUM)
    low = TIER_CODES.index(ValueTier.LOW)
    return np.select(
        [above_share < th.high_value_share, above_share < th.high_value_share + th.medium_value_share],
        [high, medium],
        low,
    ).astype(np.int16)
