"""Database helpers the apps share.

`server_binding_cursor` is for hand-written statements on hot paths. Django's PostgreSQL cursors bind
parameters on the client: each statement goes out as new SQL text with the values escaped into it, so
1. PostgreSQL parses and plans it every time; for an indexed lookup of one row the planning costs several
   times the execution (0.2 ms of server CPU against 0.03 ms for the member API's token read, see
   BENCHMARKS.md). A server-binding cursor lets psycopg prepare a statement once it has run
   `prepare_threshold` times on a connection (settings: DB_PREPARE_THRESHOLD); PostgreSQL then reuses
   the plan.
2. large array parameters are escaped as text; with a server-binding cursor they can travel in binary
   (`%(name)b`), which is most of the CPU saved on a large accrual batch.

Only statements that bind every parameter in a typed position belong here: server-side binding cannot
type a bare `SELECT %s`, which is why Django does not use it by default.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from django.db import DEFAULT_DB_ALIAS, connections


@contextmanager
def server_binding_cursor(using: str = DEFAULT_DB_ALIAS) -> Iterator:
    """A Django cursor (query logging, error wrapping and health checks as usual) that binds parameters on
    the server, so PostgreSQL prepares its statements after a few runs on this connection. Other
    databases get the ordinary cursor."""
    connection = connections[using]
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            import psycopg

            # Swap the client-binding cursor Django made for a server-binding one on the same connection,
            # inside Django's wrapper, so that debug query capture and error translation still apply.
            cursor.cursor.close()
            cursor.cursor = psycopg.Cursor(connection.connection)
        yield cursor
