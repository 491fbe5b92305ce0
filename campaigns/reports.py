"""A campaign run's report: per arm, what was sent and what it earned, with intervals against the holdout
and against the other variants (campaigns/experiment_statistics.py says which intervals and why).

Counted intention-to-treat: every recipient of an arm (CampaignRecipient, holdout included) is in its
arm's denominator, whether or not a message reached them (suppressed, capped, failed). Counting only those
who got the message would compare the reachable of one arm with everyone of the holdout, and credit the
campaign with the difference between reachable and unreachable customers.

Converted: an order (not fully refunded, in the campaign's currency) placed within `attribution_days`
after the recipient's phase was sent: the run's due time for the test/all phase and for the holdout (the
holdout receives nothing, so "its send" is the moment the others' started), the winner's decision for the
rest. Revenue: those orders' totals net of refunds.

One statement, set-based: the run's recipients joined to its messages, its unsubscribes and the orders in
the window, aggregated per customer and then per (arm, phase) with a second grouping per day of first
conversion for the chart (GROUPING SETS: one pass over the join). PostgreSQL only (the report is an
analytical query over a million rows; SQLite's demo database says so on the page instead). Over a million
recipients it takes seconds, so pages read the stored result (campaigns/services/reports.py); the figures
are in BENCHMARKS.md (bench/bench_campaign_report.py)."""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field
from decimal import Decimal

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from campaigns import experiment_statistics as statistics
from campaigns.models import Message
from crm.models import Order
from crm.models.events import Event

HOLDOUT = "holdout"
# Rate metrics and the recipient counts they are over; "revenue" is a mean (Welch).
REPORT_RATE_METRICS = ("opened", "clicked", "converted", "unsubscribed")


class ReportUnavailable(Exception):
    """The report cannot be computed here (not PostgreSQL); `code` is shown translated."""

    def __init__(self, code: str):
        super().__init__(code)
        self.code = code


@dataclass
class ArmFigures:
    key: str  # "A", "B", ... or "holdout"
    phase: str  # "all", "test" or "rest"
    recipients: int = 0
    messages: int = 0  # a message was put in the outbox for the recipient
    sent: int = 0
    delivered: int = 0
    opened: int = 0
    clicked: int = 0
    failed: int = 0
    suppressed: int = 0
    unsubscribed: int = 0
    converted: int = 0
    revenue: Decimal = Decimal("0")
    revenue_sq: Decimal = Decimal("0")  # sum over recipients of (their revenue)^2, for Welch

    @property
    def is_holdout(self) -> bool:
        return self.key == HOLDOUT

    @property
    def label_key(self) -> str:
        return self.key if self.phase != "rest" else f"{self.key}:rest"

    def rate(self, metric: str) -> float | None:
        return getattr(self, metric) / self.recipients if self.recipients else None

    @property
    def revenue_per_recipient(self) -> Decimal | None:
        if not self.recipients:
            return None
        return (self.revenue / self.recipients).quantize(Decimal("0.01"))


@dataclass
class Comparison:
    metric: str  # converted / opened / clicked / unsubscribed / revenue
    arm: str
    against: str
    estimate: float
    low: float
    high: float
    relative_uplift: float | None

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0


@dataclass
class RunReport:
    run_id: int
    currency: str
    attribution_days: int
    window_start: dt.datetime
    rest_window_start: dt.datetime | None
    computed_at: dt.datetime
    arms: list[ArmFigures]
    comparisons: list[Comparison] = field(default_factory=list)
    # {arm label_key: [(business-zone date, conversions that day), ...]} in date order
    conversions_by_day: dict[str, list[tuple[dt.date, int]]] = field(default_factory=dict)
    confidence: float = statistics.DEFAULT_CONFIDENCE

    def as_json(self) -> dict:
        """The report as JSON (campaigns.CampaignRunReport.figures); `from_json` reads it back."""
        return {
            "run_id": self.run_id,
            "currency": self.currency,
            "attribution_days": self.attribution_days,
            "window_start": self.window_start.isoformat(),
            "rest_window_start": self.rest_window_start.isoformat() if self.rest_window_start else None,
            "computed_at": self.computed_at.isoformat(),
            "confidence": self.confidence,
            "arms": [
                {**asdict(arm), "revenue": str(arm.revenue), "revenue_sq": str(arm.revenue_sq)}
                for arm in self.arms
            ],
            "comparisons": [asdict(c) for c in self.comparisons],
            "conversions_by_day": {
                key: [[day.isoformat(), n] for day, n in points]
                for key, points in self.conversions_by_day.items()
            },
        }

    @classmethod
    def from_json(cls, data: dict) -> RunReport:
        def moment(value):
            return dt.datetime.fromisoformat(value) if value else None

        return cls(
            run_id=data["run_id"],
            currency=data["currency"],
            attribution_days=data["attribution_days"],
            window_start=moment(data["window_start"]),
            rest_window_start=moment(data["rest_window_start"]),
            computed_at=moment(data["computed_at"]),
            confidence=data["confidence"],
            arms=[
                ArmFigures(**{**a, "revenue": Decimal(a["revenue"]), "revenue_sq": Decimal(a["revenue_sq"])})
                for a in data["arms"]
            ],
            comparisons=[Comparison(**c) for c in data["comparisons"]],
            conversions_by_day={
                key: [(dt.date.fromisoformat(day), n) for day, n in points]
                for key, points in data["conversions_by_day"].items()
            },
        )

    def arm(self, key: str, phase: str | None = None) -> ArmFigures | None:
        for arm in self.arms:
            if arm.key == key and (phase is None or arm.phase == phase):
                return arm
        return None

    def comparison(self, metric: str, arm: str, against: str) -> Comparison | None:
        for c in self.comparisons:
            if (c.metric, c.arm, c.against) == (metric, arm, against):
                return c
        return None

    @property
    def totals(self) -> ArmFigures:
        total = ArmFigures(key="", phase="")
        for arm in self.arms:
            for name in ("recipients", "messages", "sent", "delivered", "opened", "clicked", "failed"):
                setattr(total, name, getattr(total, name) + getattr(arm, name))
            for name in ("suppressed", "unsubscribed", "converted", "revenue", "revenue_sq"):
                setattr(total, name, getattr(total, name) + getattr(arm, name))
        return total


def _tables() -> dict:
    from campaigns.models import CampaignRecipient

    return {
        "recipient": CampaignRecipient._meta.db_table,
        "message": Message._meta.db_table,
        "order": Order._meta.db_table,
        "event": Event._meta.db_table,
    }


# Message statuses that mean it reached the provider and beyond (a bounce after sending has sent_at too).
_DELIVERED = ["delivered", "opened", "clicked"]

_SQL = """
WITH m AS (
    SELECT msg.id, msg.customer_id, msg.status, msg.sent_at, msg.delivered_at, msg.opened_at, msg.clicked_at
    FROM {message} msg
    WHERE msg.source_kind = 'campaign' AND msg.source_ref = %(ref)s AND msg.occurrence = %(occurrence)s
), u AS (
    -- tracking records one `unsubscribed` event per message (external id campaigns:unsubscribed:<id>)
    SELECT DISTINCT (e.properties ->> 'message_id')::bigint AS message_id
    FROM {event} e
    WHERE e.type = 'unsubscribed' AND e.occurred_at >= %(start)s
      AND e.properties ->> 'source_kind' = 'campaign' AND e.properties ->> 'campaign_id' = %(ref)s
), o AS (
    -- The constant range [lo, hi) (every window lies in it) lets the orders be filtered before the join;
    -- each recipient's own window (the rest's starts later) is applied after it.
    SELECT cr.customer_id,
           sum(o.total - o.refunded_amount) AS revenue,
           min(o.placed_at) FILTER (WHERE o.status <> 'refunded') AS first_at
    FROM {order} o
    JOIN {recipient} cr ON cr.customer_id = o.customer_id AND cr.run_id = %(run)s
    WHERE o.placed_at >= %(lo)s AND o.placed_at < %(hi)s AND o.currency = %(currency)s
      AND o.placed_at >= CASE WHEN cr.arm <> 'holdout' AND cr.phase = 'rest' THEN %(rest_start)s
                              ELSE %(start)s END
      AND o.placed_at < CASE WHEN cr.arm <> 'holdout' AND cr.phase = 'rest' THEN %(rest_end)s
                             ELSE %(end)s END
    GROUP BY cr.customer_id
), per AS (
    -- the holdout is one group whatever phase its hash gave it: it gets nothing in either phase
    SELECT r.arm, CASE WHEN r.arm = 'holdout' THEN 'all' ELSE r.phase END AS phase, m.id AS message_id, m.status, m.sent_at, m.delivered_at, m.opened_at,
           m.clicked_at, u.message_id IS NOT NULL AS unsubscribed,
           coalesce(o.revenue, 0) AS revenue, o.first_at,
           (o.first_at AT TIME ZONE %(zone)s)::date AS converted_on
    FROM {recipient} r
    LEFT JOIN m ON m.customer_id = r.customer_id
    LEFT JOIN o ON o.customer_id = r.customer_id
    LEFT JOIN u ON u.message_id = m.id
    WHERE r.run_id = %(run)s
)
SELECT arm, phase, converted_on, GROUPING(converted_on) AS by_arm,
       count(*) AS recipients,
       count(message_id) AS messages,
       count(*) FILTER (WHERE sent_at IS NOT NULL) AS sent,
       count(*) FILTER (WHERE delivered_at IS NOT NULL OR status = ANY(%(delivered)s)) AS delivered,
       count(*) FILTER (WHERE opened_at IS NOT NULL OR clicked_at IS NOT NULL) AS opened,
       count(*) FILTER (WHERE clicked_at IS NOT NULL) AS clicked,
       count(*) FILTER (WHERE status = 'failed') AS failed,
       count(*) FILTER (WHERE status = 'suppressed') AS suppressed,
       count(*) FILTER (WHERE unsubscribed) AS unsubscribed,
       count(first_at) AS converted,
       sum(revenue) AS revenue,
       sum(revenue * revenue) AS revenue_sq
FROM per
GROUP BY GROUPING SETS ((arm, phase), (arm, phase, converted_on))
"""


def _arm_order(arm: ArmFigures) -> tuple:
    # variants in key order, the rest after the test arms, the holdout last
    return (arm.is_holdout, arm.phase == "rest", arm.key)


def report_params(run) -> dict:
    campaign = run.campaign
    start = run.due_at
    # The rest is sent when the winner is decided; before that its window has not opened.
    rest_start = run.winner_decided_at or run.winner_due_at or start
    window = dt.timedelta(days=int(campaign.attribution_days))
    return {
        "run": run.pk,
        "ref": str(campaign.pk),
        "occurrence": str(run.pk),
        "start": start,
        "end": start + window,
        "rest_start": rest_start,
        "rest_end": rest_start + window,
        "lo": min(start, rest_start),
        "hi": max(start, rest_start) + window,
        "currency": campaign.currency,
        "zone": settings.TIME_ZONE,
        "delivered": _DELIVERED,
    }


def campaign_run_report(run, *, now: dt.datetime | None = None) -> RunReport:
    """The report of one run (see the module's docstring). Raises ReportUnavailable off PostgreSQL."""
    if connection.vendor != "postgresql":
        raise ReportUnavailable("report_needs_postgresql")
    now = now or timezone.now()
    campaign = run.campaign
    params = report_params(run)
    start = params["start"]
    with transaction.atomic(), connection.cursor() as cursor:
        # The joins hash a million rows each: with the default 4 MB of work_mem they spill to temporary
        # files in 16 batches; and JIT compiling the aggregates costs more than it saves at this size.
        # SET LOCAL ends with this transaction (or the caller's, when there is one).
        cursor.execute("SET LOCAL work_mem = '128MB'")
        cursor.execute("SET LOCAL jit = off")
        cursor.execute(_SQL.format(**_tables()), params)
        columns = [c.name for c in cursor.description]
        rows = [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]

    arms: dict[tuple[str, str], ArmFigures] = {}
    days: dict[tuple[str, str], list[tuple[dt.date, int]]] = {}
    for row in rows:
        key = (row["arm"], row["phase"])
        if row["by_arm"]:
            arms[key] = ArmFigures(
                key=row["arm"],
                phase=row["phase"],
                **{
                    name: row[name]
                    for name in (
                        "recipients",
                        "messages",
                        "sent",
                        "delivered",
                        "opened",
                        "clicked",
                        "failed",
                        "suppressed",
                        "unsubscribed",
                        "converted",
                    )
                },
                revenue=Decimal(row["revenue"] or 0),
                revenue_sq=Decimal(row["revenue_sq"] or 0),
            )
        elif row["converted_on"] is not None:
            days.setdefault(key, []).append((row["converted_on"], row["converted"]))
    ordered = sorted(arms.values(), key=_arm_order)
    report = RunReport(
        run_id=run.pk,
        currency=campaign.currency,
        attribution_days=int(campaign.attribution_days),
        window_start=start,
        rest_window_start=run.winner_decided_at,
        computed_at=now,
        arms=ordered,
        conversions_by_day={
            arms[key].label_key: sorted(points) for key, points in days.items() if key in arms
        },
    )
    report.comparisons = _comparisons(ordered, confidence=report.confidence)
    return report


def _compare(metric: str, arm: ArmFigures, other: ArmFigures, confidence: float) -> Comparison | None:
    if metric == "revenue":
        interval = statistics.welch_difference_interval(
            arm.recipients,
            arm.revenue,
            arm.revenue_sq,
            other.recipients,
            other.revenue,
            other.revenue_sq,
            confidence=confidence,
        )
        mine = float(arm.revenue / arm.recipients) if arm.recipients else 0.0
        theirs = float(other.revenue / other.recipients) if other.recipients else 0.0
    else:
        interval = statistics.proportion_difference_interval(
            getattr(arm, metric),
            arm.recipients,
            getattr(other, metric),
            other.recipients,
            confidence=confidence,
        )
        mine, theirs = arm.rate(metric) or 0.0, other.rate(metric) or 0.0
    if interval is None:
        return None
    return Comparison(
        metric=metric,
        arm=arm.label_key,
        against=other.label_key,
        estimate=interval.estimate,
        low=interval.low,
        high=interval.high,
        relative_uplift=statistics.relative_uplift(mine, theirs),
    )


def _comparisons(arms: list[ArmFigures], *, confidence: float) -> list[Comparison]:
    """Each variant against the holdout (converted, revenue: the holdout got no message, so opens and clicks
    have nothing to compare with) and each variant against every earlier one (every metric). The rest
    phase is compared with the holdout only: it is the winner's send, not an arm of the test."""
    holdout = next((a for a in arms if a.is_holdout), None)
    # "" is the rest before its winner is sent: nothing to compare yet
    variants = [a for a in arms if not a.is_holdout and a.key]
    test_arms = [a for a in variants if a.phase != "rest"]
    out: list[Comparison] = []
    if holdout is not None:
        for arm in variants:
            for metric in ("converted", "revenue"):
                c = _compare(metric, arm, holdout, confidence)
                if c:
                    out.append(c)
    for i, arm in enumerate(test_arms):
        for other in test_arms[:i]:
            for metric in ("opened", "clicked", "converted", "unsubscribed", "revenue"):
                c = _compare(metric, arm, other, confidence)
                if c:
                    out.append(c)
    return out


_OUTCOMES_SQL = """
SELECT r.customer_id, c.external_id, r.arm, r.phase, coalesce(m.status, '') AS message_status,
       o.first_at IS NOT NULL AS converted, coalesce(o.revenue, 0) AS revenue, o.first_at
FROM {recipient} r
JOIN {customer} c ON c.id = r.customer_id
LEFT JOIN {message} m
       ON m.customer_id = r.customer_id AND m.source_kind = 'campaign' AND m.source_ref = %(ref)s
      AND m.occurrence = %(occurrence)s
LEFT JOIN LATERAL (
    SELECT sum(o.total - o.refunded_amount) AS revenue,
           min(o.placed_at) FILTER (WHERE o.status <> 'refunded') AS first_at
    FROM {order} o
    WHERE o.customer_id = r.customer_id AND o.currency = %(currency)s
      AND o.placed_at >= CASE WHEN r.arm <> 'holdout' AND r.phase = 'rest' THEN %(rest_start)s
                              ELSE %(start)s END
      AND o.placed_at < CASE WHEN r.arm <> 'holdout' AND r.phase = 'rest' THEN %(rest_end)s
                             ELSE %(end)s END
) o ON true
WHERE r.run_id = %(run)s
ORDER BY r.customer_id
"""


def campaign_run_outcomes(run, *, chunk: int = 5000):
    """Every recipient's outcome, in customer order, as tuples (customer id, external id, arm, phase,
    message status, converted, revenue, first conversion): the CSV export streams these. Read through a
    server-side cursor, `chunk` rows at a time, so a million rows never sit in memory at once; each
    recipient's orders are one probe of the orders' (customer, placed_at) covering index."""
    if connection.vendor != "postgresql":
        raise ReportUnavailable("report_needs_postgresql")
    from crm.models import Customer

    params = report_params(run)
    sql = _OUTCOMES_SQL.format(**_tables(), customer=Customer._meta.db_table)
    with connection.chunked_cursor() as cursor:
        cursor.execute(sql, params)
        while rows := cursor.fetchmany(chunk):
            yield from rows


@dataclass(frozen=True)
class RunSummary:
    """What a campaign list shows of a run: the treated arms' figures, the cost, and ROI two ways."""

    recipients: int
    sent: int
    delivered: int
    converted: int
    revenue: Decimal
    cost: Decimal
    # revenue above what the treated would have spent anyway, at the holdout's revenue per recipient;
    # None without a holdout (nothing to say what "anyway" is)
    incremental_revenue: Decimal | None
    roi: Decimal | None  # (revenue - cost) / cost
    incremental_roi: Decimal | None  # (incremental revenue - cost) / cost: the honest one


def campaign_arm_costs(campaign) -> dict[str, Decimal]:
    """Each variant's cost per message: its channel's cost (CampaignChannelCost), else the campaign's own
    cost per message. Reads the campaign's variants and channel costs (prefetch them for a list)."""
    by_channel = {c.channel: c.cost_per_message for c in campaign.channel_costs.all()}
    return {
        v.key: by_channel.get(v.channel or campaign.channel, campaign.cost_per_message)
        for v in campaign.variants.all()
    }


def run_summary(
    report: RunReport, *, cost_per_message: Decimal, arm_costs: dict[str, Decimal] | None = None
) -> RunSummary:
    """The cost is each treated arm's messages sent times its channel's cost per message (`arm_costs`, by
    variant key: `campaign_arm_costs`), `cost_per_message` for an arm without one."""
    arm_costs = arm_costs or {}
    treated = [a for a in report.arms if not a.is_holdout]
    holdout = next((a for a in report.arms if a.is_holdout), None)
    recipients = sum(a.recipients for a in treated)
    sent = sum(a.sent for a in treated)
    revenue = sum((a.revenue for a in treated), Decimal("0"))
    cost = sum(
        (Decimal(arm_costs.get(a.key, cost_per_message)) * a.sent for a in treated), Decimal("0")
    ).quantize(Decimal("0.01"))
    incremental = None
    if holdout is not None and holdout.recipients:
        incremental = (revenue - holdout.revenue / holdout.recipients * recipients).quantize(Decimal("0.01"))

    def roi(gain):
        return None if gain is None or not cost else ((gain - cost) / cost).quantize(Decimal("0.0001"))

    return RunSummary(
        recipients=recipients,
        sent=sent,
        delivered=sum(a.delivered for a in treated),
        converted=sum(a.converted for a in treated),
        revenue=revenue,
        cost=cost,
        incremental_revenue=incremental,
        roi=roi(revenue),
        incremental_roi=roi(incremental),
    )
