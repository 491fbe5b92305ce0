"""The statistics of a campaign's experiment: pure functions over counts and sums, SciPy for quantiles.

Intervals are for the difference "arm minus reference" (a variant minus the holdout, or minus variant A):

- Rates (opened, clicked, converted per recipient): Newcombe's hybrid score interval (Newcombe 1998,
  method 10), built from each arm's Wilson score interval. Why not the textbook Wald interval
  (d +- z * sqrt(p1 q1 / n1 + p2 q2 / n2))? Campaign rates are small (a 2 % conversion, a 0.5 %
  unsubscribe) and test arms can be small; there Wald's coverage falls well below 95 %, it collapses to a
  zero-width interval when an arm has no successes, and it can leave [-1, 1]. The Wilson-based interval
  keeps close to its nominal coverage at small rates and small samples, never leaves [-1, 1], and has a
  width when an arm counted 0 successes.
- Revenue per recipient: Welch's t interval on the difference of means, from each arm's n, sum and sum of
  squares (what one GROUP BY returns). Welch because the arms' variances differ (most recipients spend
  nothing, a few spend a lot; the holdout's spread is not the variant's): the pooled-variance t interval
  would be wrong whenever the arm sizes differ too. Revenue is skewed, but at campaign sizes the mean is
  close to normal (central limit theorem); for a handful of recipients the interval is a rough guide.

statsmodels is not installed; SciPy's `norm`/`t` quantiles are all this needs. Money stays Decimal in the
database and in the report; the statistics run on floats after an exact variance (see `mean_and_variance`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction

from scipy import stats

DEFAULT_CONFIDENCE = 0.95

# The metrics the automatic winner can be chosen on (Campaign.winner_metric's values).
RATE_METRICS = ("opened", "clicked", "converted")
MEAN_METRICS = ("revenue",)


@dataclass(frozen=True)
class Interval:
    """A point estimate and its two-sided confidence interval."""

    estimate: float
    low: float
    high: float

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0

    def as_dict(self) -> dict:
        return {"estimate": self.estimate, "low": self.low, "high": self.high}


def _z(confidence: float) -> float:
    _check_confidence(confidence)
    return float(stats.norm.ppf(1 - (1 - confidence) / 2))


def _check_confidence(confidence: float) -> None:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence!r}")


def _check_count(successes: int, n: int) -> None:
    if n < 0 or successes < 0 or successes > n:
        raise ValueError(f"need 0 <= successes <= n, got {successes} of {n}")


def wilson_interval(successes: int, n: int, *, confidence: float = DEFAULT_CONFIDENCE) -> Interval | None:
    """Wilson's score interval for one proportion; None when n is 0 (no rate to estimate)."""
    _check_count(successes, n)
    if n == 0:
        return None
    z = _z(confidence)
    p = successes / n
    z2 = z * z
    denominator = 1 + z2 / n
    centre = (p + z2 / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denominator
    # Clamp float noise only: mathematically the interval already lies within [0, 1].
    return Interval(estimate=p, low=max(0.0, centre - half), high=min(1.0, centre + half))


def proportion_difference_interval(
    successes_1: int, n_1: int, successes_2: int, n_2: int, *, confidence: float = DEFAULT_CONFIDENCE
) -> Interval | None:
    """p1 - p2 with Newcombe's hybrid score interval (method 10):

        L = d - sqrt((p1 - l1)^2 + (u2 - p2)^2)
        U = d + sqrt((u1 - p1)^2 + (p2 - l2)^2)

    where (l_i, u_i) is arm i's Wilson interval. None when either arm is empty."""
    first = wilson_interval(successes_1, n_1, confidence=confidence)
    second = wilson_interval(successes_2, n_2, confidence=confidence)
    if first is None or second is None:
        return None
    p1, p2 = first.estimate, second.estimate
    d = p1 - p2
    low = d - math.sqrt((p1 - first.low) ** 2 + (second.high - p2) ** 2)
    high = d + math.sqrt((first.high - p1) ** 2 + (p2 - second.low) ** 2)
    return Interval(estimate=d, low=max(-1.0, low), high=min(1.0, high))


def _exact(value) -> Fraction:
    # Decimal and int convert exactly; a float through its repr (what the caller meant, not its binary).
    if isinstance(value, float):
        return Fraction(Decimal(repr(value)))
    return Fraction(value)


def mean_and_variance(n: int, total, total_of_squares) -> tuple[float, float] | None:
    """Mean and sample variance (n - 1 denominator) from n, sum and sum of squares; None when n < 2.

    Computed exactly in fractions and only then turned to floats: sum_sq - sum^2 / n in floats cancels
    catastrophically at a million recipients (two numbers of ~1e12 that differ in the last digits)."""
    if n < 0:
        raise ValueError(f"n must not be negative, got {n}")
    if n < 2:
        return None
    s, ss = _exact(total), _exact(total_of_squares)
    variance = (ss - s * s / n) / (n - 1)
    if variance < 0:
        raise ValueError("sum of squares is smaller than the sum allows (sum^2 / n > sum of squares)")
    return float(s / n), float(variance)


def welch_difference_interval(
    n_1: int,
    sum_1,
    sum_sq_1,
    n_2: int,
    sum_2,
    sum_sq_2,
    *,
    confidence: float = DEFAULT_CONFIDENCE,
) -> Interval | None:
    """mean1 - mean2 with Welch's t interval, from each arm's n, sum and sum of squares.

        se^2 = v1/n1 + v2/n2,  df = se^4 / ((v1/n1)^2/(n1-1) + (v2/n2)^2/(n2-1))  (Welch-Satterthwaite)

    None when an arm has fewer than 2 recipients. When both arms have no spread at all (everyone spent the
    same) the difference is known exactly and the interval is that point."""
    _check_confidence(confidence)
    first = mean_and_variance(n_1, sum_1, sum_sq_1)
    second = mean_and_variance(n_2, sum_2, sum_sq_2)
    if first is None or second is None:
        return None
    (m1, v1), (m2, v2) = first, second
    d = m1 - m2
    a, b = v1 / n_1, v2 / n_2
    se2 = a + b
    if se2 == 0:
        return Interval(estimate=d, low=d, high=d)
    df = se2 * se2 / (a * a / (n_1 - 1) + b * b / (n_2 - 1))
    t = float(stats.t.ppf(1 - (1 - confidence) / 2, df))
    half = t * math.sqrt(se2)
    return Interval(estimate=d, low=d - half, high=d + half)


def relative_uplift(treated: float, reference: float) -> float | None:
    """(treated - reference) / reference: "+12 %" next to the absolute difference; None when the
    reference is 0 (any uplift over nothing is infinite). Only a point estimate: the interval shown is the
    absolute one, whose coverage the functions above state."""
    if reference == 0:
        return None
    return (treated - reference) / reference


# ---- The automatic winner -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ArmOutcome:
    """One test arm's figures for the winner: n recipients, `successes` for a rate metric, `total` and
    `total_of_squares` for revenue."""

    key: str
    n: int
    successes: int = 0
    total: Decimal | int | float = 0
    total_of_squares: Decimal | int | float = 0


class WinnerReason:
    """Why the decision went as it did; stored as a code in winner_decision, translated when shown."""

    BEATS_A = "beats_a"  # a challenger's interval against A lies wholly above 0
    NO_CLEAR_WINNER = "no_clear_winner"  # every challenger's interval against A contains 0 (or is below)
    SAMPLE_TOO_SMALL = "sample_too_small"  # an arm had fewer recipients than the minimum sample
    ONLY_ONE_ARM = "only_one_arm"


def _metric_value(arm: ArmOutcome, metric: str) -> float | None:
    if arm.n == 0:
        return None
    if metric in RATE_METRICS:
        return arm.successes / arm.n
    return float(_exact(arm.total) / arm.n)


def _difference(arm: ArmOutcome, reference: ArmOutcome, metric: str, confidence: float) -> Interval | None:
    if metric in RATE_METRICS:
        return proportion_difference_interval(
            arm.successes, arm.n, reference.successes, reference.n, confidence=confidence
        )
    return welch_difference_interval(
        arm.n,
        arm.total,
        arm.total_of_squares,
        reference.n,
        reference.total,
        reference.total_of_squares,
        confidence=confidence,
    )


def winner_decide(
    *,
    arms: list[ArmOutcome],
    metric: str,
    min_sample: int,
    confidence: float = DEFAULT_CONFIDENCE,
    default_key: str = "A",
) -> dict:
    """Pick the variant the rest of the audience gets, and say why, as a JSON-ready dict.

    The rule (the issue: "a tie keeps A"):
    - A (`default_key`) is the incumbent; it is kept unless a challenger beats it *clearly*: the interval of
      (challenger - A) on the metric lies wholly above 0. An interval containing 0 is a tie: the test could
      not tell them apart, and switching on noise would be a coin toss dressed as a decision.
    - With several challengers each is compared with A at a Bonferroni-corrected confidence
      (1 - alpha / number of challengers), so that testing more variants does not make a false winner more
      likely. Among the challengers that beat A, the highest point estimate wins; an exact tie in the
      estimate goes to the earlier key.
    - If any arm has fewer recipients than `min_sample`, A is kept: the arms' sizes are fixed when the test
      phase starts, so waiting longer would not make them larger.
    - The holdout is not an arm here: it received nothing and cannot be sent to the rest.
    """
    if metric not in RATE_METRICS + MEAN_METRICS:
        raise ValueError(f"unknown winner metric {metric!r}")
    _check_confidence(confidence)
    by_key = {arm.key: arm for arm in arms}
    if default_key not in by_key:
        raise ValueError(f"the default arm {default_key!r} is not among the arms")
    ordered = sorted(arms, key=lambda arm: (arm.key != default_key, arm.key))
    reference = by_key[default_key]
    challengers = [arm for arm in ordered if arm.key != default_key]
    per_comparison = 1 - (1 - confidence) / max(1, len(challengers))

    decision = {
        "metric": metric,
        "min_sample": min_sample,
        "confidence": confidence,
        "comparison_confidence": per_comparison,
        "default_key": default_key,
        "arms": [
            {
                "key": arm.key,
                "n": arm.n,
                "successes": arm.successes if metric in RATE_METRICS else None,
                "total": str(arm.total) if metric in MEAN_METRICS else None,
                "value": _metric_value(arm, metric),
            }
            for arm in ordered
        ],
        "comparisons": [],
    }

    def decided(key: str, reason: str) -> dict:
        decision["winner_key"] = key
        decision["reason"] = reason
        return decision

    if not challengers:
        return decided(default_key, WinnerReason.ONLY_ONE_ARM)
    if any(arm.n < max(min_sample, 2 if metric in MEAN_METRICS else 1) for arm in ordered):
        return decided(default_key, WinnerReason.SAMPLE_TOO_SMALL)

    beating = []
    for arm in challengers:
        interval = _difference(arm, reference, metric, per_comparison)
        uplift = relative_uplift(_metric_value(arm, metric), _metric_value(reference, metric))
        decision["comparisons"].append(
            {"key": arm.key, "against": default_key, **interval.as_dict(), "relative_uplift": uplift}
        )
        if interval.low > 0:
            beating.append((interval.estimate, arm.key))
    if not beating:
        return decided(default_key, WinnerReason.NO_CLEAR_WINNER)
    _, key = min(beating, key=lambda item: (-item[0], item[1]))
    return decided(key, WinnerReason.BEATS_A)
