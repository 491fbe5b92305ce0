"""POST /api/v1/events/: bulk behaviour events, customers found or created by their identifiers."""

import json
import threading

import pytest
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from crm.api.event_input import CUSTOMER_FIELDS, EVENT_FIELDS, IDENTITY_FIELDS
from crm.api.serializers import CustomerRefSerializer, EventInSerializer, IdentityInSerializer
from crm.models import Consent, Customer, CustomerIdentity, CustomerMerge, Event, Order
from crm.services import events as events_service
from crm.services.consent import consent_set
from tests.crm.test_api_support import ago, api_client, errors_of, fields_of
from tests.factories import CustomerFactory, OrderFactory

URL = "/api/v1/events/"


@pytest.fixture
def api(db):
    return api_client()


@pytest.fixture(params=["pg-arrays", "orm"])
def ingest_path(request, monkeypatch):
    """Runs a test through both write paths of the service: SQL over arrays (PostgreSQL) and the ORM
    (what the embedded SQLite set-up uses), so the second cannot rot unseen."""
    monkeypatch.setattr(events_service, "PG_ARRAYS", request.param == "pg-arrays")
    return request.param


def event(**overrides) -> dict:
    body = {"type": "page_view", "occurred_at": ago(minutes=1), "customer": {"external_id": "C-1"}}
    body.update(overrides)
    return body


def device(value: str, *more: tuple[str, str]) -> dict:
    return {
        "identities": [{"kind": "app_device_id", "value": value}, *({"kind": k, "value": v} for k, v in more)]
    }


def post(client, *events):
    return client.post(URL, {"events": list(events)}, format="json")


@pytest.mark.django_db
def test_events_are_stored_against_the_customer_named_by_id_external_id_or_identity(api, ingest_path):
    by_id, by_external, by_phone = CustomerFactory(), CustomerFactory(external_id="CRM-7"), CustomerFactory()
    CustomerIdentity.objects.create(customer=by_phone, kind="phone", value="+8613800138000")
    response = post(
        api,
        event(type="product_view", customer={"id": by_id.pk}, properties={"sku": "SKU-1", "price": 99.5}),
        event(type="add_to_cart", customer={"external_id": "CRM-7"}, channel="tmall"),
        event(type="app_open", customer={"identities": [{"kind": "phone", "value": "138 0013 8000"}]}),
    )
    assert response.status_code == 200, response.json()
    assert response.json() | {"errors": []} == {
        "accepted": 3,
        "duplicates": 0,
        "rejected": 0,
        "customers_created": 0,
        "customers_merged": 0,
        "duplicate_indexes": [],
        "errors": [],
    }
    assert Event.objects.get(type="product_view").customer == by_id
    assert Event.objects.get(type="product_view").properties == {"sku": "SKU-1", "price": 99.5}
    assert Event.objects.get(type="add_to_cart").customer == by_external
    assert Event.objects.get(type="add_to_cart").channel == "tmall"
    assert Event.objects.get(type="app_open").customer == by_phone
    assert Customer.objects.count() == 3


@pytest.mark.django_db
def test_repeated_event_id_is_skipped_and_reported_as_duplicate(api, ingest_path):
    CustomerFactory(external_id="C-1")
    first = post(api, event(external_id="ev-1"), event(external_id="ev-2"))
    assert first.json()["accepted"] == 2
    again = post(
        api, event(external_id="ev-2", type="other"), event(external_id="ev-3"), event(external_id="ev-3")
    )
    assert again.status_code == 200
    assert again.json()["accepted"] == 1
    assert again.json()["duplicates"] == 2
    assert again.json()["duplicate_indexes"] == [0, 2]
    assert Event.objects.count() == 3
    assert Event.objects.get(external_id="ev-2").type == "page_view"  # the first one stays


@pytest.mark.django_db
def test_repeat_of_a_stored_event_creates_no_customer(api, ingest_path):
    post(api, event(external_id="ev-1", customer=device("D-1")))
    Customer.objects.all().delete()  # as if the prospect had been erased since
    response = post(api, event(external_id="ev-1", customer=device("D-1")))
    assert response.json()["duplicates"] == 1
    assert not Customer.objects.exists()


@pytest.mark.django_db
def test_unknown_identifiers_create_one_prospect_per_person(api, ingest_path):
    response = post(
        api,
        event(customer=device("D-1")),
        event(customer=device("D-1", ("phone", "13900139000"))),  # links D-1 to the phone
        event(customer={"identities": [{"kind": "phone", "value": "+86 139 0013 9000"}]}),
        event(customer=device("D-2"), channel="app"),
        event(
            customer={"external_id": "NEW-9", "identities": [{"kind": "email", "value": "New@Example.CN"}]}
        ),
    )
    assert response.status_code == 200, response.json()
    assert response.json()["customers_created"] == 3
    assert Customer.objects.count() == 3
    linked = CustomerIdentity.objects.get(kind="app_device_id", value="D-1").customer
    assert {(i.kind, i.value) for i in linked.identities.all()} == {
        ("app_device_id", "D-1"),
        ("phone", "+8613900139000"),
    }
    assert linked.phone == "+8613900139000"
    assert linked.events.count() == 3
    assert CustomerIdentity.objects.get(value="D-2").customer.acquisition_channel == "app"
    named = Customer.objects.get(external_id="NEW-9")
    assert named.email == "new@example.cn"
    assert {(i.kind, i.value) for i in named.identities.all()} == {
        ("external_id", "NEW-9"),
        ("email", "new@example.cn"),
    }
    # Prospects get the "created" audit rows every other customer gets.
    assert Customer.history.filter(id=named.pk, history_type="+").count() == 1
    assert CustomerIdentity.history.filter(customer_id=named.pk, history_type="+").count() == 2


@pytest.mark.django_db
def test_new_identifier_arriving_with_a_known_one_is_attached_to_its_customer(api, ingest_path):
    known = CustomerFactory(external_id="C-1")
    response = post(
        api, event(customer={"external_id": "C-1", "identities": [{"kind": "app_device_id", "value": "D-9"}]})
    )
    assert response.json()["customers_created"] == 0
    assert CustomerIdentity.objects.get(kind="app_device_id", value="D-9").customer == known
    assert post(api, event(customer=device("D-9"))).json()["customers_created"] == 0
    assert known.events.count() == 2


@pytest.mark.django_db
def test_identifiers_of_two_customers_in_one_event_merge_them(api, ingest_path):
    older = CustomerFactory(external_id="C-1")
    newer = CustomerFactory(external_id=None)
    CustomerIdentity.objects.create(customer=newer, kind="wechat_openid", value="oX-1")
    OrderFactory(customer=newer)
    response = post(
        api,
        event(customer={"external_id": "C-1", "identities": [{"kind": "wechat_openid", "value": "oX-1"}]}),
    )
    assert response.status_code == 200, response.json()
    assert response.json()["customers_merged"] == 1
    assert not Customer.objects.filter(pk=newer.pk).exists()
    assert CustomerMerge.objects.get().survivor == older
    assert Order.objects.get().customer == older
    assert Event.objects.get().customer == older


@pytest.mark.django_db
def test_mixed_batch_stores_good_events_and_reports_bad_ones_by_index_and_field(api, ingest_path):
    CustomerFactory(external_id="C-1")
    response = post(
        api,
        event(external_id="ok-1"),
        event(type="Page View"),
        event(occurred_at="yesterday"),
        event(customer={"id": 987654}),
        event(external_id="ok-2", channel="wechat"),
        event(properties=["not", "an", "object"]),
        event(customer=device("D-1"), colour="red"),
        event(customer={"identities": [{"kind": "Not A Kind!", "value": "x"}]}),
        "not an object",
    )
    assert response.status_code == 207
    body = response.json()
    assert (body["accepted"], body["rejected"]) == (2, 7)
    assert [(e["index"], e["field"]) for e in body["errors"]] == [
        (1, "type"),
        (2, "occurred_at"),
        (3, "customer.id"),
        (5, "properties"),
        (6, "colour"),
        (7, "customer.identities[0]"),
        (8, "non_field_errors"),
    ]
    assert all(e["message"] for e in body["errors"])
    assert set(Event.objects.values_list("external_id", flat=True)) == {"ok-1", "ok-2"}
    # The rejected item with an unknown device created no prospect: items are all or nothing.
    assert not CustomerIdentity.objects.filter(value="D-1").exists()


@pytest.mark.django_db
def test_properties_over_16_kb_are_refused_for_that_event_only(api, ingest_path):
    CustomerFactory(external_id="C-1")
    response = post(api, event(properties={"blob": "x" * 17_000}), event(properties={"blob": "x" * 15_000}))
    assert response.status_code == 207
    assert [(e["index"], e["field"]) for e in errors_of(response)] == [(0, "properties")]
    assert "16384" in errors_of(response)[0]["message"]
    assert Event.objects.count() == 1


@pytest.mark.django_db
def test_text_postgresql_cannot_store_is_refused_not_a_500(api, ingest_path):
    CustomerFactory(external_id="C-1")
    events = [
        event(properties={"note": "nul \x00 inside"}),
        event(external_id="bad\x00id"),
        event(customer=device("lone \ud800 surrogate")),
        event(properties={"k": "lone \udfff surrogate"}),
        event(),
    ]
    # Sent as JSON text: the escapes \u0000 and \ud800 are valid JSON, though not storable text.
    response = api.generic("POST", URL, json.dumps({"events": events}), content_type="application/json")
    assert response.status_code == 207, response.content
    assert [(e["index"], e["field"]) for e in errors_of(response)] == [
        (0, "properties"),
        (1, "external_id"),
        (2, "customer.identities[0].value"),
        (3, "properties"),
    ]
    assert Event.objects.count() == 1


def test_lean_validator_and_documented_serializer_name_the_same_fields():
    assert EVENT_FIELDS == set(EventInSerializer().fields)
    assert CUSTOMER_FIELDS == set(CustomerRefSerializer().fields)
    assert IDENTITY_FIELDS == set(IdentityInSerializer().fields)


@pytest.mark.django_db
def test_events_of_an_existing_customer_keep_consent_untouched(api):
    # Behaviour never implies consent: ingesting events must not create or change Consent rows.
    customer = CustomerFactory(external_id="C-1")
    consent_set(customer=customer, channel="sms", status="opted_out")
    post(api, event(type="sms_click"))
    assert Consent.objects.get().status == "opted_out"


@pytest.mark.django_db(transaction=True)
def test_concurrent_batches_with_the_same_new_device_create_one_prospect():
    # Both batches find no owner for D-RACE and create a prospect; the loser's identity insert collides on
    # the (kind, value) unique key, its batch is rolled back whole and resolved again.
    clients = [api_client("events:write") for _ in range(4)]
    for round_no in range(5):
        barrier = threading.Barrier(len(clients))
        responses = []

        def send(client, n, round_no=round_no, barrier=barrier, responses=responses):
            try:
                barrier.wait()
                body = [
                    event(customer=device(f"D-RACE-{round_no}"), external_id=f"r{round_no}-{n}-{i}")
                    for i in range(50)
                ]
                responses.append(post(client, *body))
            finally:
                connection.close()

        threads = [threading.Thread(target=send, args=(c, n)) for n, c in enumerate(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert [r.status_code for r in responses] == [200] * len(clients), [
            r.content[:300] for r in responses
        ]
        owners = CustomerIdentity.objects.filter(value=f"D-RACE-{round_no}").values_list(
            "customer_id", flat=True
        )
        assert len(owners) == 1
        assert (
            Event.objects.filter(external_id__startswith=f"r{round_no}-")
            .values("customer_id")
            .distinct()
            .count()
            == 1
        )
        assert sum(r.json()["customers_created"] for r in responses) == 1
    assert Event.objects.count() == 5 * len(clients) * 50


@pytest.mark.django_db(transaction=True)
def test_concurrent_repeats_of_one_event_store_it_once():
    CustomerFactory(external_id="C-1")
    clients = [api_client("events:write") for _ in range(4)]
    barrier = threading.Barrier(len(clients))
    responses = []

    def send(client):
        try:
            barrier.wait()
            responses.append(post(client, *[event(external_id=f"same-{i}") for i in range(200)]))
        finally:
            connection.close()

    threads = [threading.Thread(target=send, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r.status_code for r in responses] == [200] * len(clients)
    assert Event.objects.count() == 200
    assert sum(r.json()["accepted"] for r in responses) == 200
    assert sum(r.json()["duplicates"] for r in responses) == 200 * (len(clients) - 1)


@pytest.mark.django_db
def test_event_external_id_is_unique_where_given_and_unindexed_where_not():
    customer = CustomerFactory()
    when = timezone.now()
    for _ in range(3):  # events without an id (orders, tier changes, ...) are never in each other's way
        Event.objects.create(customer=customer, type="order_placed", occurred_at=when)
    Event.objects.create(customer=customer, type="page_view", occurred_at=when, external_id="E-1")
    with pytest.raises(IntegrityError), transaction.atomic():
        Event.objects.create(customer=customer, type="page_view", occurred_at=when, external_id="E-1")
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT indexdef FROM pg_indexes WHERE tablename = 'crm_event' AND indexdef LIKE '%%external_id%%'"
        )
        definitions = [row[0] for row in cursor.fetchall()]
    # One index on the column, and NULLs are not in it: the log's id-less events write one entry fewer.
    assert len(definitions) == 1 and "WHERE (external_id IS NOT NULL)" in definitions[0], definitions


@pytest.mark.django_db
def test_identifiers_linking_an_erased_customer_are_refused_for_that_event_only(api, ingest_path):
    # Merging would re-identify the erased person: customer_merge refuses, and only this item fails.
    erased = CustomerFactory(external_id="GONE", erased_at=timezone.now())
    other = CustomerFactory(external_id="C-1")
    CustomerIdentity.objects.create(customer=erased, kind="wechat_openid", value="o-gone")
    response = post(
        api,
        event(customer={"external_id": "C-1", "identities": [{"kind": "wechat_openid", "value": "o-gone"}]}),
        event(external_id="fine"),
    )
    assert response.status_code == 207, response.json()
    assert fields_of(response) == [(0, "customer")]
    assert "erased" in errors_of(response)[0]["message"]
    assert list(Event.objects.values_list("external_id", flat=True)) == ["fine"]
    assert Customer.objects.filter(pk__in=[erased.pk, other.pk]).count() == 2


@pytest.mark.django_db
def test_properties_of_a_catalogued_type_that_do_not_fit_its_schema_are_refused_naming_the_property(
    api, ingest_path
):
    CustomerFactory(external_id="C-1")
    response = post(
        api,
        event(type="add_to_cart", properties={"sku": "WIPES-80", "quantity": "two"}),
        event(type="add_to_cart", properties={"sku": "WIPES-80", "quantity": 2, "campaign": "双十一"}),
        event(type="coupon_viewed", properties={"quantity": "any shape: a brand's own type"}),
    )
    assert response.status_code == 207
    assert [(e["index"], e["field"]) for e in errors_of(response)] == [(0, "properties.quantity")]
    assert errors_of(response)[0]["message"] == "Expected an integer."
    assert Event.objects.count() == 2
