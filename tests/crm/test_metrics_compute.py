"""The metrics computation as a whole: both pipelines agree, the run record, the CSV export, the Celery
task, the admin, customer merges, value tiers and churn risk."""

import csv
import io
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse
from django.utils import translation

from crm.metrics import merge as metrics_merge
from crm.metrics.notes import run_message_text
from crm.metrics.selectors import (
    EXPORT_COLUMNS,
    customer_metrics_get,
    customers_in_stage,
    lifecycle_stage_counts,
    metrics_export_csv,
    metrics_latest_run,
    sleeping_high_value_customers,
)
from crm.metrics.tasks import METRICS_BEAT_SCHEDULE, compute_metrics
from crm.models import Event
from crm.models.metrics import CustomerMetrics, LifecycleSettings, MetricsRun
from crm.services import metrics as metrics_service
from crm.services.customers import customer_merge
from crm.services.metrics import metrics_compute
from tests.crm.metrics_helpers import CDNOW_CALIBRATION_END, load_cdnow_as_orders, place_orders
from tests.factories import CustomerFactory

pytestmark = pytest.mark.django_db

AS_OF = date(2026, 6, 30)
COMPARED = [
    f.name
    for f in CustomerMetrics._meta.fields
    if f.name not in {"customer", "computed_at", "predicted_clv_365d"}
]


def snapshot() -> dict[int, dict]:
    return {row["customer_id"]: row for row in CustomerMetrics.objects.values("customer_id", *COMPARED)}


def test_postgres_and_generic_pipelines_store_the_same_metrics():
    load_cdnow_as_orders()
    CustomerFactory()  # a prospect

    metrics_compute(as_of=CDNOW_CALIBRATION_END, pipeline="postgres")
    by_sql = snapshot()
    clv_sql = dict(CustomerMetrics.objects.values_list("customer_id", "predicted_clv_365d"))
    CustomerMetrics.objects.all().delete()
    metrics_compute(as_of=CDNOW_CALIBRATION_END, pipeline="generic")
    by_orm = snapshot()
    clv_orm = dict(CustomerMetrics.objects.values_list("customer_id", "predicted_clv_365d"))

    assert len(by_sql) == 2358
    for customer_id, row in by_sql.items():
        other = by_orm[customer_id]
        for name in COMPARED:
            if isinstance(row[name], float):
                assert row[name] == pytest.approx(other[name], rel=1e-6), name  # warm-started fit
            else:
                assert row[name] == other[name], (customer_id, name)
        # float → cents may round differently at exactly half a cent
        if clv_sql[customer_id] is not None:
            assert abs(clv_sql[customer_id] - clv_orm[customer_id]) <= Decimal("0.01")


def test_the_run_record_keeps_the_fit_and_the_timings():
    load_cdnow_as_orders()
    run = metrics_compute(as_of=CDNOW_CALIBRATION_END)
    run.refresh_from_db()
    assert run.status == MetricsRun.Status.DONE
    assert run.finished_at >= run.started_at
    assert run.bgnbd_converged and run.gg_converged
    assert {"aggregate", "fit_and_score", "write"} <= set(run.timings)
    assert run.customers == 2357 and run.buyers == 2357


def test_too_few_customers_get_metrics_without_predictions():
    customer = CustomerFactory()
    place_orders(customer, AS_OF - timedelta(days=40), AS_OF - timedelta(days=10))

    run = metrics_compute(as_of=AS_OF)

    metrics = CustomerMetrics.objects.get(customer=customer)
    assert metrics.p_alive is None and metrics.predicted_clv_365d is None
    assert metrics.lifecycle_stage == "active" and metrics.r_score is not None
    assert metrics.churn_risk == 0.0  # 10 days since, a 30-day cycle: on schedule, and no model to doubt it
    assert run.bgnbd_r is None and '"code": "too_few"' in run.message  # a code, put into words when shown
    with translation.override("en"):
        assert "Too few customers to fit" in run_message_text(run.message)
    with translation.override("zh-hans"):
        assert "Too few" not in run_message_text(run.message)


def test_churn_risk_grows_as_a_customer_becomes_overdue():
    customer = CustomerFactory()
    place_orders(customer, date(2026, 1, 1), date(2026, 1, 31))  # a 30-day cycle

    risks = []
    for gap in (20, 45, 60, 90):
        metrics_compute(as_of=date(2026, 1, 31) + timedelta(days=gap))
        risks.append(CustomerMetrics.objects.get(customer=customer).churn_risk)

    assert risks[0] == 0.0
    assert risks == sorted(risks) and risks[-1] > 0.8


def test_high_value_dormant_customers_are_the_sleeping_high_value_ones():
    as_of = date(2026, 9, 30)
    big_sleeper, big_active, small_sleeper = CustomerFactory(), CustomerFactory(), CustomerFactory()
    # The sleepers buy once a quarter and have not for 272 days: 2.96 cycles, dormant.
    place_orders(big_sleeper, (date(2025, 10, 1), "5000.00"), (date(2026, 1, 1), "5000.00"))
    place_orders(big_active, (date(2026, 8, 31), "5000.00"), (date(2026, 9, 30), "5000.00"))
    place_orders(small_sleeper, (date(2025, 10, 1), "10.00"), (date(2026, 1, 1), "10.00"))
    for _ in range(7):
        place_orders(CustomerFactory(), date(2026, 9, 1), date(2026, 9, 29))  # 100 + 100

    metrics_compute(as_of=as_of)

    tiers = dict(CustomerMetrics.objects.values_list("customer_id", "value_tier"))
    assert tiers[big_sleeper.pk] == tiers[big_active.pk] == "high"  # the top 20% of ten buyers
    assert tiers[small_sleeper.pk] == "low"
    assert CustomerMetrics.objects.get(customer=big_sleeper).lifecycle_stage == "dormant"
    assert list(sleeping_high_value_customers()) == [big_sleeper]
    assert lifecycle_stage_counts()["dormant"] == 2


def test_as_of_in_the_future_is_refused():
    with pytest.raises(ValueError, match="future"):
        metrics_compute(as_of=date.today() + timedelta(days=2))
    with pytest.raises(CommandError, match="YYYY-MM-DD"):
        call_command("compute_metrics", "--as-of", "30/09/1997")


def test_a_failed_computation_is_recorded_and_writes_nothing(monkeypatch):
    place_orders(CustomerFactory(), AS_OF)

    def broken(**kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(metrics_service.pipeline_postgres, "run", broken)
    with pytest.raises(RuntimeError):
        metrics_compute(as_of=AS_OF, pipeline="postgres")

    run = MetricsRun.objects.get()
    assert run.status == MetricsRun.Status.FAILED and "disk full" in run.message
    assert not CustomerMetrics.objects.exists()


def test_export_writes_one_row_per_customer_with_the_agreed_columns(tmp_path):
    load_cdnow_as_orders()
    erased = CustomerFactory(erased_at=datetime(2026, 6, 30, tzinfo=UTC))
    prospect = CustomerFactory(external_id="P-1")
    call_command("compute_metrics", "--as-of", CDNOW_CALIBRATION_END.isoformat())
    out = tmp_path / "metrics.csv"

    call_command("export_metrics", str(out))

    with out.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0].keys())[:12] == [
        "customer_external_id", "frequency", "recency_days", "tenure_days", "monetary_value", "p_alive",
        "expected_purchases_90d", "predicted_clv_365d", "lifecycle_stage", "r_score", "f_score", "m_score",
    ]  # fmt: skip
    assert list(rows[0].keys()) == EXPORT_COLUMNS
    assert len(rows) == 2358  # CDNOW's 2,357 and the prospect; never the erased customer
    assert str(erased.pk) not in {r["customer_id"] for r in rows}
    first = next(r for r in rows if r["customer_external_id"] == "CDNOW-1")
    assert (first["frequency"], first["recency_days"], first["tenure_days"], first["monetary_value"]) == (
        "2", "213", "272", "22.35",
    )  # fmt: skip
    assert 0 < float(first["p_alive"]) < 1 and first["lifecycle_stage"] == "active"
    assert first["sleeping_high_value"] in {"0", "1"}
    lone = next(r for r in rows if r["customer_external_id"] == "P-1")
    assert lone["customer_id"] == str(prospect.pk)
    assert (lone["lifecycle_stage"], lone["r_score"], lone["p_alive"], lone["rfm_segment"]) == (
        "prospect",
        "",
        "",
        "",
    )


def test_export_is_the_same_through_copy_and_through_the_orm(monkeypatch):
    load_cdnow_as_orders()
    CustomerFactory(external_id='has,comma "and quotes"')
    metrics_compute(as_of=CDNOW_CALIBRATION_END)

    by_copy = io.StringIO()
    rows = metrics_export_csv(out=by_copy)
    monkeypatch.setattr("crm.metrics.selectors.connection.vendor", "sqlite")
    by_orm = io.StringIO()
    metrics_export_csv(out=by_orm)

    assert rows == 2358
    assert by_copy.getvalue() == by_orm.getvalue()


def test_the_task_computes_and_is_scheduled_nightly():
    place_orders(CustomerFactory(), AS_OF)

    result = compute_metrics.apply(kwargs={"as_of": AS_OF.isoformat()})

    run = MetricsRun.objects.get(pk=result.get())
    assert run.as_of == AS_OF and run.status == "done"
    (entry,) = METRICS_BEAT_SCHEDULE.values()
    assert entry["task"] == compute_metrics.name


def test_merging_customers_drops_the_merged_ones_metrics():
    metrics_merge.register_merge_handler()
    survivor, merged = CustomerFactory(), CustomerFactory()
    place_orders(survivor, AS_OF - timedelta(days=30))
    place_orders(merged, AS_OF - timedelta(days=10))
    metrics_compute(as_of=AS_OF)

    customer_merge(survivor=survivor, merged=merged)

    assert list(CustomerMetrics.objects.values_list("customer_id", flat=True)) == [survivor.pk]
    metrics_compute(as_of=AS_OF)
    assert CustomerMetrics.objects.get(customer=survivor).order_count == 2


# --- Admin -----------------------------------------------------------------------------------------


def test_admin_lists_metrics_and_model_fits(admin_client):
    load_cdnow_as_orders()
    run = metrics_compute(as_of=CDNOW_CALIBRATION_END)

    page = admin_client.get(
        reverse("admin:crm_customermetrics_changelist") + "?lifecycle_stage__exact=active"
    )
    assert page.status_code == 200
    search = admin_client.get(reverse("admin:crm_customermetrics_changelist") + "?q=CDNOW-1")
    assert search.status_code == 200 and search.context["cl"].result_count == 1
    detail = admin_client.get(
        reverse("admin:crm_customermetrics_change", args=[search.context["cl"].result_list[0].pk])
    )
    assert detail.status_code == 200

    fits = admin_client.get(reverse("admin:crm_metricsrun_changelist"))
    assert fits.status_code == 200
    assert "0.2426" in fits.content.decode() and "4.4136" in fits.content.decode()  # r and α in weeks
    fit = admin_client.get(reverse("admin:crm_metricsrun_change", args=[run.pk]))
    assert fit.status_code == 200 and "-14363.5" in fit.content.decode().replace(",", "")


def test_admin_edits_the_thresholds_and_queues_a_recomputation(
    admin_client, monkeypatch, django_capture_on_commit_callbacks
):
    queued = []
    monkeypatch.setattr(compute_metrics, "delay", lambda *a, **k: queued.append((a, k)))
    changelist = admin_client.get(reverse("admin:crm_lifecyclesettings_changelist"))
    assert changelist.status_code == 302
    url = reverse("admin:crm_lifecyclesettings_change", args=[1])
    form = admin_client.get(url)
    assert form.status_code == 200 and "_recompute_metrics" in form.content.decode()
    data = {
        "mode": "fixed",
        "new_days": 14,
        "active_cycles": "1.5",
        "at_risk_cycles": "2.5",
        "dormant_cycles": "4",
        "min_cycle_days": 14,
        "max_cycle_days": 180,
        "default_cycle_days": "",
        "active_days": 60,
        "at_risk_days": 120,
        "dormant_days": 300,
        "high_value_share": "0.1",
        "medium_value_share": "0.3",
    }

    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(url, {**data, "_recompute_metrics": "1"})

    assert response.status_code == 302
    settings = LifecycleSettings.load()
    assert (settings.mode, settings.active_days, settings.dormant_days) == ("fixed", 60, 300)
    assert queued == [((), {})]

    bad = admin_client.post(url, {**data, "at_risk_days": 30})  # not above active_days
    assert bad.status_code == 200 and "must increase" in bad.content.decode()


def test_admin_cannot_edit_or_delete_metrics(admin_client):
    place_orders(CustomerFactory(), AS_OF)
    metrics_compute(as_of=AS_OF)
    row = CustomerMetrics.objects.get()
    assert (
        admin_client.post(
            reverse("admin:crm_customermetrics_delete", args=[row.pk]), {"post": "yes"}
        ).status_code
        == 403
    )
    assert CustomerMetrics.objects.count() == 1
    assert Event.objects.count() == 0


def test_selectors_read_in_one_query_each(django_assert_num_queries):
    customer = CustomerFactory()
    place_orders(customer, AS_OF - timedelta(days=3))
    metrics_compute(as_of=AS_OF)

    with django_assert_num_queries(1):
        assert customer_metrics_get(customer_id=customer.pk).order_count == 1
    with django_assert_num_queries(1):
        counts = lifecycle_stage_counts()
    assert counts == {"prospect": 0, "new": 1, "active": 0, "at_risk": 0, "dormant": 0, "churned": 0}
    with django_assert_num_queries(1):
        assert metrics_latest_run().as_of == AS_OF
    with django_assert_num_queries(1):
        assert list(customers_in_stage(stage="new")) == [customer]


def test_the_metrics_table_leaves_room_for_hot_updates():
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT reloptions FROM pg_class WHERE relname = 'crm_customermetrics'")
        assert cursor.fetchone()[0] == ["fillfactor=50"]


def test_the_customer_page_shows_the_metrics_panel(admin_client):
    customer = CustomerFactory()
    place_orders(customer, AS_OF - timedelta(days=40), AS_OF - timedelta(days=10))
    url = reverse("admin:crm_customer_change", args=[customer.pk])
    before = admin_client.get(url).content.decode()
    assert "Not computed yet" in before

    metrics_compute(as_of=AS_OF)

    page = admin_client.get(url).content.decode()
    assert 'id="panel-metrics"' in page and "Active" in page and "every 30 days" in page


@pytest.mark.django_db(transaction=True)
def test_the_rewritten_metrics_table_is_vacuumed_for_index_only_segment_reads():
    """Segment conditions on stage or RFM segment read covering indexes alone, which works only on pages
    VACUUM has marked all-visible; the nightly rewrite unmarks every page, so the computation vacuums."""
    from django.db import connection

    customer = CustomerFactory()
    place_orders(customer, AS_OF - timedelta(days=40), AS_OF - timedelta(days=10))

    run = metrics_compute(as_of=AS_OF)

    if connection.vendor != "postgresql":
        assert "vacuum" not in run.timings
        return
    assert MetricsRun.objects.get(pk=run.pk).timings["vacuum"] >= 0
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT last_vacuum IS NOT NULL FROM pg_stat_user_tables WHERE relname = %s",
            [CustomerMetrics._meta.db_table],
        )
        assert cursor.fetchone() == (True,)
