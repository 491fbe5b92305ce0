"""The report's arithmetic (campaigns.reports.campaign_run_report) against a hand-computed example: ten
customers in arms A, B and the holdout, their messages, orders in and out of the window, an unsubscribe.

Send (the run's due time) T0 = 2026-11-11 02:00 UTC (10:00 in Shanghai); attribution 7 days.

    arm      customer  message                     orders (offset from T0)              converted  revenue
    A        c1        clicked                     100.00 at +1 d                       yes        100
    A        c2        delivered                   50.00 at +8 d (outside the window)   no         0
    A        c3        failed (after sending)      -                                    no         0
    A        c4        suppressed (never sent)     30.00 at +2 h (counted: ITT)         yes        30
    B        c5        opened                      200.00 at +1 h, 20.00 at +3 d         yes        220
    B        c6        sent                        80.00 at +1 d, fully refunded        no         0
    B        c7        delivered, unsubscribed     -                                    no         0
    holdout  c8        -                           80.00 at +2 d                        yes        80
    holdout  c9        -                           40.00 at -1 h (before the send)      no         0
    holdout  c10       -                           99.00 USD at +1 d (another currency)  no         0

    A:       recipients 4, sent 3, delivered 2, opened 1, clicked 1, failed 1, suppressed 1, converted 2,
             revenue 130.00 (per recipient 32.50), sum of squares 100^2 + 30^2 = 10,900
    B:       recipients 3, sent 3, delivered 2 (opened counts as delivered), opened 1, unsubscribed 1,
             converted 1, revenue 220.00 (73.33), sum of squares 48,400
    holdout: recipients 3, no message, converted 1, revenue 80.00 (26.67), sum of squares 6,400
"""

import datetime as dt
from decimal import Decimal

import pytest
from scipy import stats

from campaigns.experiment_statistics import proportion_difference_interval
from campaigns.models import (
    Campaign,
    CampaignRecipient,
    CampaignRun,
    CampaignVariant,
    Message,
    MessageStatus,
)
from campaigns.reports import campaign_run_report
from crm.models.events import Event
from tests.campaigns.helpers import template_make
from tests.factories import CustomerFactory, OrderFactory

T0 = dt.datetime(2026, 11, 11, 2, 0, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)
HOUR = dt.timedelta(hours=1)

pytestmark = pytest.mark.django_db


def report_world():
    template = template_make(code="report_test", channel="email")
    campaign = Campaign.objects.create(name="双11", channel="email", holdout_percent=30, attribution_days=7)
    for key in ("A", "B"):
        CampaignVariant.objects.create(campaign=campaign, key=key, template=template, weight=50)
    run = CampaignRun.objects.create(
        campaign=campaign, occurrence="once", due_at=T0, started_at=T0, status="sent"
    )
    c = {i: CustomerFactory() for i in range(1, 11)}
    arms = {1: "A", 2: "A", 3: "A", 4: "A", 5: "B", 6: "B", 7: "B", 8: "holdout", 9: "holdout", 10: "holdout"}
    CampaignRecipient.objects.bulk_create(
        CampaignRecipient(run=run, customer=c[i], arm=arm, phase="all", enqueued=arm != "holdout")
        for i, arm in arms.items()
    )

    def message(i, status, *, sent=True, delivered=False, opened=False, clicked=False):
        return Message.objects.create(
            customer=c[i],
            channel="email",
            template=template,
            source_kind="campaign",
            source_ref=str(campaign.pk),
            occurrence=str(run.pk),
            status=status,
            due_at=T0,
            sent_at=T0 + dt.timedelta(minutes=1) if sent else None,
            delivered_at=T0 + dt.timedelta(minutes=2) if delivered else None,
            opened_at=T0 + HOUR if opened else None,
            clicked_at=T0 + 2 * HOUR if clicked else None,
        )

    message(1, MessageStatus.CLICKED, delivered=True, opened=True, clicked=True)
    message(2, MessageStatus.DELIVERED, delivered=True)
    message(3, MessageStatus.FAILED)
    message(4, MessageStatus.SUPPRESSED, sent=False)
    message(5, MessageStatus.OPENED, opened=True)  # an open with no delivery receipt (WeChat, some SMS)
    message(6, MessageStatus.SENT)
    m7 = message(7, MessageStatus.DELIVERED, delivered=True)
    Event.objects.create(
        customer=c[7],
        type="unsubscribed",
        occurred_at=T0 + 3 * HOUR,
        channel="email",
        external_id=f"campaigns:unsubscribed:{m7.pk}",
        properties={"message_id": m7.pk, "source_kind": "campaign", "campaign_id": str(campaign.pk)},
    )

    def order(i, total, at, **kw):
        OrderFactory(customer=c[i], total=Decimal(total), placed_at=at, **kw)

    order(1, "100.00", T0 + DAY)
    order(2, "50.00", T0 + 8 * DAY)
    order(4, "30.00", T0 + 2 * HOUR)
    order(5, "200.00", T0 + HOUR)
    order(5, "20.00", T0 + 3 * DAY)
    order(6, "80.00", T0 + DAY, status="refunded", refunded_amount=Decimal("80.00"))
    order(8, "80.00", T0 + 2 * DAY)
    order(9, "40.00", T0 - HOUR)
    order(10, "99.00", T0 + DAY, currency="USD")
    return run


def test_report_counts_every_recipient_of_each_arm_and_attributes_orders_in_the_window():
    report = campaign_run_report(report_world())
    a, b, holdout = report.arms
    assert [arm.key for arm in report.arms] == ["A", "B", "holdout"]
    assert (a.recipients, a.messages, a.sent, a.delivered, a.opened, a.clicked) == (4, 4, 3, 2, 1, 1)
    assert (a.failed, a.suppressed, a.unsubscribed, a.converted) == (1, 1, 0, 2)
    assert (a.revenue, a.revenue_sq, a.revenue_per_recipient) == (
        Decimal("130"),
        Decimal("10900"),
        Decimal("32.50"),
    )
    assert (b.recipients, b.sent, b.delivered, b.opened, b.clicked, b.unsubscribed, b.converted) == (
        3, 3, 2, 1, 0, 1, 1,
    )  # fmt: skip
    assert (b.revenue, b.revenue_sq, b.revenue_per_recipient) == (
        Decimal("220"),
        Decimal("48400"),
        Decimal("73.33"),
    )
    assert (holdout.recipients, holdout.messages, holdout.sent, holdout.converted) == (3, 0, 0, 1)
    assert (holdout.revenue, holdout.revenue_sq) == (Decimal("80"), Decimal("6400"))
    assert a.rate("converted") == pytest.approx(0.5)
    totals = report.totals
    assert (totals.recipients, totals.converted, totals.revenue) == (10, 4, Decimal("430"))


def test_report_conversions_by_business_day():
    # c4 converted at 12:00 Shanghai on 11 November, c1 on the 12th; c5 on the 11th; c8 on the 13th
    report = campaign_run_report(report_world())
    assert report.conversions_by_day == {
        "A": [(dt.date(2026, 11, 11), 1), (dt.date(2026, 11, 12), 1)],
        "B": [(dt.date(2026, 11, 11), 1)],
        "holdout": [(dt.date(2026, 11, 13), 1)],
    }


def test_report_intervals_against_the_holdout_and_between_variants():
    report = campaign_run_report(report_world())
    # converted, A - holdout: 2/4 - 1/3 = 0.16667; the interval is Newcombe's from these counts
    c = report.comparison("converted", "A", "holdout")
    assert c.estimate == pytest.approx(2 / 4 - 1 / 3)
    expected = proportion_difference_interval(2, 4, 1, 3)
    assert (c.low, c.high) == pytest.approx((expected.low, expected.high))
    assert c.relative_uplift == pytest.approx((0.5 - 1 / 3) / (1 / 3))  # +50 %
    # revenue per recipient, A - holdout, Welch by hand:
    #   A [100, 0, 0, 30]: mean 32.5, var (10900 - 130^2/4)/3 = 2225
    #   holdout [80, 0, 0]: mean 26.667, var (6400 - 80^2/3)/2 = 2133.33
    #   se^2 = 2225/4 + 2133.33/3 = 556.25 + 711.11 = 1267.36 (se 35.600)
    #   df = 1267.36^2 / (556.25^2/3 + 711.11^2/2) = 1606202 / 355978 = 4.512; t(0.975, 4.512) = 2.6565
    #   5.833 +- 2.6565 * 35.600 = 5.833 +- 94.57 = [-88.74, 100.40]
    r = report.comparison("revenue", "A", "holdout")
    assert r.estimate == pytest.approx(5.8333, abs=1e-4)
    assert (r.low, r.high) == pytest.approx((-88.74, 100.40), abs=0.02)
    raw = stats.ttest_ind([100, 0, 0, 30], [80, 0, 0], equal_var=False).confidence_interval()
    assert (r.low, r.high) == pytest.approx((raw.low, raw.high))
    # B against A on every metric, nothing of the holdout's opens (it has none to compare)
    assert {x.metric for x in report.comparisons if (x.arm, x.against) == ("B", "A")} == {
        "opened", "clicked", "converted", "unsubscribed", "revenue",
    }  # fmt: skip
    assert report.comparison("opened", "A", "holdout") is None
    u = report.comparison("unsubscribed", "B", "A")
    assert u.estimate == pytest.approx(1 / 3)


def test_report_of_a_run_with_no_recipients_is_empty():
    template = template_make(code="empty_report", channel="email")
    campaign = Campaign.objects.create(name="empty", channel="email")
    CampaignVariant.objects.create(campaign=campaign, key="A", template=template, weight=100)
    run = CampaignRun.objects.create(campaign=campaign, occurrence="once", due_at=T0)
    report = campaign_run_report(run)
    assert report.arms == [] and report.comparisons == []


def test_the_stored_report_reads_back_the_same_figures_and_is_refreshed_while_the_window_is_open():
    from campaigns.models import CampaignRunReport
    from campaigns.reports import RunReport
    from campaigns.services.reports import (
        campaign_reports_refresh_due,
        campaign_run_report_refresh,
        campaign_run_report_stored,
    )

    run = report_world()
    live = campaign_run_report(run, now=T0 + DAY)
    assert RunReport.from_json(live.as_json()) == live
    # a day after the send: no report yet, so the pass computes it
    assert campaign_reports_refresh_due(now=T0 + DAY) == [run.pk]
    stored, row = campaign_run_report_stored(run)
    assert stored.arms == live.arms and row.computed_at == T0 + DAY
    assert campaign_reports_refresh_due(now=T0 + DAY + dt.timedelta(minutes=4)) == []  # still fresh
    assert campaign_reports_refresh_due(now=T0 + DAY + dt.timedelta(minutes=6)) == [run.pk]
    # a new order (c10's, in yuan this time) shows in the next computation
    c10 = run.recipients.filter(arm="holdout").order_by("customer_id").last().customer_id
    OrderFactory(customer_id=c10, total=Decimal("10.00"), placed_at=T0 + 2 * DAY)
    campaign_run_report_refresh(run=run, now=T0 + 3 * DAY)
    assert campaign_run_report_stored(run)[0].arm("holdout").converted == 2
    # once the window (7 days) and a day more have passed, the last computation after it is kept
    CampaignRunReport.objects.filter(run=run).update(computed_at=T0 + 9 * DAY)
    assert campaign_reports_refresh_due(now=T0 + 30 * DAY) == []


def test_run_summary_for_the_campaign_list():
    from campaigns.reports import run_summary

    report = campaign_run_report(report_world())
    summary = run_summary(report, cost_per_message=Decimal("0.0500"))
    # treated: A + B = 7 recipients, 6 sent, 4 delivered, 3 converted, revenue 130 + 220 = 350
    assert (summary.recipients, summary.sent, summary.delivered, summary.converted) == (7, 6, 4, 3)
    assert summary.revenue == Decimal("350") and summary.cost == Decimal("0.30")
    # the holdout spent 80 / 3 = 26.667 a head: 7 of them would have spent 186.67 anyway
    assert summary.incremental_revenue == Decimal("163.33")
    assert summary.roi == Decimal("1165.6667")  # (350 - 0.30) / 0.30
    assert summary.incremental_roi == Decimal("543.4333")  # (163.33 - 0.30) / 0.30
