"""RFM scores (1-5 quintiles) and the named RFM segments, over NumPy columns of the customers with orders."""

from __future__ import annotations

import numpy as np

from crm.models.metrics import RfmSegment


def mid_rank_positions(values: np.ndarray) -> np.ndarray:
    """Each value's position in (0, 1): (values below + half the values tied) / n. Ties share a position.

    One sort (np.unique) and a gather: searchsorted of a million unsorted values into the sorted array
    does the same with a cache miss per lookup and is several times slower."""
    values = np.asarray(values, dtype=float)
    _distinct, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    below = np.cumsum(counts) - counts
    return ((below + 0.5 * counts) / len(values))[inverse.reshape(-1)]


def quintile_scores(values: np.ndarray, *, higher_is_better: bool = True) -> np.ndarray:
    """Scores 1-5 by quintile of `values`, 5 the best fifth.

    A customer's position is the mid-rank of their value (customers below, plus half of those tied), so
    tied customers always share a score: with 60% of buyers on one order, they all get F = 2 and the
    scale is not forced into equal fifths."""
    if len(values) == 0:
        return np.zeros(0, dtype=np.int16)
    position = mid_rank_positions(values)
    if not higher_is_better:
        position = 1.0 - position
    return np.clip(1 + np.floor(position * 5), 1, 5).astype(np.int16)


# Rows: R score 1..5; columns: FM score 1..5 (the mean of F and M, rounded half up). The grid is the
# customary R × FM segmentation of RFM practice; docs/metrics.md shows it as a table.
_S = RfmSegment
SEGMENT_GRID: list[list[str]] = [
    # FM:   1                  2                     3                      4                     5
    [_S.LOST, _S.LOST, _S.AT_RISK, _S.AT_RISK, _S.CANT_LOSE],  # R = 1
    [_S.HIBERNATING, _S.HIBERNATING, _S.AT_RISK, _S.AT_RISK, _S.CANT_LOSE],  # R = 2
    [_S.ABOUT_TO_SLEEP, _S.ABOUT_TO_SLEEP, _S.NEED_ATTENTION, _S.LOYAL, _S.LOYAL],  # R = 3
    [_S.PROMISING, _S.POTENTIAL_LOYALIST, _S.POTENTIAL_LOYALIST, _S.LOYAL, _S.LOYAL],  # R = 4
    [_S.NEW, _S.POTENTIAL_LOYALIST, _S.POTENTIAL_LOYALIST, _S.CHAMPIONS, _S.CHAMPIONS],  # R = 5
]
# Segments as small integer codes (the column-wise pipelines carry codes, not strings).
SEGMENT_CODES: list[str] = [choice.value for choice in RfmSegment]
_GRID_CODES = np.array([[SEGMENT_CODES.index(s.value) for s in row] for row in SEGMENT_GRID], dtype=np.int16)


def segment_of(r: int, f: int, m: int) -> str:
    return SEGMENT_GRID[r - 1][(f + m + 1) // 2 - 1].value


def segment_codes(r: np.ndarray, f: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Segment codes (indexes into SEGMENT_CODES) for columns of R, F and M scores."""
    fm = (f.astype(np.int16) + m + 1) // 2
    return _GRID_CODES[r - 1, fm - 1]
