"""Who is signing in: the member sign-in throttle (DRF) and django-axes' lockout both take the client's
address from one setting, TRUSTED_PROXY_COUNT. With no trusted proxy (the default) X-Forwarded-For is the
client's own text and is ignored; behind N proxies that each append the address they saw, the client is
the N-th address from the right, and whatever the client put to the left of it is ignored."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from axes.models import AccessAttempt
from django.core.cache import cache
from django.test import RequestFactory
from rest_framework.throttling import SimpleRateThrottle

from config.client_ip import client_ip_address
from tests.loyalty.test_member_support import (
    MEMBER_URLS,
    PASSWORD,
    member_make,
    member_test_setup,  # noqa: F401
)

ROOT = Path(__file__).resolve().parents[2]
PROXY = "10.0.0.1"  # the TLS proxy in front of the web servers
ALICE, BOB = "198.51.100.7", "198.51.100.8"  # two members' real addresses


@pytest.fixture(autouse=True)
def _fresh_throttles():
    cache.clear()
    yield
    cache.clear()


def trust_proxies(settings, count: int) -> None:
    """What config/settings.py derives from TRUSTED_PROXY_COUNT=<count>."""
    settings.TRUSTED_PROXY_COUNT = count
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": count}


def sign_in(client, login, password, *, remote, forwarded=None):
    headers = {"REMOTE_ADDR": remote}
    if forwarded is not None:
        headers["HTTP_X_FORWARDED_FOR"] = forwarded
    return client.post(
        "/api/v1/me/token",
        {"email": login.email, "password": password},
        content_type="application/json",
        **headers,
    )


def _sign_in_rate(settings, rate: str) -> None:
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"loyalty_member_sign_in": rate},
    }


# --- No trusted proxy: X-Forwarded-For is the client's own text ----------------------------------------


@pytest.mark.django_db
@pytest.mark.urls(MEMBER_URLS)
def test_without_a_trusted_proxy_a_forged_address_per_request_does_not_escape_the_sign_in_throttle(
    client, settings
):
    # The settings as they are (TRUSTED_PROXY_COUNT unset): no proxy is trusted.
    _sign_in_rate(settings, "3/min")
    settings.AXES_ENABLED = False  # the throttle alone
    login = member_make()

    codes = [
        sign_in(client, login, "wrong-wrong", remote="203.0.113.5", forwarded=f"192.0.2.{i}").status_code
        for i in range(5)
    ]

    assert codes == [401, 401, 401, 429, 429]


@pytest.mark.django_db
@pytest.mark.urls(MEMBER_URLS)
def test_without_a_trusted_proxy_a_forged_address_per_request_does_not_escape_the_lockout(client, settings):
    # The settings as they are (TRUSTED_PROXY_COUNT unset): no proxy is trusted.
    settings.AXES_ENABLED = True
    settings.AXES_FAILURE_LIMIT = 3
    login = member_make()

    failures = [
        sign_in(client, login, "wrong-wrong", remote="203.0.113.5", forwarded=f"192.0.2.{i}").status_code
        for i in range(3)
    ]
    right = sign_in(client, login, PASSWORD, remote="203.0.113.5", forwarded="192.0.2.99")

    assert failures[:2] == [401, 401] and failures[2] == 429  # the third failure locks
    assert right.status_code == 429 and right.json()["errors"][0]["code"] == "locked_out"
    assert set(AccessAttempt.objects.values_list("ip_address", flat=True)) == {"203.0.113.5"}


# --- One trusted proxy that appends the address it saw -------------------------------------------------


@pytest.mark.django_db
@pytest.mark.urls(MEMBER_URLS)
def test_behind_one_proxy_each_client_has_its_own_sign_in_throttle(client, settings):
    trust_proxies(settings, 1)
    _sign_in_rate(settings, "3/min")
    settings.AXES_ENABLED = False
    login = member_make()

    # Alice forges a new left-hand address each time; the proxy appends hers on the right.
    alice = [
        sign_in(client, login, "wrong-wrong", remote=PROXY, forwarded=f"192.0.2.{i}, {ALICE}").status_code
        for i in range(4)
    ]
    bob = sign_in(client, login, PASSWORD, remote=PROXY, forwarded=BOB)

    assert alice == [401, 401, 401, 429]
    assert bob.status_code == 201, bob.content


@pytest.mark.django_db
@pytest.mark.urls(MEMBER_URLS)
def test_behind_one_proxy_one_clients_wrong_passwords_do_not_lock_the_account_for_another(client, settings):
    trust_proxies(settings, 1)
    settings.AXES_ENABLED = True
    settings.AXES_FAILURE_LIMIT = 3
    login = member_make()

    for i in range(3):
        sign_in(client, login, "wrong-wrong", remote=PROXY, forwarded=f"192.0.2.{i}, {ALICE}")
    alice = sign_in(client, login, PASSWORD, remote=PROXY, forwarded=f"192.0.2.99, {ALICE}")
    bob = sign_in(client, login, PASSWORD, remote=PROXY, forwarded=BOB)

    assert alice.status_code == 429 and alice.json()["errors"][0]["code"] == "locked_out"
    assert bob.status_code == 201, bob.content
    # Bob's success clears Bob's failures only: Alice stays locked out.
    assert set(AccessAttempt.objects.values_list("ip_address", flat=True)) == {ALICE}
    again = sign_in(client, login, PASSWORD, remote=PROXY, forwarded=ALICE)
    assert again.status_code == 429


@pytest.mark.django_db
@pytest.mark.urls(MEMBER_URLS)
def test_behind_one_proxy_the_staff_admin_locks_out_the_client_not_the_proxy(client, settings, admin_user):
    trust_proxies(settings, 1)
    settings.AXES_ENABLED = True
    settings.AXES_FAILURE_LIMIT = 3

    for i in range(3):
        client.post(
            "/admin/login/",
            {"username": admin_user.username, "password": "wrong-wrong"},
            REMOTE_ADDR=PROXY,
            HTTP_X_FORWARDED_FOR=f"192.0.2.{i}, {ALICE}",
        )
    alice = client.post(
        "/admin/login/",
        {"username": admin_user.username, "password": "password"},
        REMOTE_ADDR=PROXY,
        HTTP_X_FORWARDED_FOR=ALICE,
    )
    bob = client.post(
        "/admin/login/",
        {"username": admin_user.username, "password": "password", "next": "/admin/"},
        REMOTE_ADDR=PROXY,
        HTTP_X_FORWARDED_FOR=BOB,
    )

    assert alice.status_code == 429
    assert bob.status_code == 302 and bob["Location"] == "/admin/"


# --- One rule for both -----------------------------------------------------------------------------


class _AnyThrottle(SimpleRateThrottle):
    rate = "1/min"


@pytest.mark.parametrize("count", [0, 1, 2])
@pytest.mark.parametrize(
    "forwarded",
    [None, ALICE, f"192.0.2.1, {ALICE}", f"192.0.2.1,{ALICE}, {PROXY}", " 192.0.2.1 ,  198.51.100.7 "],
)
def test_axes_and_the_api_throttles_see_the_same_client(settings, count, forwarded):
    trust_proxies(settings, count)
    headers = {"REMOTE_ADDR": PROXY}
    if forwarded is not None:
        headers["HTTP_X_FORWARDED_FOR"] = forwarded
    request = RequestFactory().get("/", **headers)

    assert client_ip_address(request) == _AnyThrottle().get_ident(request)


@pytest.mark.parametrize("forwarded", ["", "not-an-address", "192.0.2.1, 300.1.1.1", "192.0.2.1, "])
def test_a_forwarded_value_that_is_no_address_falls_back_to_the_peer(settings, forwarded):
    """axes stores the address in an inet column: a garbled header must not become a 500."""
    trust_proxies(settings, 1)
    request = RequestFactory().get("/", REMOTE_ADDR=PROXY, HTTP_X_FORWARDED_FOR=forwarded)

    assert client_ip_address(request) == PROXY


def _settings_in_a_fresh_process(**env_extra) -> subprocess.CompletedProcess:
    code = (
        "import django; django.setup(); from django.conf import settings; "
        "print(settings.TRUSTED_PROXY_COUNT, settings.REST_FRAMEWORK['NUM_PROXIES'], "
        "settings.AXES_CLIENT_IP_CALLABLE)"
    )
    env = {k: v for k, v in os.environ.items() if k != "TRUSTED_PROXY_COUNT"}
    env.update({"DJANGO_SETTINGS_MODULE": "config.settings", **env_extra})
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )


def test_one_variable_sets_the_trusted_proxies_of_both_and_the_default_trusts_none():
    default = _settings_in_a_fresh_process()
    one = _settings_in_a_fresh_process(TRUSTED_PROXY_COUNT="1")
    negative = _settings_in_a_fresh_process(TRUSTED_PROXY_COUNT="-1")

    assert default.stdout.split() == ["0", "0", "config.client_ip.client_ip_address"], default.stderr
    assert one.stdout.split() == ["1", "1", "config.client_ip.client_ip_address"], one.stderr
    assert negative.returncode != 0 and "TRUSTED_PROXY_COUNT" in negative.stderr
