"""Database helpers the apps share.

`prepared_cursor` is for the few statements on a request's hot path (the member API's token and balance
reads). Django's PostgreSQL cursors bind parameters on the client and send each statement as new text,
so PostgreSQL parses and plans it every time; for an indexed lookup of one row the planning costs several
times the execution (0.2 ms of server CPU against 0.03 ms, measured in BENCHMARKS.md). A cursor that
binds on the server lets psycopg prepare a statement once it has run `prepare_threshold` times on a
connection (settings: DB_PREPARE_THRESHOLD), after which PostgreSQL reuses the plan.

Only hand-written statements that bind every parameter in a typed position belong here: server-side
binding cannot type a bare `SELECT %s`, which is why Django does not use it by default.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from django.db import DEFAULT_DB_ALIAS, connections


@contextmanager
def prepared_cursor(using: str = DEFAULT_DB_ALIAS) -> Iterator:
    """A Django cursor (query logging, error wrapping and health checks as usual) whose statements
    PostgreSQL prepares after a few runs on this connection. Other databases get the ordinary cursor."""
    connection = connections[using]
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            import psycopg

            # Swap the client-binding cursor Django made for a server-binding one on the same connection,
            # inside Django's wrapper, so that debug query capture and error translation still apply.
            cursor.cursor.close()
            cursor.cursor = psycopg.Cursor(connection.connection)
        yield cursor
