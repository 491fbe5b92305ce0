from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from crm.models import Event, Order, Refund
from crm.services.orders import (
    OrderConflict,
    OrderInput,
    OrderLineInput,
    OrderNotFound,
    RefundConflict,
    RefundRejected,
    orders_ingest,
)
from crm.services.refunds import refund_apply

pytestmark = pytest.mark.django_db

PLACED = datetime(2026, 5, 1, 10, 0, tzinfo=UTC)
LATER = PLACED + timedelta(days=3)


@pytest.fixture
def paid_order():
    orders_ingest(
        orders=[
            OrderInput(
                external_id="JD-100",
                placed_at=PLACED,
                total=Decimal("300.00"),
                channel="jd",
                customer_external_id="C-1",
                lines=(
                    OrderLineInput(sku="FORMULA-1", quantity=2, unit_price=Decimal("120.00")),
                    OrderLineInput(sku="BOTTLE", quantity=1, unit_price=Decimal("60.00")),
                ),
            )
        ]
    )
    return Order.objects.get(external_id="JD-100")


def refund(refund_id="R-1", amount="100.00", **kwargs):
    return refund_apply(
        order_external_id=kwargs.pop("order_external_id", "JD-100"),
        refund_external_id=refund_id,
        amount=Decimal(amount),
        refunded_at=kwargs.pop("refunded_at", LATER),
        **kwargs,
    )


def test_partial_then_full_refund_moves_paid_to_partially_refunded_to_refunded(paid_order):
    first = refund("R-1", "120.00", lines=[{"line_no": 1, "quantity": 1}], reason="破损")
    paid_order.refresh_from_db()
    assert (paid_order.status, paid_order.refunded_amount) == ("partially_refunded", Decimal("120.00"))
    assert first.replayed is False
    assert first.lines == [{"line_no": 1, "sku": "FORMULA-1", "quantity": 1}]

    refund("R-2", "180.00", lines=[{"sku": "FORMULA-1", "quantity": 1}, {"sku": "BOTTLE", "quantity": 1}])
    paid_order.refresh_from_db()
    assert (paid_order.status, paid_order.refunded_amount) == ("refunded", Decimal("300.00"))
    assert dict(paid_order.lines.values_list("line_no", "refunded_quantity")) == {1: 2, 2: 1}

    events = list(
        Event.objects.filter(type="order_refunded").order_by("id").values_list("properties", flat=True)
    )
    assert [e["refund_external_id"] for e in events] == ["R-1", "R-2"]
    assert events[-1]["refunded_amount"] == "300.00" and events[-1]["status"] == "refunded"


def test_refund_beyond_the_remaining_amount_is_refused_and_changes_nothing(paid_order):
    refund("R-1", "250.00")

    with pytest.raises(RefundRejected) as caught:
        refund("R-2", "50.01")

    assert caught.value.field == "amount" and "50.00" in caught.value.message
    paid_order.refresh_from_db()
    assert paid_order.refunded_amount == Decimal("250.00")
    assert not Refund.objects.filter(external_id="R-2").exists()


def test_refund_beyond_a_line_quantity_is_refused(paid_order):
    refund("R-1", "60.00", lines=[{"line_no": 2, "quantity": 1}])

    with pytest.raises(RefundRejected) as caught:
        refund("R-2", "10.00", lines=[{"line_no": 1, "quantity": 1}, {"line_no": 2, "quantity": 1}])

    assert caught.value.field == "lines[1].quantity"
    assert dict(paid_order.lines.values_list("line_no", "refunded_quantity")) == {1: 0, 2: 1}


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"amount": "0"}, "amount"),
        ({"amount": "-5"}, "amount"),
        ({"refunded_at": PLACED - timedelta(days=1)}, "refunded_at"),
        ({"refunded_at": datetime(2099, 1, 1, tzinfo=UTC)}, "refunded_at"),
        ({"lines": [{"line_no": 9, "quantity": 1}]}, "lines[0].line_no"),
        ({"lines": [{"line_no": 1, "quantity": 0}]}, "lines[0].quantity"),
        ({"lines": [{"quantity": 1}]}, "lines[0]"),
    ],
)
def test_bad_refund_is_rejected_naming_the_field(paid_order, kwargs, field):
    amount = kwargs.pop("amount", "10.00")
    with pytest.raises(RefundRejected) as caught:
        refund("R-1", amount, **kwargs)
    assert caught.value.field == field
    assert not Refund.objects.exists()


def test_refund_of_unknown_order_is_order_not_found():
    with pytest.raises(OrderNotFound) as caught:
        refund(order_external_id="NOPE")
    assert caught.value.field == "order_external_id"


def test_same_refund_id_and_payload_returns_the_first_refund(paid_order):
    first = refund("R-1", "100.00", reason="size")

    again = refund("R-1", "100", reason="size")

    assert again.pk == first.pk and again.replayed is True
    paid_order.refresh_from_db()
    assert paid_order.refunded_amount == Decimal("100.00")
    assert Event.objects.filter(type="order_refunded").count() == 1


def test_same_refund_id_with_another_payload_is_a_conflict(paid_order):
    refund("R-1", "100.00")

    with pytest.raises(RefundConflict) as caught:
        refund("R-1", "90.00")

    assert isinstance(caught.value, OrderConflict)  # the API maps every OrderConflict to 409
    assert caught.value.field == "refund_external_id" and "R-1" in caught.value.message
    paid_order.refresh_from_db()
    assert paid_order.refunded_amount == Decimal("100.00")
