"""The win-back story on PostgreSQL with a real Celery worker: "run now" in the admin queues tonight's
selection on commit, the worker selects, holds out and enrolls the treated with their coupons, the
journey engine (woken as beat would) queues day 0 with each customer's own code, a customer comes back
and pays with it, and the report attributes the order to the run."""

import time
from datetime import timedelta
from decimal import Decimal

from django.contrib.auth import get_user_model
from django.urls import reverse
from django.utils import timezone

from campaigns.models import Message
from crm.services.orders import OrderInput, orders_ingest
from journeys.models import Arm, WinbackAssignment, WinbackRun
from journeys.services.winback import winback_outcomes_refresh
from journeys.winback_report import winback_report
from loyalty.services.coupons import coupon_redeem
from tests.journeys.winback_helpers import coupon_programme_make, dormant_customers, programme_make


def _wait(predicate, worker, what: str, timeout: float = 90):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"{what} did not happen; worker output:\n{worker.output()[-3000:]}")


def test_the_winback_story_runs_in_a_real_worker(celery_worker_process, client):
    from config.celery import app

    now = timezone.now()
    dormant_customers([{"spend": 400 - i, "p_alive": 0.4} for i in range(60)], now=now)
    programme = programme_make(
        holdout_percent=20,
        budget_offers=40,
        offers={
            "high": {"cost": Decimal("5"), "points_bonus": 100, "coupon_programme": coupon_programme_make()}
        },
    )
    admin = get_user_model().objects.create_superuser("marketing", "m@example.cn", "pw-marketing-123")
    client.force_login(admin)

    response = client.post(reverse("admin:journeys_winbackprogramme_run", args=[programme.pk]), follow=True)

    assert response.status_code == 200
    _wait(
        lambda: WinbackRun.objects.filter(programme=programme, status="done").exists(),
        celery_worker_process,
        "the run",
    )
    run = WinbackRun.objects.get(programme=programme)
    treated = WinbackAssignment.objects.filter(run=run, arm=Arm.TREATED)
    assert treated.count() == 40 == run.enrolled and run.held_out > 0
    assert treated.filter(coupon__isnull=True).count() == 0

    app.send_task("journeys.tasks.dispatch_wake")
    _wait(
        lambda: Message.objects.filter(source_kind="journey").count() == 40,
        celery_worker_process,
        "day 0 queued for every treated customer",
    )
    first = treated.select_related("coupon").order_by("rank").first()
    message = Message.objects.get(customer_id=first.customer_id, source_kind="journey")
    assert message.data["winback"]["coupon_code"] == first.coupon.code
    assert not Message.objects.filter(
        customer_id__in=WinbackAssignment.objects.filter(run=run, arm=Arm.HOLDOUT).values("customer_id")
    ).exists()

    placed = timezone.now() + timedelta(seconds=1)
    orders_ingest(
        orders=[
            OrderInput(
                external_id="JD-WB-1",
                placed_at=placed,
                total=Decimal("199.00"),
                customer_id=first.customer_id,
            )
        ],
        now=placed,
    )
    coupon_redeem(
        code=first.coupon.code,
        order_reference="JD-WB-1",
        order_total=Decimal("199.00"),
        currency="CNY",
        customer_id=first.customer_id,
        now=placed,
    )
    winback_outcomes_refresh(programme=programme, now=placed)
    report = winback_report(programme=programme)
    assert report.total.treated.reactivated == 1 and report.total.treated.coupons_redeemed == 1
    assert report.total.difference is not None
