"""Bad input on every endpoint: a clear 4xx in the one error shape, never a 500, nothing half-written."""

import json

import pytest
from django.core.exceptions import RequestDataTooBig

from crm.api.errors import api_exception_handler
from crm.models import Customer, Event, Order
from tests.crm.test_api_support import api_client, errors_of, fields_of
from tests.factories import CustomerFactory, OrderFactory
from tests.moments import FromNow, resolved

pytestmark = pytest.mark.django_db

POST_PATHS = [
    "/api/v1/customers/",
    "/api/v1/customers/batch/",
    "/api/v1/events/",
    "/api/v1/orders/",
    "/api/v1/orders/batch/",
    "/api/v1/orders/TM-1/refunds/",
]
BATCH_PATHS = [
    ("/api/v1/customers/batch/", "customers"),
    ("/api/v1/events/", "events"),
    ("/api/v1/orders/batch/", "orders"),
]


@pytest.fixture
def api(db):
    return api_client()


def raw(client, path: str, body: str | bytes, content_type: str = "application/json"):
    return client.generic("POST", path, body, content_type=content_type)


def event(**overrides) -> dict:
    """An event body; its times are FromNow, so pass it through resolved() before sending it."""
    return {
        "type": "page_view",
        "occurred_at": FromNow(minutes=-1),
        "customer": {"external_id": "C-1"},
        **overrides,
    }


def assert_error_shape(response):
    body = response.json()
    assert set(body) == {"errors"}
    assert body["errors"] and all({"field", "message"} <= set(e) and e["message"] for e in body["errors"])


@pytest.mark.parametrize("path", POST_PATHS)
@pytest.mark.parametrize(
    "body", ['{"events": [', "{'single': 'quotes'}", "", "\xff\xfe garbage", '{"a": NaN}', '{"a": 1e999}']
)
def test_malformed_json_is_a_400_with_a_clear_message(api, path, body):
    response = raw(api, path, body.encode("latin-1") if "\xff" in body else body)
    assert response.status_code == 400, response.content
    assert_error_shape(response)
    if body:  # an empty body is valid for nothing, but it is not malformed JSON
        assert errors_of(response)[0]["message"].startswith("Malformed JSON")


def test_deeply_nested_json_is_a_400(api):
    response = raw(api, "/api/v1/events/", "[" * 100_000 + "]" * 100_000)
    assert response.status_code in (400, 413)
    assert_error_shape(response)


@pytest.mark.parametrize("path", POST_PATHS)
def test_body_that_is_not_json_is_a_415(api, path):
    response = raw(api, path, "email=a@b.cn", content_type="application/x-www-form-urlencoded")
    assert response.status_code == 415
    assert_error_shape(response)


@pytest.mark.parametrize("path", POST_PATHS)
def test_body_over_the_upload_limit_is_a_clean_413(api, settings, path):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10_000
    body = json.dumps(resolved({"events": [event(properties={"pad": "x" * 500}) for _ in range(30)]}))
    response = raw(api, path, body)
    assert response.status_code == 413
    assert_error_shape(response)
    assert "10000" in errors_of(response)[0]["message"]


def test_body_declared_over_the_limit_is_refused_before_it_is_read(api, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10_000
    response = api.generic(
        "POST", "/api/v1/events/", b'{"events": []}', content_type="application/json", CONTENT_LENGTH="20000"
    )
    assert response.status_code == 413
    assert_error_shape(response)


@pytest.mark.parametrize(("path", "key"), BATCH_PATHS)
def test_more_than_1000_items_is_refused_naming_the_limit(api, path, key):
    response = api.post(path, {key: [{} for _ in range(1001)]}, format="json")
    assert response.status_code == 400
    assert fields_of(response) == [(None, key)]
    assert "1000" in errors_of(response)[0]["message"] and "1001" in errors_of(response)[0]["message"]


@pytest.mark.parametrize(("path", "key"), BATCH_PATHS)
def test_batch_envelope_errors_are_400_naming_the_field(api, path, key):
    assert fields_of(api.post(path, {key: [], "dry_run": True}, format="json")) == [(None, "dry_run")]
    assert fields_of(api.post(path, {}, format="json")) == [(None, key)]
    assert fields_of(api.post(path, {key: {"not": "a list"}}, format="json")) == [(None, key)]
    assert fields_of(api.post(path, [1, 2], format="json")) == [(None, "non_field_errors")]


@pytest.mark.parametrize(
    ("item", "field"),
    [
        (event(type=123), "type"),
        (event(type="x" * 65), "type"),
        (event(type=None), "type"),
        (event(occurred_at=1_700_000_000), "occurred_at"),
        (event(occurred_at=FromNow(minutes=10)), "occurred_at"),
        (event(occurred_at="1969-12-31T23:59:59+00:00"), "occurred_at"),
        (event(occurred_at="2026-11-23T09:00:00"), "occurred_at"),  # no offset
        (event(channel="telegram"), "channel"),
        (event(external_id="e" * 101), "external_id"),
        (event(external_id=17), "external_id"),
        (event(customer={"id": True}), "customer.id"),
        (event(customer={"id": 2**70}), "customer.id"),
        (event(customer={"external_id": "c" * 65}), "customer.external_id"),
        (event(customer={"identities": [{"kind": "email"}]}), "customer.identities[0].value"),
        (
            event(customer={"identities": [{"kind": "email", "value": "a@b.cn", "x": 1}]}),
            "customer.identities[0].x",
        ),
        (event(customer={"identities": "a@b.cn"}), "customer.identities"),
        (event(customer={"identities": [{"kind": "phone", "value": "call me"}]}), "customer.identities[0]"),
        (event(customer="C-1"), "customer"),
        ({"type": "page_view", "customer": {"external_id": "C-1"}}, "occurred_at"),
    ],
)
def test_bad_event_is_reported_by_index_and_field_and_the_good_one_stored(api, item, field):
    CustomerFactory(external_id="C-1")
    response = api.post(
        "/api/v1/events/", resolved({"events": [event(external_id="good"), item]}), format="json"
    )
    assert response.status_code == 207, response.json()
    assert fields_of(response) == [(1, field)]
    assert list(Event.objects.values_list("external_id", flat=True)) == ["good"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"email": "a@b.cn", "name": "n" * 201}, "name"),
        ({"email": "a@b.cn", "name": 5}, "name"),
        ({"email": "a@b.cn", "gender": "robot"}, "gender"),
        ({"email": "a@b.cn", "birthday": "tomorrow"}, "birthday"),
        ({"email": "a@b.cn", "identities": [{"kind": "", "value": "x"}]}, "identities[0].kind"),
        ({"email": "a@b.cn", "identities": [{"kind": "email", "value": "v" * 201}]}, "identities[0].value"),
        ({"email": "a@b.cn", "consents": [{"channel": "sms", "status": "maybe"}]}, "consents[0].status"),
        (
            {
                "email": "a@b.cn",
                "consents": [{"channel": "sms", "status": "opted_in", "occurred_at": FromNow(hours=1)}],
            },
            "consents[0].occurred_at",
        ),
        ({"email": "a@b.cn", "tags": ["t" * 65]}, "tags[0]"),
        ({"email": "a@b.cn", "name": "nul\x00"}, "name"),
        ({"external_id": None}, "external_id"),
        ({"external_id": 42}, "external_id"),
        ({"email": "a@b.cn", "identities": [{"kind": "email", "value": 7}]}, "identities[0].value"),
    ],
)
def test_bad_customer_is_a_400_naming_the_field_and_stores_nothing(api, body, field):
    response = api.post("/api/v1/customers/", resolved(body), format="json")
    assert response.status_code == 400, response.json()
    assert field in {f for _i, f in fields_of(response)}
    assert not Customer.objects.exists()


HOSTILE = [
    None,
    0,
    "text",
    [],
    [None],
    {"": ""},
    {"\ud800": 1},
    {
        "events": [
            None,
            0,
            [],
            "x",
            {"customer": {"id": "1"}},
            {"customer": {"identities": [None, 5, {"kind": 5}]}},
        ]
    },
    {"customers": [None, {"email": ["a@b.cn"]}, {"identities": {"kind": "email"}}, {"consents": "all"}]},
    {"orders": [None, {"lines": "x"}, {"customer": []}, {"total": {"amount": 1}}, {"external_id": "\x00"}]},
    {
        "external_id": ["R"],
        "amount": None,
        "refunded_at": [],
        "lines": [None, {"line_no": "2", "quantity": 1}],
    },
    {"email": "\ud800@x.cn", "tags": [None], "identities": [{"kind": "email", "value": "\ud800"}]},
    {"email": 5, "birthday": 5, "gender": ["x"], "time_zone": 7, "consents": [{"channel": {}, "status": []}]},
    {
        "orders": [
            {"external_id": "X", "placed_at": FromNow(minutes=-1), "total": True, "customer": {"id": "1"}}
        ]
    },
]


@pytest.mark.parametrize("path", POST_PATHS)
@pytest.mark.parametrize("body", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_bodies_never_get_a_500(api, path, body):
    OrderFactory(external_id="TM-1")
    response = raw(api, path, json.dumps(resolved(body)))  # json.dumps escapes the lone surrogates
    assert 400 <= response.status_code < 500 or response.status_code in (200, 207), response.content[:500]
    json.loads(response.content)
    if response.status_code >= 400:
        assert_error_shape(response)
    assert Order.objects.count() == 1


def test_get_of_a_customer_needs_a_numeric_id(api):
    assert api.get("/api/v1/customers/abc/").status_code == 404


def test_django_request_data_too_big_becomes_a_413_in_the_error_shape():
    # Raised by Django when anything reads request.body past DATA_UPLOAD_MAX_MEMORY_SIZE; left to Django it
    # would be an HTML 400.
    response = api_exception_handler(RequestDataTooBig("too big"), {})
    assert response.status_code == 413
    assert set(response.data) == {"errors"}


# Keys a client may send that look like numbers to str.isdigit() or int(): superscripts, other scripts'
# digits, and plain ASCII digits. Each is an unknown field, named as the client spelled it.
DIGIT_KEYS = ["²", "¹", "١", "٣٤", "0", "12"]


def _good_bodies() -> dict[str, dict]:
    """A valid body for each POST endpoint (times relative to now: call inside the test)."""
    customer = {"email": "digits@example.cn"}
    order = {
        "external_id": "TM-2",
        "placed_at": FromNow(minutes=-5),
        "total": "10.00",
        "customer": {"external_id": "C-digits"},
    }
    refund = {"external_id": "R-1", "amount": "1.00", "refunded_at": FromNow(minutes=-1)}
    return resolved(
        {
            "/api/v1/customers/": customer,
            "/api/v1/customers/batch/": {"customers": [customer]},
            "/api/v1/orders/": order,
            "/api/v1/orders/batch/": {"orders": [order]},
            "/api/v1/orders/TM-1/refunds/": refund,
        }
    )


# Where each endpoint's item nests another object, and the path of that object in an error.
NESTED = {
    "/api/v1/customers/": ("identities", "identities[0]"),
    "/api/v1/customers/batch/": ("identities", "identities[0]"),
    "/api/v1/orders/": ("customer", "customer"),
    "/api/v1/orders/batch/": ("customer", "customer"),
    "/api/v1/orders/TM-1/refunds/": ("lines", "lines[0]"),
}
NESTED_OBJECTS = {
    "identities": [{"kind": "email", "value": "digits@example.cn"}],
    "customer": {"external_id": "C-digits"},
    "lines": [{"line_no": 1, "quantity": 1}],
}


def _with_key(path: str, body: dict, where: str, key: str) -> tuple[dict, str, int | None]:
    """`body` with an unknown `key` at `where`; the field path and batch index the answer must name."""
    batch_key = {"/api/v1/customers/batch/": "customers", "/api/v1/orders/batch/": "orders"}.get(path)
    if where == "envelope":
        return {**body, key: 1}, key, None
    item, index = (body[batch_key][0], 0) if batch_key else (body, None)
    if where == "top":
        item[key] = 1
        return body, key, index
    name, field = NESTED[path]
    nested = json.loads(json.dumps(NESTED_OBJECTS[name]))
    (nested[0] if isinstance(nested, list) else nested)[key] = 1
    item[name] = nested
    return body, f"{field}.{key}", index


@pytest.mark.parametrize("key", DIGIT_KEYS)
@pytest.mark.parametrize(
    ("path", "where"),
    [(path, where) for path in NESTED for where in ("top", "nested")]
    + [("/api/v1/customers/batch/", "envelope"), ("/api/v1/orders/batch/", "envelope")],
)
def test_an_unknown_key_made_of_digits_is_a_400_naming_the_key(api, path, where, key):
    OrderFactory(external_id="TM-1")
    body, field, index = _with_key(path, _good_bodies()[path], where, key)

    response = api.post(path, body, format="json")

    # One bad item of a batch is a per-item error (207); anything else is refused whole (400).
    assert response.status_code == (207 if index is not None else 400), response.content[:500]
    if index is None:
        assert_error_shape(response)
    assert fields_of(response) == [(index, field)]
    assert errors_of(response)[0]["message"] == "Unknown field."
    assert Order.objects.count() == 1
    assert not Customer.objects.filter(email="digits@example.cn").exists()
