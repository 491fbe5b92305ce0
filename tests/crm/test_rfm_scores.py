"""RFM: quintile scores 1-5 that ties share, and the named segments of the R × FM grid."""

from datetime import date, timedelta

import numpy as np
import pytest

from crm.metrics import rfm
from crm.models.metrics import CustomerMetrics, RfmSegment
from crm.services.metrics import metrics_compute
from tests.crm.metrics_helpers import place_orders
from tests.factories import CustomerFactory


def test_distinct_values_fall_into_equal_fifths():
    scores = rfm.quintile_scores(np.arange(1, 11))
    assert scores.tolist() == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]


def test_lower_is_better_reverses_the_scale():
    scores = rfm.quintile_scores(np.arange(1, 11), higher_is_better=False)
    assert scores.tolist() == [5, 5, 4, 4, 3, 3, 2, 2, 1, 1]


def test_tied_customers_share_a_score():
    # Given 60% of buyers with one order (the usual shape of F), 20% with two, 20% with five
    orders = np.array([1] * 6 + [2] * 2 + [5] * 2)

    scores = rfm.quintile_scores(orders)

    # Then all one-order buyers share a score, below the two-order ones, below the five-order ones
    assert scores.tolist() == [2] * 6 + [4] * 2 + [5] * 2


def test_everyone_equal_is_the_middle_score():
    assert rfm.quintile_scores(np.full(7, 3.0)).tolist() == [3] * 7


def test_scores_are_between_1_and_5_at_any_size():
    rng = np.random.default_rng(7)
    for n in (1, 2, 3, 1000):
        scores = rfm.quintile_scores(rng.integers(0, 5, size=n))
        assert scores.min() >= 1 and scores.max() <= 5


@pytest.mark.parametrize(
    ("r", "f", "m", "segment"),
    [
        (5, 5, 5, RfmSegment.CHAMPIONS),
        (5, 4, 3, RfmSegment.CHAMPIONS),  # FM = 3.5, rounded half up: 4
        (5, 1, 1, RfmSegment.NEW),
        (5, 2, 3, RfmSegment.POTENTIAL_LOYALIST),
        (4, 1, 1, RfmSegment.PROMISING),
        (4, 5, 4, RfmSegment.LOYAL),
        (3, 5, 5, RfmSegment.LOYAL),
        (3, 3, 3, RfmSegment.NEED_ATTENTION),
        (3, 1, 2, RfmSegment.ABOUT_TO_SLEEP),
        (2, 3, 4, RfmSegment.AT_RISK),
        (1, 5, 5, RfmSegment.CANT_LOSE),
        (2, 5, 4, RfmSegment.CANT_LOSE),
        (2, 1, 2, RfmSegment.HIBERNATING),
        (1, 1, 1, RfmSegment.LOST),
        (1, 2, 2, RfmSegment.LOST),
    ],
)
def test_segment_grid(r, f, m, segment):
    assert rfm.segment_of(r, f, m) == segment
    code = rfm.segment_codes(np.array([r]), np.array([f]), np.array([m]))[0]
    assert rfm.SEGMENT_CODES[code] == segment


def test_every_cell_of_the_grid_has_a_segment():
    r, f, m = (a.ravel() for a in np.meshgrid(*[np.arange(1, 6)] * 3, indexing="ij"))
    codes = rfm.segment_codes(r, f, m)
    named = {rfm.SEGMENT_CODES[c] for c in codes}
    assert named == {s.value for s in RfmSegment}


@pytest.mark.django_db
@pytest.mark.parametrize("pipeline", ["postgres", "generic"])
def test_computed_rfm_scores_rank_customers(pipeline):
    # Given ten customers: customer i last bought i days before as-of, placed i+1 orders worth 10·(i+1)
    as_of = date(2026, 6, 30)
    customers = []
    for i in range(10):
        customer = CustomerFactory()
        days = [as_of - timedelta(days=i + 7 * k) for k in range(i + 1)]
        place_orders(customer, *[(d, f"{10 * (i + 1)}.00") for d in days])
        customers.append(customer)

    metrics_compute(as_of=as_of, pipeline=pipeline)

    rows = {m.customer_id: m for m in CustomerMetrics.objects.all()}
    got = [(rows[c.pk].r_score, rows[c.pk].f_score, rows[c.pk].m_score) for c in customers]
    # Most recent = best R; most orders and most spend = best F and M.
    assert [r for r, _, _ in got] == [5, 5, 4, 4, 3, 3, 2, 2, 1, 1]
    assert [f for _, f, _ in got] == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    assert [m for _, _, m in got] == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    assert rows[customers[0].pk].rfm_segment == RfmSegment.NEW
    assert rows[customers[9].pk].rfm_segment == RfmSegment.CANT_LOSE
    assert rows[customers[5].pk].rfm_segment == RfmSegment.NEED_ATTENTION
