"""crm.db.server_binding_cursor: hot statements are prepared by PostgreSQL after a few runs,
and stay visible to Django's query capture."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from crm.db import server_binding_cursor

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
