"""Helpers shared by the API test modules (test_api_*.py import them from here)."""

from datetime import timedelta

from django.utils import timezone
from rest_framework.test import APIClient

from crm.api.authentication import api_key_create
from crm.models import ApiKey

ALL_SCOPES = tuple(ApiKey.Scope.values)


def client_for(token: str | None) -> APIClient:
    client = APIClient()
    if token:
        client.credentials(HTTP_AUTHORIZATION=f"Api-Key {token}")
    return client


def api_client(*scopes: str) -> APIClient:
    """An APIClient sending a fresh API key with these scopes (all of them when none are named)."""
    _key, token = api_key_create(name="test key", scopes=scopes or ALL_SCOPES)
    return client_for(token)


def ago(**delta) -> str:
    return (timezone.now() - timedelta(**delta)).isoformat()


def ahead(**delta) -> str:
    return (timezone.now() + timedelta(**delta)).isoformat()


def errors_of(response) -> list[dict]:
    return response.json()["errors"]


def fields_of(response) -> list[tuple]:
    """(index, field) of each error; index is None for errors outside a batch."""
    return [(e.get("index"), e["field"]) for e in errors_of(response)]
