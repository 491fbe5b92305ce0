"""API keys, scopes, staff sessions, and the OpenAPI schema."""

from datetime import timedelta
from io import StringIO

import pytest
from django.contrib.auth.models import Permission, User
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.utils import timezone
from rest_framework.test import APIClient

from crm.api.authentication import api_key_create, api_key_revoke
from crm.models import ApiKey, Customer
from tests.crm.test_api_support import ago, api_client, client_for, errors_of
from tests.factories import CustomerFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def api(db):
    return api_client()


EVENT = {"type": "page_view", "occurred_at": None, "customer": {"external_id": "C-1"}}

# (method, path, body, scope it needs)
ENDPOINTS = [
    ("post", "/api/v1/customers/", {"email": "a@example.cn"}, "customers:write"),
    ("post", "/api/v1/customers/batch/", {"customers": []}, "customers:write"),
    ("get", "/api/v1/customers/{id}/", None, "customers:read"),
    ("post", "/api/v1/events/", {"events": []}, "events:write"),
    ("post", "/api/v1/orders/batch/", {"orders": []}, "orders:write"),
]


def call(client: APIClient, method: str, path: str, body):
    customer = Customer.objects.first() or CustomerFactory()
    path = path.format(id=customer.pk)
    return client.get(path) if method == "get" else client.post(path, body, format="json")


@pytest.mark.parametrize(("method", "path", "body", "scope"), ENDPOINTS)
def test_request_without_credentials_is_refused_with_401(method, path, body, scope):
    response = call(APIClient(), method, path, body)
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Api-Key"
    assert errors_of(response)[0]["field"] == "non_field_errors"


@pytest.mark.parametrize(
    "header",
    ["Api-Key nonsense", "Api-Key abcd1234.wrong-secret", "Api-Key .", "Api-Key abcd1234", "api-key x.y"],
)
def test_malformed_or_unknown_api_key_is_refused_with_401(header):
    api_key_create(name="real", scopes=["events:write"])
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=header)
    response = client.post("/api/v1/events/", {"events": []}, format="json")
    assert response.status_code == 401
    assert "API key" in errors_of(response)[0]["message"]


def test_revoked_key_is_refused_with_401():
    key, token = api_key_create(name="old", scopes=["events:write"])
    client = client_for(token)
    assert client.post("/api/v1/events/", {"events": []}, format="json").status_code == 200
    api_key_revoke(key=key)
    assert client.post("/api/v1/events/", {"events": []}, format="json").status_code == 401


def test_secret_is_shown_once_and_only_its_hash_is_stored():
    key, token = api_key_create(name="partner", scopes=["events:write"])
    prefix, secret = token.split(".")
    assert key.prefix == prefix
    assert secret not in key.key_hash and len(key.key_hash) == 64


@pytest.mark.parametrize(("method", "path", "body", "scope"), ENDPOINTS)
def test_key_without_the_scope_is_refused_with_403_naming_it(method, path, body, scope):
    others = [s for s in ApiKey.Scope.values if s != scope]
    response = call(api_client(*others), method, path, body)
    assert response.status_code == 403
    assert scope in errors_of(response)[0]["message"]


@pytest.mark.parametrize(("method", "path", "body", "scope"), ENDPOINTS)
def test_key_with_the_scope_gets_through(method, path, body, scope):
    response = call(api_client(scope), method, path, body)
    assert response.status_code in (200, 201)


def test_api_key_create_refuses_unknown_scopes():
    with pytest.raises(ValidationError):
        api_key_create(name="typo", scopes=["event:write"])
    assert not ApiKey.objects.exists()


def test_last_used_at_is_written_at_most_once_a_minute():
    key, token = api_key_create(name="busy", scopes=["events:write"])
    client = client_for(token)
    client.post("/api/v1/events/", {"events": []}, format="json")
    key.refresh_from_db()
    first = key.last_used_at
    assert first is not None
    client.post("/api/v1/events/", {"events": []}, format="json")
    key.refresh_from_db()
    assert key.last_used_at == first
    ApiKey.objects.filter(pk=key.pk).update(last_used_at=timezone.now() - timedelta(minutes=2))
    client.post("/api/v1/events/", {"events": []}, format="json")
    key.refresh_from_db()
    assert key.last_used_at > first


def _staff(*codenames: str, is_staff: bool = True) -> APIClient:
    user = User.objects.create_user(username=f"u{User.objects.count()}", password="x", is_staff=is_staff)
    user.user_permissions.set(
        Permission.objects.filter(content_type__app_label="crm", codename__in=codenames)
    )
    client = APIClient()
    client.force_login(user)
    return client


def test_staff_session_needs_the_model_permissions_the_scope_stands_for():
    body = {"events": [{**EVENT, "occurred_at": ago(minutes=1)}]}
    assert _staff().post("/api/v1/events/", body, format="json").status_code == 403
    assert _staff("add_event", is_staff=False).post("/api/v1/events/", body, format="json").status_code == 403
    allowed = _staff("add_event").post("/api/v1/events/", body, format="json")
    assert allowed.status_code == 200, allowed.json()
    assert allowed.json()["accepted"] == 1


def test_staff_reader_may_read_customers_but_not_write_them():
    customer = CustomerFactory()
    reader = _staff("view_customer")
    assert reader.get(f"/api/v1/customers/{customer.pk}/").status_code == 200
    assert reader.post("/api/v1/customers/", {"email": "x@example.cn"}, format="json").status_code == 403


def test_changes_made_with_an_api_key_go_to_history_without_a_user(api):
    # DRF puts the key's principal on the Django request, where the audit history looks for a user.
    response = api.post("/api/v1/customers/", {"email": "hist@example.cn", "name": "李娜"}, format="json")
    assert response.status_code == 201, response.json()
    history = Customer.history.get(id=response.json()["id"])
    assert history.history_type == "+"
    assert history.history_user is None


def test_changes_made_in_a_staff_session_are_attributed_to_the_user():
    client = _staff("add_customer", "change_customer")
    response = client.post("/api/v1/customers/", {"email": "staff@example.cn"}, format="json")
    assert response.status_code == 201, response.json()
    assert Customer.history.get(id=response.json()["id"]).history_user.username.startswith("u")


def test_schema_endpoint_returns_200_with_every_ingestion_path():
    response = APIClient().get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    paths = response.json()["paths"]
    for path in [
        "/api/v1/customers/",
        "/api/v1/customers/batch/",
        "/api/v1/customers/{id}/",
        "/api/v1/events/",
        "/api/v1/orders/",
        "/api/v1/orders/batch/",
        "/api/v1/orders/{order_external_id}/refunds/",
    ]:
        assert path in paths
    assert "ApiKeyAuth" in response.json()["components"]["securitySchemes"]


def test_schema_is_valid_and_generates_without_warnings(tmp_path):
    # --fail-on-warn turns every drf-spectacular warning (an unnamed enum, a field it cannot type) into
    # an error, so a view without proper request/response serializers fails here.
    call_command(
        "spectacular",
        "--validate",
        "--fail-on-warn",
        "--file",
        str(tmp_path / "schema.yml"),
        stderr=StringIO(),
    )
