from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection
from django.db.models import Count, Max, Min, Q
from django.utils import timezone

from crm.analytics.attribution import NONE_SOURCE, attribution
from crm.analytics.funnel import funnel
from crm.management.commands import seed_demo
from crm.models import (
    AcquisitionCost,
    Consent,
    ConsentChange,
    Customer,
    CustomerIdentity,
    CustomerTag,
    Event,
    Order,
    OrderLine,
    Product,
    Refund,
)
from crm.services.orders import OrderInput, OrderLineInput, order_fingerprint, orders_ingest
from crm.services.refunds import refund_apply

pytestmark = pytest.mark.django_db

TABLES = (
    Customer,
    CustomerIdentity,
    Consent,
    ConsentChange,
    CustomerTag,
    Product,
    Order,
    OrderLine,
    Refund,
    Event,
)


def seed(**options) -> str:
    out = StringIO()
    call_command(
        "seed_demo", stdout=out, **{"customers": 400, "events_per_customer": 8, "seed": 7, **options}
    )
    return out.getvalue()


def counts() -> dict:
    return {m.__name__: m.objects.count() for m in TABLES}


def indexes() -> set[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT indexdef FROM pg_indexes WHERE tablename LIKE 'crm_%%'")
        return {row[0] for row in cursor.fetchall()}


def test_seed_builds_a_world_and_a_second_run_adds_nothing():
    before = indexes()

    output = seed()

    assert "Seeded 400 customers" in output
    seeded = counts()
    assert Customer.objects.filter(external_id__startswith="DEMO-").count() == 400
    assert seeded["Event"] == 400 * 8
    assert all(seeded[name] > 0 for name in seeded), seeded
    # Indexes dropped for the load are all back, unique constraints included.
    assert indexes() == before
    # Two years of CAC per paid channel, so the LTV:CAC chart has something to show.
    assert AcquisitionCost.objects.filter(channel="tmall").count() == 24

    again = seed(customers=50)

    assert "Already seeded: 400 demo customers" in again
    assert counts() == seeded


def test_the_same_seed_gives_the_same_world_through_the_portable_writer(monkeypatch):
    seed(customers=150)
    copy_path = counts()
    names = list(Customer.objects.order_by("external_id").values_list("name", flat=True)[:20])
    for model in reversed(TABLES):
        model.objects.all().delete()

    monkeypatch.setattr(seed_demo, "_PostgresWriter", seed_demo._SqliteWriter)
    seed(customers=150)

    assert counts() == copy_path
    assert list(Customer.objects.order_by("external_id").values_list("name", flat=True)[:20]) == names


def test_demo_orders_and_refunds_are_what_the_ingest_services_would_have_stored():
    seed(customers=200)
    orders = list(Order.objects.prefetch_related("lines").order_by("id")[:30])

    for order in orders:
        lines = [
            (ln.sku, ln.quantity, ln.unit_price, ln.name, ln.category)
            for ln in order.lines.order_by("line_no")
        ]
        assert order.fingerprint == order_fingerprint(
            external_id=order.external_id,
            placed_at=order.placed_at,
            total=order.total,
            currency=order.currency,
            channel=order.channel,
            store=order.store,
            status="paid",
            lines=lines,
        )
    # Sent again through the real ingest path, demo orders are recognised as unchanged.
    result = orders_ingest(
        orders=[
            OrderInput(
                external_id=o.external_id,
                placed_at=o.placed_at,
                total=o.total,
                channel=o.channel,
                store=o.store,
                customer_id=o.customer_id,
                lines=tuple(
                    OrderLineInput(
                        sku=ln.sku,
                        quantity=ln.quantity,
                        unit_price=ln.unit_price,
                        name=ln.name,
                        category=ln.category,
                    )
                    for ln in o.lines.order_by("line_no")
                ),
            )
            for o in orders
        ]
    )
    assert len(result.unchanged) == 30 and not result.created and not result.errors

    for refund in Refund.objects.select_related("order")[:10]:
        replay = refund_apply(
            order_external_id=refund.order.external_id,
            refund_external_id=refund.external_id,
            amount=refund.amount,
            refunded_at=refund.refunded_at,
            reason=refund.reason,
            lines=[{"line_no": 1, "quantity": 1}] if refund.lines else [],
        )
        assert replay.replayed and replay.pk == refund.pk


def test_demo_world_has_the_shapes_the_marketing_features_need():
    seed(customers=1500, events_per_customer=10)
    now = timezone.now()

    per_customer = Customer.objects.annotate(n=Count("orders"), last=Max("orders__placed_at"))
    buyers = per_customer.filter(n__gt=0)
    once = buyers.filter(n=1).count() / buyers.count()
    assert 0.1 < per_customer.filter(n=0).count() / 1500 < 0.4  # prospects who never bought
    assert 0.35 < once < 0.65  # most buyers buy once...
    assert buyers.filter(n__gte=8).exists()  # ...a few buy often
    dormant = buyers.filter(last__lt=now - timedelta(days=180))
    assert 0.15 < dormant.count() / buyers.count() < 0.5
    assert CustomerTag.objects.filter(tag__name="高价值沉睡", customer__in=dormant).exists()

    totals = sorted(Order.objects.values_list("total", flat=True))
    assert totals[len(totals) // 2] < sum(totals) / len(totals)  # long tail: median below mean

    span = Event.objects.aggregate(first=Min("occurred_at"), last=Max("occurred_at"))
    assert span["last"] <= now and now - span["first"] > timedelta(days=600)
    assert Event.objects.filter(occurred_at__gt=now - timedelta(days=7)).exists()

    # Cart abandonment: a checkout started in the last two weeks with no order since.
    recent_checkouts = Event.objects.filter(type="checkout_started", occurred_at__gt=now - timedelta(days=14))
    abandoned = [
        e
        for e in recent_checkouts.select_related("customer")
        if not Order.objects.filter(customer=e.customer, placed_at__gt=e.occurred_at).exists()
    ]
    assert abandoned
    sequence = list(
        Event.objects.filter(customer=abandoned[0].customer, occurred_at__lte=abandoned[0].occurred_at)
        .order_by("-occurred_at")
        .values_list("type", flat=True)[:3]
    )
    assert sequence == ["checkout_started", "add_to_cart", "product_view"]

    kinds = set(CustomerIdentity.objects.values_list("kind", flat=True))
    assert {"external_id", "email", "phone", "wechat_openid", "tmall_buyer_id", "jd_buyer_id"} <= kinds
    assert {"孕妈", "VIP", "母婴", "美妆达人", "零食控"} <= set(
        CustomerTag.objects.values_list("tag__name", flat=True)
    )
    assert set(Product.objects.values_list("category", flat=True)) == {
        "maternity",
        "baby",
        "beauty",
        "snacks",
    }
    assert Customer.objects.filter(
        name__regex=r"^[\u4e00-\u9fff]+ [A-Z][a-z]+ [A-Z][a-z]+$"
    ).exists()  # 王芳 Wang Fang
    assert Customer.objects.filter(birthday__isnull=False).count() > 1000
    assert ConsentChange.objects.filter(status="opted_out", previous_status="opted_in").exists()
    assert Consent.objects.filter(Q(channel="sms") | Q(channel="wechat"), status="opted_in").exists()
    assert Event.objects.filter(type="order_placed").count() == Order.objects.count()


def test_demo_funnel_reaches_orders_and_attribution_has_tracked_touches():
    """The dashboard's funnel and attribution charts have something to show on the demo: orders follow a
    checkout (the funnel's last step is not 0) and tracked visits with UTM parameters precede orders."""
    seed(customers=1500, events_per_customer=10)
    now = timezone.now()
    steps = {s["type"]: s["customers"] for s in funnel(start=now - timedelta(days=30), end=now)["steps"]}
    assert steps["order_placed"] > 0.3 * steps["checkout_started"] > 0, steps

    rows = attribution(start=now - timedelta(days=90), end=now, lookback_days=7)["rows"]
    tracked = [r for r in rows if r["source"] != NONE_SOURCE]
    revenue = sum(r["linear"] for r in rows)
    assert sum(r["linear"] for r in tracked) > 0.25 * revenue, rows
    assert {r["source"] for r in tracked} <= set(seed_demo.UTM["source"])
    assert {r["campaign"] for r in tracked} <= set(seed_demo.UTM["campaign"])
    assert len({r["source"] for r in tracked}) >= 4


def test_timestamps_are_formatted_like_numpy():
    import numpy as np

    epoch = np.array(
        [0, 951_782_400, 1_709_164_799, 4_102_444_800, -86_400]
    )  # 1970, 2000-02-29, 2024 leap day
    expected = [
        s.replace("T", " ") + "+00" for s in np.datetime_as_string(epoch.astype("datetime64[s]"), unit="s")
    ]
    assert seed_demo._ts(epoch, "+00") == expected
    assert seed_demo._iso_us(epoch[:1]) == ["1970-01-01T00:00:00.000000+00:00"]


def test_demo_phones_are_real_mobile_numbers_so_demo_sms_can_be_sent():
    import phonenumbers

    seed(customers=600)
    phones = list(Customer.objects.exclude(phone="").values_list("phone", flat=True))
    assert len(phones) > 400 and len(set(phones)) == len(phones)
    mobile = {phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE}
    refused = [p for p in phones if phonenumbers.number_type(phonenumbers.parse(p)) not in mobile]
    assert refused == []
