"""Order history goes back to 1970: a brand importing its past orders, or an analyst loading the CDNOW
sample (1997-98), is let in; an earlier date is refused with a message that names the field and the
earliest accepted day."""

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from django.utils import translation

from crm.models import Event, Order
from crm.services.events import CustomerRef, EventInput, events_ingest
from crm.services.imports import orders_import
from tests.crm.test_api_support import api_client, errors_of, fields_of
from tests.factories import CustomerFactory

pytestmark = pytest.mark.django_db

SHANGHAI = ZoneInfo("Asia/Shanghai")
ACCEPTED = ["1970-01-01T00:00:00+08:00", "1970-01-01T00:00:00Z", "1997-01-01T10:30:00+08:00"]
REFUSED = ["1969-12-31T23:59:59+08:00", "1969-12-31T23:59:59Z", "1900-01-01T00:00:00Z"]


@pytest.fixture
def api():
    return api_client()


def order_body(placed_at: str, external_id: str = "HIST-1") -> dict:
    return {
        "external_id": external_id,
        "placed_at": placed_at,
        "total": "39.90",
        "channel": "web",
        "customer": {"external_id": "C-1"},
        "lines": [{"sku": "CD-1", "quantity": 1, "unit_price": "39.90"}],
    }


@pytest.mark.parametrize("placed_at", ACCEPTED)
def test_an_order_from_1970_on_is_accepted_by_the_api(api, placed_at):
    response = api.post("/api/v1/orders/", order_body(placed_at), format="json")
    assert response.status_code == 201, response.json()
    assert Order.objects.get().placed_at == datetime.fromisoformat(placed_at)


@pytest.mark.parametrize("placed_at", REFUSED)
def test_an_order_before_1970_is_refused_by_the_api_naming_the_field(api, placed_at):
    response = api.post("/api/v1/orders/", order_body(placed_at), format="json")
    assert response.status_code == 400
    assert fields_of(response) == [(None, "placed_at")]
    assert "1970-01-01" in errors_of(response)[0]["message"]
    assert not Order.objects.exists()


def test_an_order_batch_keeps_1997_and_refuses_1969_by_index(api):
    response = api.post(
        "/api/v1/orders/batch/",
        {"orders": [order_body("1997-01-01T00:00:00+08:00", "A"), order_body("1969-12-31T12:00:00Z", "B")]},
        format="json",
    )
    assert response.status_code == 207, response.json()
    assert fields_of(response) == [(1, "placed_at")]
    assert list(Order.objects.values_list("external_id", flat=True)) == ["A"]


def _event(occurred_at: str) -> dict:
    return {"type": "page_view", "occurred_at": occurred_at, "customer": {"external_id": "C-1"}}


def test_events_from_1970_on_are_accepted_and_earlier_ones_refused_by_index(api):
    CustomerFactory(external_id="C-1")
    response = api.post(
        "/api/v1/events/",
        {"events": [_event(at) for at in ACCEPTED] + [_event("1969-12-31T23:59:59+08:00")]},
        format="json",
    )
    assert response.status_code == 207, response.json()
    assert fields_of(response) == [(3, "occurred_at")]
    assert "1970-01-01" in errors_of(response)[0]["message"]
    assert Event.objects.filter(type="page_view").count() == 3


def test_the_event_service_refuses_a_time_before_1970_for_any_caller():
    customer = CustomerFactory()
    who = CustomerRef(id=customer.pk)
    result = events_ingest(
        items=[
            EventInput(
                type="page_view", occurred_at=datetime(1969, 12, 31, 23, 59, tzinfo=UTC), customer=who
            ),
            EventInput(type="page_view", occurred_at=datetime(1970, 1, 1, tzinfo=UTC), customer=who),
        ]
    )
    assert [(e.index, e.field) for e in result.errors] == [(0, "occurred_at")]
    assert "1970-01-01" in result.errors[0].message
    assert Event.objects.filter(type="page_view").count() == 1


def test_the_refusal_speaks_chinese(api):
    with translation.override("zh-hans"):
        response = api.post(
            "/api/v1/orders/",
            order_body("1969-12-31T23:59:59Z"),
            format="json",
            HTTP_ACCEPT_LANGUAGE="zh-hans",
        )
    message = errors_of(response)[0]["message"]
    assert "1970-01-01" in message and "早于" in message


HEADER = "customer_external_id,order_external_id,ordered_at,amount,currency,channel\n"


def test_a_csv_of_historical_orders_keeps_1970_and_1997_and_refuses_1969_by_line(tmp_path):
    path = tmp_path / "history.csv"
    path.write_text(
        HEADER
        + "C-1,H-1,1970-01-01 00:00:00,10.00,CNY,web\n"  # line 2: midnight Beijing time, still 1969 in UTC
        + "C-1,H-2,1997-01-01,29.90,CNY,web\n"  # line 3: CDNOW's first day
        + "C-2,H-3,1969-12-31 23:59:59,10.00,CNY,web\n",  # line 4
        encoding="utf-8",
    )

    report = orders_import(source=path)

    assert [(e.line, e.field) for e in report.errors] == [(4, "ordered_at")]
    assert "1969-12-31" in report.errors[0].message and "1970-01-01" in report.errors[0].message
    assert dict(Order.objects.values_list("external_id", "placed_at")) == {
        "H-1": datetime(1970, 1, 1, tzinfo=SHANGHAI),
        "H-2": datetime(1997, 1, 1, tzinfo=SHANGHAI),
    }
