"""POST /api/v1/orders/, /orders/batch/ and /orders/{external_id}/refunds/."""

from decimal import Decimal

import pytest
from django.utils import timezone

from crm.models import Customer, CustomerIdentity, Order, OrderLine, Refund
from tests.crm.test_api_support import ago, api_client, errors_of, fields_of
from tests.factories import CustomerFactory

URL = "/api/v1/orders/"
BATCH_URL = "/api/v1/orders/batch/"

pytestmark = pytest.mark.django_db


@pytest.fixture
def api(db):
    return api_client()


@pytest.fixture
def placed_at():
    return ago(hours=2)


def order(at: str, **overrides) -> dict:
    body = {
        "external_id": "TM-1",
        "placed_at": at,
        "total": "298.00",
        "channel": "tmall",
        "customer": {"identities": [{"kind": "tmall_buyer_id", "value": "tb-1"}]},
        "lines": [
            {"sku": "SKU-1", "name": "婴儿湿巾", "quantity": 2, "unit_price": "99.00"},
            {"sku": "SKU-2", "quantity": 1, "unit_price": "100.00"},
        ],
    }
    body.update(overrides)
    return body


def test_order_is_created_with_its_lines_and_a_customer_for_new_identifiers(api, placed_at):
    response = api.post(URL, order(placed_at), format="json")
    assert response.status_code == 201, response.json()
    assert response.json()["outcome"] == "created"
    stored = Order.objects.get(external_id="TM-1")
    assert stored.total == Decimal("298.00")
    assert stored.lines.count() == 2
    assert stored.customer_id == response.json()["customer_id"]
    assert CustomerIdentity.objects.get(kind="tmall_buyer_id", value="tb-1").customer_id == stored.customer_id


def test_repeated_order_changes_nothing_and_answers_unchanged(api, placed_at):
    first = api.post(URL, order(placed_at), format="json")
    assert first.status_code == 201, first.json()
    counts = (Order.objects.count(), OrderLine.objects.count(), Customer.objects.count())
    again = api.post(URL, order(placed_at), format="json")
    assert again.status_code == 200
    assert again.json() == {**first.json(), "outcome": "unchanged"}
    assert (Order.objects.count(), OrderLine.objects.count(), Customer.objects.count()) == counts


def test_same_order_id_with_a_different_payload_is_refused_with_409(api, placed_at):
    assert api.post(URL, order(placed_at), format="json").status_code == 201
    response = api.post(URL, order(placed_at, store="another shop"), format="json")
    assert response.status_code == 409
    assert errors_of(response)[0]["message"]
    assert Order.objects.get().total == Decimal("298.00")


def test_refused_order_leaves_no_prospect_behind(api, placed_at):
    assert api.post(URL, order(placed_at), format="json").status_code == 201
    conflicting = order(
        placed_at,
        store="another shop",
        customer={"identities": [{"kind": "jd_buyer_id", "value": "never-seen"}]},
    )
    assert api.post(URL, conflicting, format="json").status_code == 409
    assert not CustomerIdentity.objects.filter(value="never-seen").exists()
    assert Customer.objects.count() == 1


def test_order_for_an_existing_customer_by_id_or_external_id(api, placed_at):
    customer = CustomerFactory(external_id="CRM-1")
    by_id = api.post(URL, order(placed_at, external_id="A", customer={"id": customer.pk}), format="json")
    by_ext = api.post(
        URL, order(placed_at, external_id="B", customer={"external_id": "CRM-1"}), format="json"
    )
    assert (by_id.status_code, by_ext.status_code) == (201, 201), (by_id.json(), by_ext.json())
    assert set(Order.objects.values_list("customer_id", flat=True)) == {customer.pk}
    missing = api.post(URL, order(placed_at, external_id="C", customer={"id": 999999}), format="json")
    assert missing.status_code == 400
    assert fields_of(missing) == [(None, "customer.id")]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"total": "-1.00"}, "total"),
        ({"total": "1.001"}, "total"),
        ({"lines": [{"sku": "S", "quantity": 1, "unit_price": "-5"}]}, "lines[0].unit_price"),
        ({"lines": [{"sku": "S", "quantity": 0, "unit_price": "5"}]}, "lines[0].quantity"),
        ({"lines": [{"sku": "S", "quantity": "two", "unit_price": "5"}]}, "lines[0].quantity"),
        ({"lines": [{"sku": "S", "quantity": 1, "unit_price": "5", "colour": "red"}]}, "lines[0].colour"),
        ({"placed_at": "2999-01-01T00:00:00+08:00"}, "placed_at"),
        ({"placed_at": "1969-12-31T23:59:59Z"}, "placed_at"),
        ({"placed_at": "2026-01-01T10:00:00"}, "placed_at"),
        ({"external_id": "x" * 101}, "external_id"),
        ({"status": "partially_refunded"}, "status"),
        ({"customer": {}}, "customer"),
        ({"customer": {"id": 1, "external_id": "CRM-1"}}, "customer"),
        ({"coupon": "X"}, "coupon"),
    ],
)
def test_bad_order_is_refused_with_400_naming_the_field(api, placed_at, change, field):
    response = api.post(URL, order(placed_at, **change), format="json")
    assert response.status_code == 400, response.json()
    assert field in {f for _i, f in fields_of(response)}
    assert not Order.objects.exists()


def test_batch_stores_good_orders_and_reports_bad_and_conflicting_ones(api, placed_at):
    customer = CustomerFactory(external_id="CRM-1")
    assert api.post(URL, order(placed_at, external_id="OLD"), format="json").status_code == 201
    response = api.post(
        BATCH_URL,
        {
            "orders": [
                order(placed_at, external_id="N-1", customer={"id": customer.pk}),
                order(placed_at, external_id="N-2", total="-3"),
                order(placed_at, external_id="OLD"),  # an exact repeat
                order(placed_at, external_id="OLD", store="another shop"),
                order(
                    placed_at,
                    external_id="N-3",
                    customer={"identities": [{"kind": "jd_buyer_id", "value": "jd-3"}]},
                ),
                order(placed_at, external_id="N-1", customer={"id": customer.pk}),
                order(placed_at, external_id="N-4", currency="XYZ", customer={"external_id": "NEW-C"}),
            ]
        },
        format="json",
    )
    assert response.status_code == 207, response.json()
    body = response.json()
    assert (body["accepted"], body["created"], body["unchanged"], body["rejected"]) == (3, 2, 1, 4)
    assert [(r["index"], r["outcome"]) for r in body["results"]] == [
        (0, "created"),
        (2, "unchanged"),
        (4, "created"),
    ]
    assert [(i, f) for i, f in fields_of(response)] == [
        (1, "total"),
        (3, "external_id"),
        (5, "external_id"),
        (6, "currency"),
    ]
    assert set(Order.objects.values_list("external_id", flat=True)) == {"OLD", "N-1", "N-3"}
    assert not Customer.objects.filter(external_id="NEW-C").exists()  # its order was refused


def test_more_than_1000_orders_are_refused_naming_the_limit(api, placed_at):
    response = api.post(
        BATCH_URL, {"orders": [order(placed_at, external_id=str(n)) for n in range(1001)]}, format="json"
    )
    assert response.status_code == 400
    assert fields_of(response) == [(None, "orders")]
    assert "1000" in errors_of(response)[0]["message"]


def refund_url(external_id: str = "TM-1") -> str:
    return f"{URL}{external_id}/refunds/"


def test_refunds_move_the_order_to_partially_refunded_then_refunded(api, placed_at):
    assert api.post(URL, order(placed_at), format="json").status_code == 201
    partial = api.post(
        refund_url(),
        {
            "external_id": "R-1",
            "amount": "99.00",
            "refunded_at": ago(hours=1),
            "lines": [{"sku": "SKU-1", "quantity": 1}],
        },
        format="json",
    )
    assert partial.status_code == 201, partial.json()
    assert partial.json()["outcome"] == "created"
    assert partial.json()["order_status"] == "partially_refunded"
    assert partial.json()["refunded_amount"] == "99.00"  # money is a decimal string, as documented
    assert Order.objects.get().status == "partially_refunded"

    rest = api.post(
        refund_url(),
        {"external_id": "R-2", "amount": "199.00", "refunded_at": ago(minutes=30)},
        format="json",
    )
    assert rest.status_code == 201, rest.json()
    assert rest.json()["order_status"] == "refunded"
    assert rest.json()["refunded_amount"] == "298.00"
    assert Order.objects.get().refunded_amount == Decimal("298.00")


def test_repeated_refund_is_unchanged_and_a_conflicting_one_is_409(api, placed_at):
    assert api.post(URL, order(placed_at), format="json").status_code == 201
    body = {"external_id": "R-1", "amount": "50.00", "refunded_at": ago(hours=1), "reason": "破损"}
    assert api.post(refund_url(), body, format="json").status_code == 201
    again = api.post(refund_url(), body, format="json")
    assert again.status_code == 200
    assert again.json()["outcome"] == "unchanged"
    assert Refund.objects.count() == 1
    conflict = api.post(refund_url(), {**body, "amount": "60.00"}, format="json")
    assert conflict.status_code == 409
    assert Order.objects.get().refunded_amount == Decimal("50.00")


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"amount": "-5.00"}, 400, "amount"),
        ({"amount": "0"}, 400, "amount"),
        ({"amount": "1000.00"}, 400, "amount"),  # more than the order's total
        ({"refunded_at": "2999-01-01T00:00:00Z"}, 400, "refunded_at"),
        ({"lines": [{"quantity": 1}]}, 400, "lines[0]"),
        ({"note": "x"}, 400, "note"),
    ],
)
def test_bad_refund_is_refused_naming_the_field(api, placed_at, body, status, field):
    assert api.post(URL, order(placed_at), format="json").status_code == 201
    response = api.post(
        refund_url(),
        {"external_id": "R-1", "amount": "10.00", "refunded_at": ago(minutes=5), **body},
        format="json",
    )
    assert response.status_code == status, response.json()
    assert field in {f for _i, f in fields_of(response)}
    assert not Refund.objects.exists()
    assert Order.objects.get().status == "paid"


def test_refund_of_an_unknown_order_is_404(api):
    response = api.post(
        refund_url("NOPE"),
        {"external_id": "R-1", "amount": "10.00", "refunded_at": ago(minutes=5)},
        format="json",
    )
    assert response.status_code == 404
    assert errors_of(response)[0]["message"]


def test_order_whose_identifiers_link_an_erased_customer_is_a_per_item_error(api, placed_at):
    erased = CustomerFactory(erased_at=timezone.now())
    CustomerIdentity.objects.create(customer=erased, kind="tmall_buyer_id", value="tb-gone")
    CustomerFactory(external_id="CRM-1")
    customer = {"external_id": "CRM-1", "identities": [{"kind": "tmall_buyer_id", "value": "tb-gone"}]}
    response = api.post(
        BATCH_URL,
        {
            "orders": [
                order(placed_at, external_id="X-1", customer=customer),
                order(placed_at, external_id="X-2"),
            ]
        },
        format="json",
    )
    assert response.status_code == 207, response.json()
    assert fields_of(response) == [(0, "customer")]
    assert list(Order.objects.values_list("external_id", flat=True)) == ["X-2"]
