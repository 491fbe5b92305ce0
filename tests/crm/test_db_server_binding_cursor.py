"""crm.db.server_binding_cursor: hot statements are prepared by PostgreSQL after a few runs,
and stay visible to Django's query capture. crm.db.fetchone_checking_connection: a read that stands in
for Django's per-request connection health check."""

import pytest
from django.db import OperationalError, connection
from django.test.utils import CaptureQueriesContext

from crm.db import fetchone_checking_connection, server_binding_cursor

pytestmark = pytest.mark.django_db

STATEMENT = "SELECT count(*) FROM crm_customer WHERE id > %s"


def prepared_statements() -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements")
        return [row[0] for row in cursor.fetchall()]


def test_statement_is_prepared_after_the_threshold_and_answers_correctly():
    threshold = connection.settings_dict["OPTIONS"]["prepare_threshold"]
    assert isinstance(threshold, int)
    for _run in range(threshold + 2):
        with server_binding_cursor() as cursor:
            cursor.execute(STATEMENT, [-1])
            assert cursor.fetchone() == (0,)
    assert any("crm_customer WHERE id > $1" in s for s in prepared_statements())


def test_ordinary_cursors_are_not_prepared():
    for _run in range(10):
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM crm_customer WHERE id < %s", [0])
    assert not any("id < " in s for s in prepared_statements())


def test_queries_stay_visible_to_django_query_capture():
    with CaptureQueriesContext(connection) as captured:
        with server_binding_cursor() as cursor:
            cursor.execute(STATEMENT, [5])
    assert len(captured) == 1
    assert "crm_customer" in captured[0]["sql"]


def _terminate_backend_of(django_connection) -> int:
    """Cut `django_connection` from the server side, as a database restart or a proxy timeout would."""
    pid = django_connection.connection.info.backend_pid
    killer = django_connection.get_new_connection(django_connection.get_connection_params())
    try:
        killer.autocommit = True
        killer.execute("SELECT pg_terminate_backend(%s)", [pid])
    finally:
        killer.close()
    return pid


def _start_of_a_request_on_a_kept_connection(django_connection) -> None:
    # What close_old_connections leaves at the start of a request when CONN_HEALTH_CHECKS is on.
    django_connection.health_check_enabled = True
    django_connection.health_check_done = False


@pytest.mark.django_db(transaction=True)
def test_a_read_on_a_connection_the_server_cut_reconnects_and_answers():
    connection.ensure_connection()
    _start_of_a_request_on_a_kept_connection(connection)
    dead_pid = _terminate_backend_of(connection)

    assert fetchone_checking_connection(STATEMENT, [-1]) == (0,)
    assert connection.connection.info.backend_pid != dead_pid


@pytest.mark.django_db(transaction=True)
def test_the_read_skips_the_separate_health_check_round_trip(monkeypatch):
    connection.ensure_connection()
    _start_of_a_request_on_a_kept_connection(connection)
    checks = []
    real_is_usable = connection.is_usable
    monkeypatch.setattr(connection, "is_usable", lambda: checks.append(1) or real_is_usable())

    assert fetchone_checking_connection(STATEMENT, [-1]) == (0,)
    with connection.cursor() as cursor:  # a later query of the same request: no check either
        cursor.execute("SELECT 1")

    assert checks == []
    assert connection.health_check_done


def test_an_ordinary_first_query_still_runs_the_health_check(monkeypatch):
    """The counter-check: the spy above does see Django's check when it runs."""
    _start_of_a_request_on_a_kept_connection(connection)
    checks = []
    real_is_usable = connection.is_usable
    monkeypatch.setattr(connection, "is_usable", lambda: checks.append(1) or real_is_usable())

    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")

    assert checks == [1]


@pytest.mark.django_db(transaction=True)
def test_once_the_health_check_is_done_a_cut_connection_fails_the_read_as_before():
    """Only the request's first read stands in for the check; a later one does not silently retry."""
    connection.ensure_connection()
    connection.health_check_done = True
    _terminate_backend_of(connection)

    with pytest.raises(OperationalError):
        fetchone_checking_connection(STATEMENT, [-1])
    connection.close()
