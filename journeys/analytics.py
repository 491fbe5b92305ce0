"""A journey's conversion and revenue against its holdout, for the designer's header.

Counted intention-to-treat, as campaign reports are (campaigns/reports.py says why): every enrollment of
the journey, whatever version, is in its arm's denominator. Holdout enrollments exit at once, so "reached
the goal" (the enrollment's state) cannot be compared across arms; instead, for both arms alike:

- converted: the customer had a goal event (the published version's goal event type, `order_placed` when
  the journey has none) at or after entering and within ATTRIBUTION_DAYS of it. The goal's property
  filters are not applied here (the engine applies them to end enrollments); the header says which event
  is counted.
- revenue: the customer's orders (net of refunds, in CURRENCY) placed in the same window.

Intervals are campaigns' (campaigns/experiment_statistics.py): Newcombe's hybrid score interval for the
difference of the rates, Welch's t interval for the difference of revenue per customer. One statement, set-based: the goal events and the orders in the span
of every window are joined to the enrollments (hash joins), never looked up enrollment by enrollment
(BENCHMARKS.md, bench/bench_journey_results.py).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal

from django.core.cache import cache
from django.db import connection, transaction
from django.utils import timezone
from django.utils.formats import number_format
from django.utils.translation import gettext as _

from campaigns.experiment_statistics import (
    Interval,
    proportion_difference_interval,
    welch_difference_interval,
)
from crm.models import Event, Order
from crm.selectors.event_summaries import money_text
from journeys.models import Enrollment, Journey, JourneyVersion, VersionStatus

ATTRIBUTION_DAYS = 30
# How long the designer shows the same figures: over a million enrollments they take seconds to count
# (BENCHMARKS.md), and every open designer asks for them again each minute.
RESULTS_CACHE_SECONDS = 300
CURRENCY = "CNY"
DEFAULT_GOAL_EVENT = "order_placed"

_SQL = """
-- Every window lies in [lo, hi) (no enrollment predates its journey; none starts after now): the goal
-- events and orders are read by that range first (the indexes on (type, occurred_at) and (customer,
-- placed_at)), each enrollment's own window applied in the join.
WITH e AS (
    SELECT id, customer_id, arm, entered_at FROM {enrollment} WHERE journey_id = %(journey)s
), conv AS (
    SELECT DISTINCT e.id
    FROM e
    JOIN {event} ev ON ev.customer_id = e.customer_id
    WHERE ev.type = %(goal)s AND ev.occurred_at >= %(lo)s AND ev.occurred_at < %(hi)s
      AND ev.occurred_at >= e.entered_at AND ev.occurred_at < e.entered_at + %(window)s
), rev AS (
    SELECT e.id, sum(o.total - o.refunded_amount) AS revenue
    FROM e
    JOIN {order} o ON o.customer_id = e.customer_id
    WHERE o.currency = %(currency)s AND o.placed_at >= %(lo)s AND o.placed_at < %(hi)s
      AND o.placed_at >= e.entered_at AND o.placed_at < e.entered_at + %(window)s
    GROUP BY e.id
)
SELECT e.arm,
       count(*) AS enrolled,
       count(conv.id) AS converted,
       coalesce(sum(rev.revenue), 0) AS revenue,
       coalesce(sum(rev.revenue * rev.revenue), 0) AS revenue_sq
FROM e
LEFT JOIN conv ON conv.id = e.id
LEFT JOIN rev ON rev.id = e.id
GROUP BY e.arm
"""


@dataclass(frozen=True)
class ArmResult:
    enrolled: int = 0
    converted: int = 0
    revenue: Decimal = Decimal("0")
    revenue_sq: Decimal = Decimal("0")

    @property
    def rate(self) -> float | None:
        return self.converted / self.enrolled if self.enrolled else None

    @property
    def revenue_per_customer(self) -> Decimal | None:
        return (self.revenue / self.enrolled).quantize(Decimal("0.01")) if self.enrolled else None


@dataclass(frozen=True)
class JourneyResults:
    goal_event: str
    attribution_days: int
    holdout_percent: int
    treated: ArmResult
    holdout: ArmResult
    rate_difference: Interval | None
    revenue_difference: Interval | None
    counted_at: dt.datetime


def _settings(journey: Journey) -> dict:
    # The published version's settings say what counts; before the first publish, the latest draft's.
    version = (
        JourneyVersion.objects.filter(journey=journey, status=VersionStatus.PUBLISHED).first()
        or JourneyVersion.objects.filter(journey=journey).order_by("-number").first()
    )
    return (version.settings or {}) if version else {}


def journey_results(*, journey: Journey, now: dt.datetime | None = None) -> JourneyResults:
    """Converted and revenue per arm, and the treated-minus-holdout intervals (None when an arm is too
    small for one)."""
    journey_settings = _settings(journey)
    goal = (journey_settings.get("goal") or {}).get("event_type") or DEFAULT_GOAL_EVENT
    sql = _SQL.format(
        event=Event._meta.db_table, enrollment=Enrollment._meta.db_table, order=Order._meta.db_table
    )
    arms: dict[str, ArmResult] = {}
    window = dt.timedelta(days=ATTRIBUTION_DAYS)
    with transaction.atomic(), connection.cursor() as cursor:
        # The hash tables of a million enrollments' conversions spill to disk at the default work_mem.
        cursor.execute("SET LOCAL work_mem = '64MB'")
        cursor.execute(
            sql,
            {
                "journey": journey.pk,
                "goal": goal,
                "window": window,
                "lo": journey.created_at,
                "hi": (now or timezone.now()) + window,
                "currency": CURRENCY,
            },
        )
        for arm, enrolled, converted, revenue, revenue_sq in cursor.fetchall():
            arms[arm] = ArmResult(int(enrolled), int(converted), Decimal(revenue), Decimal(revenue_sq))
    treated, holdout = arms.get("treated", ArmResult()), arms.get("holdout", ArmResult())
    return JourneyResults(
        counted_at=now or timezone.now(),
        goal_event=goal,
        attribution_days=ATTRIBUTION_DAYS,
        holdout_percent=int(journey_settings.get("holdout_percent") or 0),
        treated=treated,
        holdout=holdout,
        rate_difference=proportion_difference_interval(
            treated.converted, treated.enrolled, holdout.converted, holdout.enrolled
        ),
        revenue_difference=welch_difference_interval(
            treated.enrolled,
            treated.revenue,
            treated.revenue_sq,
            holdout.enrolled,
            holdout.revenue,
            holdout.revenue_sq,
        ),
    )


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{number_format(value * 100, decimal_pos=1, use_l10n=True)}%"


def _points(value: float) -> str:
    sign = "+" if value > 0 else "−" if value < 0 else "±"
    return f"{sign}{number_format(abs(value) * 100, decimal_pos=1, use_l10n=True)}"


def _signed_money(value: float) -> str:
    sign = "+" if value > 0 else "−" if value < 0 else "±"
    return f"{sign}{money_text(Decimal(str(round(abs(value), 2))), CURRENCY)}"


def _direction(interval: Interval | None) -> str:
    """ "up" or "down" when the interval leaves out zero (a difference the data is clear about), else ""."""
    if interval is None or not interval.excludes_zero:
        return ""
    return "up" if interval.low > 0 else "down"


def _count(n: int) -> str:
    return number_format(n, use_l10n=True, force_grouping=True)


def journey_results_display(*, journey: Journey) -> dict:
    """The figures as the designer's header shows them: each {"key", "label", "value", "detail"}, already
    worded and translated here, plus the sentence saying what is counted and when. Counted at most once
    per RESULTS_CACHE_SECONDS per journey (the words are made afresh in each language)."""
    # Keyed by the journey's creation too: a test database reuses ids, a cache may outlive it.
    key = f"journeys:results:{journey.pk}:{journey.created_at.timestamp()}"
    results = cache.get(key)
    if results is None:
        results = journey_results(journey=journey)
        cache.set(key, results, RESULTS_CACHE_SECONDS)
    treated, holdout = results.treated, results.holdout
    figures = [
        {
            "key": "converted",
            "label": _("Converted"),
            "value": _count(treated.converted),
            "detail": _("of %(n)s who entered (%(rate)s)")
            % {"n": _count(treated.enrolled), "rate": _percent(treated.rate)},
        }
    ]
    if holdout.enrolled:
        rate = results.rate_difference
        figures.append(
            {
                "key": "conversion",
                "label": _("Conversion against the holdout"),
                "value": _("%(diff)s pts") % {"diff": _points(rate.estimate)} if rate else "—",
                "detail": (
                    _(
                        "%(treated)s vs %(holdout)s in the holdout (%(n)s); 95%% interval %(low)s to %(high)s pts"
                    )
                    % {
                        "treated": _percent(treated.rate),
                        "holdout": _percent(holdout.rate),
                        "n": _count(holdout.enrolled),
                        "low": _points(rate.low),
                        "high": _points(rate.high),
                    }
                    if rate
                    else _("not enough customers yet")
                ),
                "direction": _direction(rate),
            }
        )
        revenue = results.revenue_difference
        figures.append(
            {
                "key": "revenue",
                "label": _("Revenue per customer against the holdout"),
                "value": _signed_money(revenue.estimate) if revenue else "—",
                "detail": (
                    _("%(treated)s vs %(holdout)s; 95%% interval %(low)s to %(high)s")
                    % {
                        "treated": money_text(treated.revenue_per_customer, CURRENCY),
                        "holdout": money_text(holdout.revenue_per_customer, CURRENCY),
                        "low": _signed_money(revenue.low),
                        "high": _signed_money(revenue.high),
                    }
                    if revenue
                    else _("not enough customers yet")
                ),
                "direction": _direction(revenue),
            }
        )
    else:
        figures.append(
            {
                "key": "conversion",
                "label": _("Conversion against the holdout"),
                "value": "—",
                "detail": _("no customer in the holdout yet")
                if results.holdout_percent
                else _("no holdout: set a holdout percentage in the journey settings to measure the uplift"),
            }
        )
    counted = _(
        "Converted: %(event)s within %(days)s days of entering; revenue: orders in those days. "
        "As of %(when)s."
    ) % {
        "event": results.goal_event,
        "days": results.attribution_days,
        "when": timezone.localtime(results.counted_at).strftime("%Y-%m-%d %H:%M"),
    }
    return {"figures": figures, "counted": counted}
