"""POST /api/v1/customers/ (one), /customers/batch/ (up to 1,000) and GET /customers/{id}/."""

import threading

import pytest
from django.db import connection
from django.utils import timezone

from crm.models import (
    Consent,
    ConsentChange,
    Customer,
    CustomerIdentity,
    CustomerMerge,
    CustomerTag,
    Event,
    Order,
    Tag,
)
from crm.services.consent import consent_set
from tests.crm.test_api_support import ago, api_client, errors_of, fields_of
from tests.factories import CustomerFactory, EventFactory, OrderFactory

URL = "/api/v1/customers/"
BATCH_URL = "/api/v1/customers/batch/"


@pytest.fixture
def api(db):
    return api_client()


@pytest.mark.django_db
def test_upsert_creates_then_updates_a_customer_by_its_identifiers(api):
    created = api.post(
        URL,
        {
            "external_id": "CRM-1",
            "name": "王芳",
            "email": "Wang.Fang@Example.CN",
            "phone": "138 0013 8000",
            "birthday": "1990-05-01",
            "city": "上海",
            "identities": [{"kind": "wechat_openid", "value": "oWF-1"}],
            "consents": [
                {"channel": "sms", "status": "opted_in", "occurred_at": ago(days=1), "source": "store"}
            ],
            "tags": ["vip", "mother"],
        },
        format="json",
    )
    assert created.status_code == 201, created.json()
    customer = Customer.objects.get(pk=created.json()["id"])
    assert created.json()["created"] is True
    assert (customer.email, customer.phone, str(customer.birthday)) == (
        "wang.fang@example.cn",
        "+8613800138000",
        "1990-05-01",
    )
    assert set(customer.identities.values_list("kind", "value")) == {
        ("external_id", "CRM-1"),
        ("email", "wang.fang@example.cn"),
        ("phone", "+8613800138000"),
        ("wechat_openid", "oWF-1"),
    }
    assert Consent.objects.get(customer=customer).source == "store"
    assert set(CustomerTag.objects.filter(customer=customer).values_list("tag__name", flat=True)) == {
        "vip",
        "mother",
    }

    again = api.post(
        URL, {"identities": [{"kind": "wechat_openid", "value": "oWF-1"}], "city": "杭州"}, format="json"
    )
    assert again.status_code == 200
    assert again.json() == {"id": customer.pk, "created": False, "merged_ids": [], "changed_fields": ["city"]}
    assert Customer.objects.count() == 1


@pytest.mark.django_db
def test_identifiers_linking_two_customers_merge_them_with_their_history(api):
    # Given customer A known by email and customer B known by a WeChat openid, each with a life of its own
    a = api.post(URL, {"email": "li.na@example.cn", "name": "李娜"}, format="json").json()["id"]
    b = api.post(
        URL, {"identities": [{"kind": "wechat_openid", "value": "oLN-9"}], "city": "杭州"}, format="json"
    )
    b = b.json()["id"]
    customer_b = Customer.objects.get(pk=b)
    OrderFactory(customer=customer_b)
    EventFactory(customer=customer_b, type="add_to_cart")
    consent_set(customer=customer_b, channel="wechat", status="opted_in")
    api.post(
        URL, {"identities": [{"kind": "wechat_openid", "value": "oLN-9"}], "tags": ["new-mum"]}, format="json"
    )

    # When one request carries A's email and B's openid
    response = api.post(
        URL,
        {"email": "LI.NA@example.cn", "identities": [{"kind": "wechat_openid", "value": "oLN-9"}]},
        format="json",
    )

    # Then B is merged into A (the older), and everything B had moves to A
    assert response.status_code == 200, response.json()
    assert response.json()["id"] == a
    assert response.json()["merged_ids"] == [b]
    assert not Customer.objects.filter(pk=b).exists()
    survivor = Customer.objects.get(pk=a)
    assert survivor.city == "杭州"  # blank profile fields are filled from the merged customer
    assert Order.objects.get().customer_id == a
    assert Event.objects.get().customer_id == a
    assert Consent.objects.get(channel="wechat").customer_id == a
    assert list(CustomerTag.objects.filter(customer_id=a).values_list("tag__name", flat=True)) == ["new-mum"]
    assert CustomerIdentity.objects.get(kind="wechat_openid").customer_id == a
    assert CustomerMerge.objects.get().merged_customer_id == b


@pytest.mark.django_db
def test_batch_stores_good_customers_and_reports_bad_ones_by_index_and_field(api):
    response = api.post(
        BATCH_URL,
        {
            "customers": [
                {"email": "ok1@example.cn"},
                {"email": "not-an-email"},
                {"email": "ok2@example.cn", "emial": "typo@example.cn"},
                {"phone": "12"},
                {"external_id": "CRM-3", "consents": [{"channel": "fax", "status": "opted_in"}]},
                {"external_id": "CRM-4", "identities": [{"kind": "wechat_openid", "value": "o-4"}]},
                {"name": "nobody"},
                {"external_id": "CRM-5", "birthday": "2090-01-01"},
                {"external_id": "CRM-6", "time_zone": "Mars/Olympus"},
                42,
            ]
        },
        format="json",
    )
    assert response.status_code == 207
    body = response.json()
    assert (body["accepted"], body["rejected"]) == (2, 8)
    assert [r["index"] for r in body["results"]] == [0, 5]
    assert fields_of(response) == [
        (1, "email"),
        (2, "emial"),
        (3, "phone"),
        (4, "consents[0].channel"),
        (6, "non_field_errors"),
        (7, "birthday"),
        (8, "time_zone"),
        (9, "non_field_errors"),
    ]
    assert set(Customer.objects.values_list("email", flat=True)) == {"ok1@example.cn", ""}
    assert Customer.objects.filter(external_id="CRM-4").exists()
    assert not Customer.objects.filter(external_id="CRM-3").exists()


@pytest.mark.django_db
def test_a_customer_refused_half_way_leaves_nothing_behind(api):
    # The rule tag is refused after the customer, identities and consent were written: all roll back.
    Tag.objects.create(name="high-value", kind=Tag.Kind.RULE)
    response = api.post(
        URL,
        {
            "external_id": "CRM-9",
            "email": "half@example.cn",
            "consents": [{"channel": "email", "status": "opted_in"}],
            "tags": ["ok-tag", "high-value"],
        },
        format="json",
    )
    assert response.status_code == 400
    assert fields_of(response) == [(None, "tags")]
    assert not Customer.objects.exists()
    assert not CustomerIdentity.objects.exists()
    assert not ConsentChange.objects.exists()
    assert not Tag.objects.filter(name="ok-tag").exists()


@pytest.mark.django_db
def test_customer_without_any_identifier_is_refused(api):
    response = api.post(URL, {"name": "王芳", "city": "上海"}, format="json")
    assert response.status_code == 400
    assert "identifier" in errors_of(response)[0]["message"]
    assert not Customer.objects.exists()


@pytest.mark.django_db
def test_customer_detail_shows_identities_consents_and_tags(api):
    customer_id = api.post(
        URL,
        {"email": "d@example.cn", "consents": [{"channel": "email", "status": "opted_out"}], "tags": ["vip"]},
        format="json",
    ).json()["id"]
    response = api.get(f"{URL}{customer_id}/")
    assert response.status_code == 200
    body = response.json()
    assert body["email"] == "d@example.cn"
    assert body["identities"] == [
        {"kind": "email", "value": "d@example.cn", "source": body["identities"][0]["source"]}
    ]
    assert [(c["channel"], c["status"]) for c in body["consents"]] == [("email", "opted_out")]
    assert body["tags"] == ["vip"]


@pytest.mark.django_db
def test_customer_detail_of_a_merged_customer_points_at_the_survivor(api):
    older, newer = CustomerFactory(), CustomerFactory()
    CustomerIdentity.objects.create(customer=older, kind="email", value=older.email)
    CustomerIdentity.objects.create(customer=newer, kind="phone", value=newer.phone)
    api.post(URL, {"email": older.email, "phone": newer.phone}, format="json")
    response = api.get(f"{URL}{newer.pk}/")
    assert response.status_code == 404
    assert f"merged into customer {older.pk}" in errors_of(response)[0]["message"]
    assert api.get(f"{URL}999999/").status_code == 404


@pytest.mark.django_db(transaction=True)
def test_two_threads_upserting_the_same_new_identifier_end_with_one_customer():
    # Both requests find nobody with the identifier and create a customer; the unique (kind, value) key
    # makes the later one fail, roll back, and find the first one's customer on its retry.
    clients = [api_client("customers:write") for _ in range(2)]
    for round_no in range(8):
        barrier = threading.Barrier(2)
        responses = []

        def upsert(client, n, round_no=round_no, barrier=barrier, responses=responses):
            try:
                barrier.wait()
                body = {
                    "email": f"race{round_no}@example.cn",
                    "identities": [{"kind": "wechat_openid", "value": f"o-race-{round_no}"}],
                    "consents": [{"channel": "email", "status": "opted_in"}],
                    "tags": ["raced"],
                    "city": f"city-{n}",
                }
                responses.append(client.post(URL, body, format="json"))
            finally:
                connection.close()

        threads = [threading.Thread(target=upsert, args=(c, n)) for n, c in enumerate(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(r.status_code for r in responses) == [200, 201], [r.content for r in responses]
        assert len({r.json()["id"] for r in responses}) == 1
        owners = CustomerIdentity.objects.filter(
            value__in=[f"race{round_no}@example.cn", f"o-race-{round_no}"]
        )
        assert owners.values("customer_id").distinct().count() == 1
    assert Customer.objects.count() == 8
    assert Consent.objects.count() == 8
    assert CustomerTag.objects.count() == 8


@pytest.mark.django_db
def test_identifiers_linking_an_erased_customer_are_a_400_and_change_nothing(api):
    erased = CustomerFactory(erased_at=timezone.now())
    CustomerIdentity.objects.create(customer=erased, kind="wechat_openid", value="o-gone")
    api.post(URL, {"email": "alive@example.cn"}, format="json")
    response = api.post(
        URL,
        {
            "email": "alive@example.cn",
            "identities": [{"kind": "wechat_openid", "value": "o-gone"}],
            "tags": ["x"],
        },
        format="json",
    )
    assert response.status_code == 400
    assert "erased" in errors_of(response)[0]["message"]
    assert Customer.objects.count() == 2
    assert not CustomerTag.objects.exists()
