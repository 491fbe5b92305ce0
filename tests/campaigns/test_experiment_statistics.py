"""campaigns/experiment_statistics.py (named so as not to shadow the standard library's `statistics` when campaigns/ is on sys.path, as it is for makemessages run there) against hand computations and published values.

z = 1.959964 (the 97.5 % normal quantile) throughout unless said."""

from decimal import Decimal

import pytest
from scipy import stats

from campaigns.experiment_statistics import (
    ArmOutcome,
    WinnerReason,
    mean_and_variance,
    proportion_difference_interval,
    relative_uplift,
    welch_difference_interval,
    wilson_interval,
    winner_decide,
)

Z = 1.959964


def test_wilson_interval_by_hand():
    # 56 of 70: p = 0.8, z^2 = 3.841459, n = 70
    #   centre = (p + z^2/(2n)) / (1 + z^2/n) = (0.8 + 0.0274390) / 1.0548780 = 0.7841931
    #   half   = z * sqrt(p(1-p)/n + z^2/(4n^2)) / (1 + z^2/n)
    #          = 1.959964 * sqrt(0.0022857 + 0.0001960) / 1.0548780 = 1.959964 * 0.0498171 / 1.0548780
    #          = 0.0925597
    #   -> [0.6916334, 0.8767528]; Newcombe (1998, table I, method 3) prints 0.6920, 0.8770 (rounded)
    interval = wilson_interval(56, 70)
    assert interval.estimate == pytest.approx(0.8)
    assert interval.low == pytest.approx(0.6918, abs=5e-4)
    assert interval.high == pytest.approx(0.8770, abs=5e-4)


def test_wilson_interval_has_width_at_zero_successes_unlike_wald():
    # 0 of 20: Wald gives [0, 0]; Wilson gives [0, z^2/(n + z^2)] = [0, 3.841459/23.841459] = [0, 0.16112]
    interval = wilson_interval(0, 20)
    assert interval.low == 0
    assert interval.high == pytest.approx(3.841459 / 23.841459, rel=1e-5)


def test_wilson_interval_of_no_recipients_is_none_and_bad_counts_are_refused():
    assert wilson_interval(0, 0) is None
    with pytest.raises(ValueError):
        wilson_interval(5, 3)
    with pytest.raises(ValueError):
        wilson_interval(1, 3, confidence=1.5)


def test_newcombe_difference_by_hand_and_against_newcombe_1998():
    # 56/70 - 48/80 = 0.8 - 0.6 = 0.2
    # Wilson 56/70: [0.691834, 0.876953]; Wilson 48/80: [0.490455, 0.700382]
    #   L = d - sqrt((p1 - l1)^2 + (u2 - p2)^2) = 0.2 - sqrt(0.108166^2 + 0.100382^2) = 0.2 - 0.147569
    #     = 0.052431
    #   U = d + sqrt((u1 - p1)^2 + (p2 - l2)^2) = 0.2 + sqrt(0.076953^2 + 0.109545^2) = 0.2 + 0.133873
    #     = 0.333873
    # Newcombe (1998), Statistics in Medicine 17:873-890, table II example (a), method 10: 0.0524, 0.3339
    interval = proportion_difference_interval(56, 70, 48, 80)
    assert interval.estimate == pytest.approx(0.2)
    assert interval.low == pytest.approx(0.0524, abs=5e-5)
    assert interval.high == pytest.approx(0.3339, abs=5e-5)
    assert interval.excludes_zero


@pytest.mark.parametrize(
    ("counts", "published"),
    [
        ((9, 10, 3, 10), (0.1705, 0.8090)),  # Newcombe's example (e)
        ((5, 56, 0, 29), (-0.0381, 0.1926)),  # example (g): an arm with no successes
    ],
)
def test_newcombe_difference_matches_the_published_examples(counts, published):
    interval = proportion_difference_interval(*counts)
    assert (interval.low, interval.high) == pytest.approx(published, abs=5e-5)


def test_newcombe_difference_with_zero_successes_on_both_sides_has_width():
    # 0/10 - 0/20: d = 0; L = -(u2 - 0) = -z^2/(20 + z^2) = -0.161125; U = u1 = z^2/(10 + z^2) = 0.277533
    interval = proportion_difference_interval(0, 10, 0, 20)
    assert interval.estimate == 0
    assert interval.low == pytest.approx(-0.161125, abs=1e-6)
    assert interval.high == pytest.approx(0.277533, abs=1e-6)
    assert not interval.excludes_zero


def test_welch_interval_by_hand_from_n_sum_and_sum_of_squares():
    # A spends [0, 0, 10, 20]: n 4, sum 30, sum of squares 500; mean 7.5, var (500 - 900/4)/3 = 91.6667
    # B spends [0, 5, 5]:      n 3, sum 10, sum of squares 50;  mean 3.3333, var (50 - 100/3)/2 = 8.3333
    #   d = 4.1667; se^2 = 91.6667/4 + 8.3333/3 = 22.9167 + 2.7778 = 25.6944; se = 5.06897
    #   df = 25.6944^2 / (22.9167^2/3 + 2.7778^2/2) = 660.205 / (175.058 + 3.858) = 3.6900
    #   t(0.975, 3.69) = 2.8709 (between the table's 3.182 at df 3 and 2.776 at df 4)
    #   half = 2.8709 * 5.06897 = 14.5525 -> [-10.386, 18.719]
    interval = welch_difference_interval(4, 30, 500, 3, 10, 50)
    assert interval.estimate == pytest.approx(4.1667, abs=1e-4)
    assert interval.low == pytest.approx(-10.386, abs=1e-3)
    assert interval.high == pytest.approx(18.719, abs=1e-3)
    # ...and SciPy's Welch test on the raw values, an independent route, agrees
    raw = stats.ttest_ind([0, 0, 10, 20], [0, 5, 5], equal_var=False).confidence_interval()
    assert (interval.low, interval.high) == pytest.approx((raw.low, raw.high), rel=1e-12)


def test_welch_interval_takes_decimal_money():
    interval = welch_difference_interval(
        4, Decimal("30.00"), Decimal("500.0000"), 3, Decimal("10.00"), Decimal("50.0000")
    )
    assert interval.low == pytest.approx(-10.386, abs=1e-3)


def test_variance_is_exact_where_floats_cancel():
    # Two recipients spending 100000000.01 and 100000000.03: variance (0.02^2)/2 = 0.0002.
    # sum = 200000000.04; sum of squares = 2e16 + 8e6 + 0.001: in floats sum^2/n and the sum of squares
    # agree to 16 digits and their difference is noise.
    s = Decimal("200000000.04")
    ss = Decimal("100000000.01") ** 2 + Decimal("100000000.03") ** 2
    mean, variance = mean_and_variance(2, s, ss)
    assert mean == pytest.approx(100000000.02)
    assert variance == pytest.approx(0.0002, rel=1e-12)
    naive = (float(ss) - float(s) ** 2 / 2) / 1
    assert naive != pytest.approx(0.0002, rel=1e-3)  # the trap the exact arithmetic avoids


def test_welch_interval_edge_cases():
    assert welch_difference_interval(1, 5, 25, 10, 0, 0) is None
    # nobody spent anything on either side: the difference is exactly 0
    point = welch_difference_interval(10, 0, 0, 10, 0, 0)
    assert (point.estimate, point.low, point.high) == (0, 0, 0)
    with pytest.raises(ValueError):
        mean_and_variance(3, 30, 10)  # sum^2/n = 300 > 10: impossible figures


def test_relative_uplift():
    assert relative_uplift(0.12, 0.10) == pytest.approx(0.2)
    assert relative_uplift(0.12, 0) is None


# ---- the automatic winner -------------------------------------------------------------------------------


def _arms(*rows):
    return [ArmOutcome(key=key, n=n, successes=x) for key, n, x in rows]


def test_a_challenger_whose_interval_is_above_zero_wins():
    # 160/1000 - 100/1000 = 0.06; its interval [0.0306, 0.0895] is above 0 (one challenger: 95 %)
    decision = winner_decide(
        arms=_arms(("A", 1000, 100), ("B", 1000, 160)), metric="converted", min_sample=100
    )
    assert decision["winner_key"] == "B"
    assert decision["reason"] == WinnerReason.BEATS_A
    (comparison,) = decision["comparisons"]
    assert comparison["key"] == "B" and comparison["against"] == "A"
    assert (comparison["low"], comparison["high"]) == pytest.approx((0.0306, 0.0895), abs=1e-4)
    assert comparison["relative_uplift"] == pytest.approx(0.6)


def test_an_interval_containing_zero_is_a_tie_and_keeps_a():
    # 110/1000 - 100/1000 = 0.01 in [-0.0170, 0.0370]: B looks better but the test cannot tell
    decision = winner_decide(arms=_arms(("A", 1000, 100), ("B", 1000, 110)), metric="clicked", min_sample=100)
    assert decision["winner_key"] == "A"
    assert decision["reason"] == WinnerReason.NO_CLEAR_WINNER


def test_an_exact_tie_keeps_a_and_a_worse_challenger_loses():
    assert (
        winner_decide(arms=_arms(("A", 500, 50), ("B", 500, 50)), metric="opened", min_sample=1)["winner_key"]
        == "A"
    )
    assert (
        winner_decide(arms=_arms(("A", 1000, 160), ("B", 1000, 100)), metric="opened", min_sample=1)[
            "winner_key"
        ]
        == "A"
    )


def test_too_small_an_arm_keeps_a_whatever_the_figures():
    decision = winner_decide(arms=_arms(("A", 99, 0), ("B", 1000, 900)), metric="converted", min_sample=100)
    assert decision["winner_key"] == "A"
    assert decision["reason"] == WinnerReason.SAMPLE_TOO_SMALL


def test_more_challengers_need_a_clearer_win_bonferroni():
    # 130/1000 - 100/1000: at 95 % the interval is [0.0020, 0.0581] (a win); with a second challenger
    # each comparison is at 97.5 % and it becomes [-0.0020, 0.0621]: no longer a clear win.
    two = winner_decide(arms=_arms(("A", 1000, 100), ("B", 1000, 130)), metric="converted", min_sample=1)
    assert two["winner_key"] == "B"
    three = winner_decide(
        arms=_arms(("A", 1000, 100), ("B", 1000, 130), ("C", 1000, 100)), metric="converted", min_sample=1
    )
    assert three["comparison_confidence"] == pytest.approx(0.975)
    assert three["winner_key"] == "A"


def test_among_challengers_beating_a_the_best_wins_and_an_exact_tie_goes_to_the_earlier_key():
    best = winner_decide(
        arms=_arms(("C", 1000, 200), ("A", 1000, 100), ("B", 1000, 170)), metric="converted", min_sample=1
    )
    assert best["winner_key"] == "C"
    assert [arm["key"] for arm in best["arms"]] == ["A", "B", "C"]
    tied = winner_decide(
        arms=_arms(("A", 1000, 100), ("C", 1000, 200), ("B", 1000, 200)), metric="converted", min_sample=1
    )
    assert tied["winner_key"] == "B"


def test_winner_on_revenue_per_recipient_uses_welch():
    # A: 1000 recipients, 100 spent 100.00 each: sum 10000, sum of squares 100 * 100^2 = 1e6
    # B: 1000 recipients, 200 spent 100.00 each: sum 20000, sum of squares 2e6
    # mean 10 vs 20; var A = (1e6 - 1e8/1000)/999 = 900.9, var B = (2e6 - 4e8/1000)/999 = 1601.6
    # se = sqrt(0.9009 + 1.6016) = 1.5819; df ~ 1860; d = 10 +- 1.961 * 1.5819 = [6.898, 13.102]
    arms = [
        ArmOutcome(key="A", n=1000, total=Decimal("10000.00"), total_of_squares=Decimal("1000000.0000")),
        ArmOutcome(key="B", n=1000, total=Decimal("20000.00"), total_of_squares=Decimal("2000000.0000")),
    ]
    decision = winner_decide(arms=arms, metric="revenue", min_sample=100)
    assert decision["winner_key"] == "B"
    (comparison,) = decision["comparisons"]
    assert comparison["low"] == pytest.approx(6.898, abs=2e-3)
    assert comparison["high"] == pytest.approx(13.102, abs=2e-3)
    assert decision["arms"][1]["total"] == "20000.00"


def test_winner_refuses_unknown_metric_and_missing_a():
    with pytest.raises(ValueError):
        winner_decide(arms=_arms(("A", 10, 1)), metric="likes", min_sample=1)
    with pytest.raises(ValueError):
        winner_decide(arms=_arms(("B", 10, 1)), metric="opened", min_sample=1)
    assert winner_decide(arms=_arms(("A", 10, 1)), metric="opened", min_sample=1)["reason"] == (
        WinnerReason.ONLY_ONE_ARM
    )


def test_decision_is_json_ready():
    import json

    decision = winner_decide(
        arms=_arms(("A", 1000, 100), ("B", 1000, 160)), metric="converted", min_sample=100
    )
    assert json.loads(json.dumps(decision))["winner_key"] == "B"
