"""Dashboard figures on small, hand-checked data, and the JSON endpoints."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from django.contrib import admin
from django.contrib.auth.models import Permission, User
from django.urls import include, path

import crm.admin.analytics  # noqa: F401 - registers the dashboard admin page
from crm.analytics import compute
from crm.analytics.attribution import attribution
from crm.analytics.funnel import funnel
from crm.analytics.ltv import ltv_by_channel
from crm.analytics.services import analytics_refresh
from crm.models import AcquisitionCost, CustomerMetrics, DashboardSummary, Event, MetricsRun
from tests.factories import CustomerFactory, EventFactory, OrderFactory

# The endpoints as config/urls.py mounts them once wired (see the report); this module is the URLconf.
urlpatterns = [
    path("analytics/", include("crm.urls_analytics")),
    path("admin/", admin.site.urls),
    path("i18n/", include("django.conf.urls.i18n")),  # the admin's language switch (unfold) posts there
]

NOW = datetime(2026, 11, 20, 4, 0, tzinfo=UTC)  # 12:00 in Shanghai


def at(month: str, day: int = 10, hour: int = 4) -> datetime:
    return datetime(int(month[:4]), int(month[5:]), day, hour, tzinfo=UTC)


def order(customer, when, total="100.00", **kw):
    return OrderFactory(customer=customer, placed_at=when, total=Decimal(total), **kw)


# --- Orders: cohorts, repeat purchase, AOV -----------------------------------------------------------


@pytest.mark.django_db
def test_cohort_retention_counts_each_cohort_by_first_order_month():
    a, b, c, d = CustomerFactory.create_batch(4)
    order(a, at("2026-09"))
    order(a, at("2026-10"))
    order(a, at("2026-10", 20))  # twice in October still counts once
    order(b, at("2026-09"))
    order(b, at("2026-11"))
    order(c, at("2026-10"))
    order(d, at("2026-10"), status="refunded", refunded_amount=Decimal("100.00"))  # does not count
    order(d, at("2025-01"))  # an older cohort, outside the window

    data = compute.cohort_retention(cohorts=3, now=NOW)

    by_month = {row["month"]: row for row in data["cohorts"]}
    assert list(by_month) == ["2026-09", "2026-10", "2026-11"]
    assert by_month["2026-09"]["size"] == 2
    assert by_month["2026-09"]["active"] == [2, 1, 1]
    assert by_month["2026-09"]["retention"] == [1.0, 0.5, 0.5]
    assert by_month["2026-10"]["active"] == [1, 0]
    assert by_month["2026-11"] == {"month": "2026-11", "size": 0, "active": [0], "retention": [None]}


@pytest.mark.django_db
def test_months_are_counted_in_the_reporting_time_zone():
    customer = CustomerFactory()
    # 2026-10-31 17:00 UTC is already 1 November in Shanghai.
    order(customer, datetime(2026, 10, 31, 17, 0, tzinfo=UTC))
    data = compute.order_months(months=2, now=NOW)
    assert data["months"] == ["2026-10", "2026-11"] and data["orders"] == [0, 1]


@pytest.mark.django_db
def test_order_months_give_aov_and_repeat_purchase_rate():
    a, b, c = CustomerFactory.create_batch(3)
    order(a, at("2026-09"), "100.00")
    order(a, at("2026-10"), "300.00")
    order(b, at("2026-10"), "200.00", refunded_amount=Decimal("50.00"), status="partially_refunded")
    order(c, at("2026-10"), "80.00", currency="USD")  # another currency is left out

    data = compute.order_months(months=2, now=datetime(2026, 10, 25, tzinfo=UTC))

    assert data["months"] == ["2026-09", "2026-10"]
    assert data["orders"] == [1, 2]
    assert data["revenue"] == [100.0, 450.0]
    assert data["average_order_value"] == [100.0, 225.0]
    assert data["buyers"] == [1, 2] and data["returning_buyers"] == [0, 1]
    assert data["repeat_purchase_rate"] == [0.0, 0.5]
    assert data["overall_repeat_purchase_rate"] == 0.5  # a has two orders, b one


# --- Lifecycle over time ---------------------------------------------------------------------------


@pytest.mark.django_db
def test_lifecycle_history_undoes_later_stage_changes():
    a, b, c = CustomerFactory.create_batch(3, created_at=NOW - timedelta(days=400))
    late = CustomerFactory(created_at=at("2026-11", 2))  # no metrics row yet: a prospect, from November
    for customer, stage in ((a, "active"), (b, "at_risk"), (c, "churned")):
        CustomerMetrics.objects.create(
            customer=customer,
            as_of=NOW.date(),
            computed_at=NOW,
            lifecycle_stage=stage,
            stage_since=NOW.date(),
        )
    MetricsRun.objects.create(as_of=date(2026, 8, 31), status="done")

    def change(customer, frm, to, as_of):
        EventFactory(
            customer=customer,
            type="lifecycle_stage_changed",
            properties={"from": frm, "to": to, "as_of": as_of},
            occurred_at=datetime.fromisoformat(as_of).replace(tzinfo=UTC) + timedelta(days=1),
        )

    change(b, "active", "at_risk", "2026-10-15")  # b was active until mid-October
    change(c, "active", "at_risk", "2026-09-20")
    change(c, "at_risk", "churned", "2026-11-05")

    data = compute.lifecycle_history(months=3, now=NOW)

    assert data["months"] == ["2026-09", "2026-10", "2026-11"]
    s = data["series"]
    assert [s["active"][i] for i in range(3)] == [2, 1, 1]  # Sep: a, b; Oct: a; Nov: a
    assert [s["at_risk"][i] for i in range(3)] == [1, 2, 1]  # Sep: c; Oct: b, c; Nov: b
    assert [s["churned"][i] for i in range(3)] == [0, 0, 1]
    assert [s["prospect"][i] for i in range(3)] == [0, 0, 1]  # `late` only exists from November
    assert data["tracked_since"] == "2026-08-31"
    assert late.pk


# --- Funnel ------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_funnel_counts_customers_who_took_the_steps_in_order():
    a, b, c = CustomerFactory.create_batch(3)
    t0 = NOW - timedelta(days=5)
    for customer, steps in (
        (a, ["product_view", "add_to_cart", "checkout_started", "order_placed"]),
        (b, ["product_view", "add_to_cart"]),
        (c, ["add_to_cart", "product_view"]),  # added to cart before viewing: stops after the view
    ):
        for i, step in enumerate(steps):
            EventFactory(customer=customer, type=step, occurred_at=t0 + timedelta(minutes=i))
    EventFactory(customer=None, type="product_view", occurred_at=t0)  # an erased customer's event
    EventFactory(
        customer=b, type="checkout_started", occurred_at=NOW - timedelta(days=40)
    )  # before the window

    data = funnel(start=NOW - timedelta(days=30), end=NOW)

    assert [s["customers"] for s in data["steps"]] == [3, 2, 1, 1]
    assert [s["from_previous"] for s in data["steps"]] == [None, 0.6667, 0.5, 1.0]


# --- Attribution -------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_attribution_models_share_each_orders_revenue_and_add_up():
    a, b, c = CustomerFactory.create_batch(3)
    placed = at("2026-11", 15)

    def visit(customer, days_before, source, campaign):
        EventFactory(
            customer=customer,
            type="page_view",
            properties={"utm_source": source, "utm_campaign": campaign},
            occurred_at=placed - timedelta(days=days_before),
        )

    visit(a, 20, "baidu", "double11")
    visit(a, 10, "wechat_ads", "double11")
    visit(a, 2, "douyin", "launch")
    visit(a, 40, "email", "old")  # outside the 30-day lookback
    EventFactory(
        customer=a, type="page_view", properties={"path": "/"}, occurred_at=placed - timedelta(days=1)
    )  # no utm: no touch
    order(a, placed, "300.00")
    visit(b, 1, "baidu", "double11")
    order(b, placed, "100.00")
    order(c, placed, "50.00")  # no touch at all

    data = attribution(start=at("2026-11", 1, 0), end=at("2026-12", 1, 0), lookback_days=30)

    rows = {(r["source"], r["campaign"]): r for r in data["rows"]}
    assert rows[("baidu", "double11")]["first_touch"] == 400.0  # a's first touch and b's only one
    assert rows[("baidu", "double11")]["last_touch"] == 100.0
    assert rows[("baidu", "double11")]["linear"] == 200.0  # 300 / 3 + 100
    assert rows[("douyin", "launch")]["last_touch"] == 300.0
    assert rows[("wechat_ads", "double11")]["linear"] == 100.0
    assert rows[("(none)", "")]["first_touch"] == 50.0
    assert ("email", "old") not in rows
    for model in ("first_touch", "last_touch", "linear"):
        assert sum(r[model] for r in data["rows"]) == pytest.approx(450.0)


# --- LTV : CAC ---------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_ltv_cac_weighs_monthly_cac_by_the_customers_acquired():
    sep = [CustomerFactory(acquisition_channel="tmall", created_at=at("2026-09")) for _ in range(2)]
    octo = [CustomerFactory(acquisition_channel="tmall", created_at=at("2026-10")) for _ in range(3)]
    wechat = CustomerFactory(acquisition_channel="wechat", created_at=at("2026-10"))
    order(sep[0], at("2026-10"), "400.00")
    order(octo[0], at("2026-11"), "100.00")
    order(wechat, at("2026-11"), "60.00")
    CustomerMetrics.objects.create(
        customer=sep[0],
        as_of=NOW.date(),
        computed_at=NOW,
        stage_since=NOW.date(),
        predicted_clv_365d=Decimal("200.00"),
    )
    AcquisitionCost.objects.create(channel="tmall", month=date(2026, 9, 1), cac=Decimal("50.00"))
    AcquisitionCost.objects.create(channel="tmall", month=date(2026, 10, 1), cac=Decimal("100.00"))

    result = ltv_by_channel(compute.acquisition_value())

    tmall = next(r for r in result["channels"] if r["channel"] == "tmall")
    assert tmall["customers"] == 5 and tmall["buyers"] == 2
    assert tmall["ltv"] == 100.0  # (400 + 100) / 5
    assert tmall["predicted_ltv"] == 140.0  # (500 + 200) / 5
    assert tmall["cac"] == 80.0  # (2 × 50 + 3 × 100) / 5
    assert tmall["ltv_cac"] == 1.25 and tmall["predicted_ltv_cac"] == 1.75
    other = next(r for r in result["channels"] if r["channel"] == "wechat")
    assert other["ltv"] == 60.0 and other["cac"] is None and other["ltv_cac"] is None


# --- Endpoints ---------------------------------------------------------------------------------------


@pytest.fixture
def analyst(db, client):
    user = User.objects.create_user("analyst", password="pw", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_dashboardsummary"))
    client.force_login(user)
    return client


@pytest.mark.urls(__name__)
def test_endpoints_answer_from_the_stored_summaries(analyst, django_assert_max_num_queries):
    customer = CustomerFactory()
    order(customer, NOW - timedelta(days=3))
    analytics_refresh(now=NOW)
    assert DashboardSummary.objects.filter(chart="funnel", key="30d").exists()
    for name in ("lifecycle", "cohorts", "orders", "ltv", "funnel"):
        with django_assert_max_num_queries(6):  # session, user, permissions, the summary, (CAC entries)
            response = analyst.get(f"/analytics/{name}.json")
        assert response.status_code == 200, (name, response.content)
        assert "computed_at" in response.json()
    month = compute.month_key(NOW)
    response = analyst.get(f"/analytics/attribution.json?from={month}&to={month}&lookback=30")
    assert response.status_code == 200
    assert response.json()["rows"][0]["source"] == "(none)"


@pytest.mark.urls(__name__)
def test_a_missing_summary_is_computed_on_first_request(analyst):
    assert analyst.get("/analytics/attribution.json?from=2026-01&to=2026-02&lookback=12").status_code == 200
    assert set(DashboardSummary.objects.filter(chart="attribution").values_list("key", flat=True)) == {
        "2026-01|12",
        "2026-02|12",
    }


@pytest.mark.urls(__name__)
@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("funnel.json?days=12", "'days' must be one of 7, 30, 90, or give 'from' and 'to' dates."),
        ("funnel.json?from=2026-05-01&to=2026-04-01", "'from' (2026-05-01) is after 'to' (2026-04-01)."),
        ("funnel.json?from=yesterday&to=2026-04-01", "'from' must be a date (YYYY-MM-DD), not 'yesterday'."),
        ("attribution.json?lookback=0", "'lookback' must be a number of days from 1 to 90."),
        ("attribution.json?lookback=abc", "'lookback' must be a whole number, not 'abc'."),
        ("attribution.json?from=2026-13", "'from' must be a month (YYYY-MM), not '2026-13'."),
        ("attribution.json?from=2020-01&to=2026-01", "Attribution spans at most 24 months."),
        ("ltv.json?from=2026-05&to=2026-01", "'from' (2026-05) is after 'to' (2026-01)."),
    ],
)
def test_bad_parameters_get_a_400_with_a_message(analyst, query, message):
    response = analyst.get(f"/analytics/{query}")
    assert response.status_code == 400
    assert response.json() == {"error": message}


@pytest.mark.urls(__name__)
def test_custom_funnel_window_is_computed_live(analyst):
    customer = CustomerFactory()
    EventFactory(customer=customer, type="product_view", occurred_at=datetime(2026, 3, 3, 4, tzinfo=UTC))
    response = analyst.get("/analytics/funnel.json?from=2026-03-01&to=2026-03-31")
    assert response.status_code == 200 and response.json()["steps"][0]["customers"] == 1


@pytest.mark.urls(__name__)
def test_endpoints_need_the_dashboard_permission(client, db):
    assert client.get("/analytics/orders.json").status_code == 401
    user = User.objects.create_user("support", password="pw", is_staff=True)
    client.force_login(user)
    assert client.get("/analytics/orders.json").status_code == 403


@pytest.mark.urls(__name__)
def test_dashboard_page_links_every_endpoint(analyst):
    html = analyst.get("/admin/crm/dashboardsummary/").content.decode()
    for name in ("lifecycle", "cohorts", "orders", "ltv", "funnel", "attribution"):
        assert f'data-endpoint="/analytics/{name}.json"' in html
    assert "vendor/chart.js/chart.umd.min.js" in html and "crm/analytics/dashboard.js" in html


@pytest.mark.urls(__name__)
def test_refresh_button_queues_the_recomputation_after_commit_and_needs_the_change_permission(
    analyst, monkeypatch, django_capture_on_commit_callbacks
):
    from crm.analytics.tasks import analytics_refresh as refresh_task

    queued = []
    monkeypatch.setattr(refresh_task, "delay", lambda *a, **k: queued.append((a, k)))
    url = "/admin/crm/dashboardsummary/refresh/"
    assert analyst.post(url).status_code == 403  # viewing the dashboards is not enough
    User.objects.get(username="analyst").user_permissions.add(
        Permission.objects.get(codename="change_dashboardsummary")
    )

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = analyst.post(url)

    assert response.status_code == 302 and response.url == "/admin/crm/dashboardsummary/"
    assert len(callbacks) == 1 and queued == [((), {})]
    assert analyst.get(url).status_code == 405


@pytest.mark.django_db
def test_refresh_writes_every_summary_and_no_event():
    before = Event.objects.count()
    timings = analytics_refresh(now=NOW)
    assert {"lifecycle:all", "cohorts:all", "orders:all", "acquisition:all", "funnel:30d"} <= set(timings)
    assert sum(1 for k in timings if k.startswith("attribution:")) == 6
    assert Event.objects.count() == before
