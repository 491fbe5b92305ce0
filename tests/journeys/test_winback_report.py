"""The win-back proof: report arithmetic and interval against a hand-computed example, the coupon redeemed
in a returning order attributed to the run, the admin's preview, report, CSV and 360 panel, and the beat
entry."""

from __future__ import annotations

import json
import math
from datetime import timedelta
from decimal import Decimal

import pytest
from django.urls import reverse

from journeys.models import Arm, WinbackAssignment, WinbackRun
from journeys.services.winback import winback_outcomes_refresh, winback_run
from journeys.winback_report import winback_report
from tests.journeys.winback_helpers import coupon_programme_make, dormant_customers, morning, programme_make

pytestmark = pytest.mark.django_db


def wilson(successes: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def test_report_arithmetic_and_interval_match_a_hand_computed_example():
    now = morning()
    customers = dormant_customers([{"spend": 100}] * 150, now=now)
    programme = programme_make(message_cost=Decimal("0.050"))
    run = WinbackRun.objects.create(programme=programme, run_date=now.date(), status="done", phase="done")
    rows = []
    # Treated: 100 customers, 30 came back with one order of 100.00 each, 2 messages each; 20 of the
    # returning ones redeemed a coupon worth 30.00. Holdout: 50 customers, 10 came back the same way.
    for i, customer in enumerate(customers):
        treated = i < 100
        back = (i < 30) if treated else (i < 110)
        rows.append(
            WinbackAssignment(
                run=run,
                programme=programme,
                customer=customer,
                cycle=run.run_date,
                arm=Arm.TREATED if treated else Arm.HOLDOUT,
                value_tier="high",
                channel="sms",
                p_reactivation=0.2,
                expected_spend=Decimal("100"),
                offer_cost=Decimal("10"),
                score=10.0,
                rank=i + 1,
                selected_at=now,
                messages=2 if treated else 0,
                returned_at=now + timedelta(days=3) if back else None,
                orders=1 if back else 0,
                revenue=Decimal("100.00") if back else Decimal("0"),
                coupon_order=f"R{i}" if treated and i < 20 else "",
                coupon_discount=Decimal("30.00") if treated and i < 20 else Decimal("0"),
            )
        )
    WinbackAssignment.objects.bulk_create(rows)

    total = winback_report(programme=programme).total

    assert (total.treated.n, total.treated.reactivated, total.holdout.n, total.holdout.reactivated) == (
        100,
        30,
        50,
        10,
    )
    # Newcombe's hybrid score interval from the two Wilson intervals, by hand.
    (l1, u1), (l2, u2) = wilson(30, 100), wilson(10, 50)
    d = 0.30 - 0.20
    assert total.difference.estimate == pytest.approx(d)
    assert total.difference.low == pytest.approx(d - math.sqrt((0.30 - l1) ** 2 + (u2 - 0.20) ** 2))
    assert total.difference.high == pytest.approx(d + math.sqrt((u1 - 0.30) ** 2 + (0.20 - l2) ** 2))
    assert total.incremental_reactivations == pytest.approx(10.0)
    assert total.incremental_orders == pytest.approx((30 / 100 - 10 / 50) * 100)
    assert total.incremental_revenue == Decimal("1000.00")  # (3000/100 - 1000/50) x 100
    assert total.cost == Decimal("610.00")  # 200 messages x 0.05 + 20 coupons x 30
    assert total.roi == pytest.approx((1000 - 610) / 610)
    # Per tier and channel, the same single cell.
    assert [g.key for g in winback_report(programme=programme).tiers] == ["high"]


def test_the_coupon_redeemed_in_a_returning_order_is_attributed_to_the_run(settings):
    from campaigns.models import Message
    from crm.services.orders import OrderInput, orders_ingest
    from journeys.services.engine import dispatch_run
    from loyalty.services.coupons import coupon_redeem

    now = morning()
    dormant_customers([{"spend": 300 - i} for i in range(10)], now=now)
    programme = programme_make(
        holdout_percent=10,
        offers={"high": {"cost": Decimal("5"), "coupon_programme": coupon_programme_make()}},
    )
    run = winback_run(programme=programme, now=now)
    from campaigns.services.dispatch import dispatch_run as messages_dispatch

    dispatch_run(worker="test", now_fn=lambda: now + timedelta(minutes=1), limit_seconds=30)
    messages_dispatch(worker="test", now_fn=lambda: now + timedelta(minutes=2), limit_seconds=30)
    a = (
        WinbackAssignment.objects.filter(run=run, arm=Arm.TREATED)
        .select_related("coupon")
        .order_by("rank")[0]
    )
    # The day-0 message carries the very code the selection issued through loyalty.
    message = Message.objects.get(customer_id=a.customer_id, source_kind="journey")
    assert message.data["winback"]["coupon_code"] == a.coupon.code
    assert a.coupon.max_uses == 1 and a.coupon.valid_until == now + timedelta(days=30)

    placed = now + timedelta(days=4)
    orders_ingest(
        orders=[
            OrderInput(
                external_id="TM-20261211-1",
                placed_at=placed,
                total=Decimal("268.00"),
                customer_id=a.customer_id,
            )
        ],
        now=placed,
    )
    coupon_redeem(
        code=a.coupon.code,
        order_reference="TM-20261211-1",
        order_total=Decimal("268.00"),
        currency="CNY",
        customer_id=a.customer_id,
        now=placed,
    )
    winback_outcomes_refresh(programme=programme, now=placed + timedelta(days=1))

    a.refresh_from_db()
    assert a.coupon_order == "TM-20261211-1" and a.coupon_discount == Decimal("30.00")
    assert a.returned_at == placed and a.orders == 1 and a.revenue == Decimal("268.00")
    assert a.messages == 1
    report = winback_report(programme=programme)
    assert report.total.treated.coupons_redeemed == 1
    assert report.runs[0][0].pk == run.pk and report.runs[0][1].treated.reactivated == 1


def test_an_order_after_the_window_does_not_count():
    from crm.services.orders import OrderInput, orders_ingest

    now = morning()
    customers = dormant_customers([{"spend": 300}], now=now)
    programme = programme_make(holdout_percent=0, reactivation_days=30)
    winback_run(programme=programme, now=now)
    late = now + timedelta(days=31)
    orders_ingest(
        orders=[
            OrderInput(external_id="LATE-1", placed_at=late, total=Decimal("99"), customer_id=customers[0].pk)
        ],
        now=late,
    )

    winback_outcomes_refresh(programme=programme, now=late)

    assert WinbackAssignment.objects.get().returned_at is None


def test_the_admin_previews_the_eligible_count_before_saving(admin_client):
    now = morning()
    dormant_customers([{"spend": 300}, {"spend": 200}, {"spend": 100, "channel": "none"}], now=now)
    form = {
        "name": "预览",
        "is_active": "on",
        "audience": "dormant",
        "cycles_without_order": "2.5",
        "max_p_alive": "0.9",
        "value_tiers": ["high"],
        "budget_kind": "offers",
        "budget_offers": "100",
        "currency": "CNY",
        "message_cost": "0.05",
        "holdout_percent": "10",
        "reactivation_days": "30",
        "recent_message_days": "7",
        "cooldown_days": "30",
    }

    answer = admin_client.post(reverse("admin:journeys_winbackprogramme_preview"), form)

    assert answer.status_code == 200, answer.content
    body = answer.json()
    assert (body["eligible"], body["dormant"]) == (2, 3)
    assert body["suppressed"][0]["count"] == 1
    from journeys.models import WinbackProgramme

    assert not WinbackProgramme.objects.exists()
    # Bad input: the field is named, not a 500.
    bad = admin_client.post(
        reverse("admin:journeys_winbackprogramme_preview"), {**form, "holdout_percent": "80"}
    )
    assert bad.status_code == 400 and "holdout_percent" in bad.json()["errors"]


def test_the_report_page_csv_and_customer_360_show_the_run(admin_client):
    now = morning()
    customers = dormant_customers([{"spend": 300 - i} for i in range(20)], now=now)
    programme = programme_make(holdout_percent=20)
    run = winback_run(programme=programme, now=now)

    page = admin_client.get(reverse("admin:journeys_winbackprogramme_report", args=[programme.pk]))
    assert page.status_code == 200
    html = page.content.decode()
    assert 'data-testid="itt"' in html and f'data-run="{run.pk}"' in html
    chart = json.loads(
        html.split('id="winback-report-chart" type="application/json">')[1].split("</script>")[0]
    )
    assert chart["runs"] == [str(run.run_date)]

    csv = b"".join(
        admin_client.get(
            reverse("admin:journeys_winbackprogramme_csv", args=[programme.pk])
        ).streaming_content
    )
    lines = csv.decode("utf-8-sig").strip().splitlines()
    assert lines[0].startswith("run_date,customer_id,arm") and len(lines) == 1 + run.selected

    first = WinbackAssignment.objects.get(run=run, rank=1)
    c360 = admin_client.get(reverse("admin:crm_customer_change", args=[first.customer_id])).content.decode()
    assert 'data-testid="winback-history"' in c360 and f'data-arm="{first.arm}"' in c360
    del customers


def test_the_nightly_run_is_a_periodic_task_staff_can_edit():
    # The data migration's function (a transactional test elsewhere may have flushed the row it made).
    import importlib

    from django.apps import apps
    from django_celery_beat.models import PeriodicTask

    from journeys import tasks

    migration = importlib.import_module("journeys.migrations.0005_winback_nightly_periodic_task")
    migration.create(apps, None)
    migration.create(apps, None)  # idempotent

    task = PeriodicTask.objects.get(name="winback-nightly")
    assert task.task == "journeys.tasks.winback_nightly" and task.enabled
    assert task.crontab.hour == "3" and str(task.crontab.timezone) == "Asia/Shanghai"
    assert tasks.winback_nightly.name == task.task
