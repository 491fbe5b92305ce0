"""Database helpers the apps share.

`server_binding_cursor` is for hand-written statements on hot paths. Django's PostgreSQL cursors bind
parameters on the client: each statement goes out as new SQL text with the values escaped into it, so
1. PostgreSQL parses and plans it every time; for an indexed lookup of one row the planning costs more
   than the execution (see BENCHMARKS.md, member API). A server-binding cursor lets psycopg prepare a
   statement once it has run `prepare_threshold` times on a connection (settings: DB_PREPARE_THRESHOLD);
   PostgreSQL then reuses the plan.
2. large array parameters are escaped as text; with a server-binding cursor they can travel in binary
   (`%(name)b`), which is most of the CPU saved on a large accrual batch.

Only statements that bind every parameter in a typed position belong here: server-side binding cannot
type a bare `SELECT %s`, which is why Django does not use it by default.

`foreign_key_triggers_off_sql` is for bulk writers that check every reference they write themselves
(seed_demo, the order ingest): it lets them skip PostgreSQL's per-row re-check at commit.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from django.db import DEFAULT_DB_ALIAS, InterfaceError, OperationalError, connections
from django.db.models import BigIntegerField, BooleanField, F, Func


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


def fetchone_checking_connection(sql: str, params, *, using: str = DEFAULT_DB_ALIAS):
    """Run one read-only statement (through `server_binding_cursor`) and return its first row, letting the
    statement itself stand in for Django's connection health check.

    With CONN_HEALTH_CHECKS, the first query of a request on a reused connection is preceded by a
    `SELECT 1`: one more round trip, which on the member API's hot read was a third of its round trips.
    Here, when that check is still due, the statement goes first; if it fails because the connection is
    dead (the server restarted, the connection was cut), the connection is closed and the statement runs
    once more on a new one, so the request succeeds just as the health check would have made it. Only
    for reads: running one twice is harmless. Inside a transaction nothing changes."""
    connection = connections[using]
    check_due = (
        connection.connection is not None
        and connection.health_check_enabled
        and not connection.health_check_done
        and not connection.in_atomic_block
    )
    if check_due:
        connection.health_check_done = True
    try:
        with server_binding_cursor(using) as cursor:
            cursor.execute(sql, params)
            return cursor.fetchone()
    except (OperationalError, InterfaceError):
        if not check_due or (connection.connection is not None and connection.is_usable()):
            raise  # a live connection: the error is the statement's own
        connection.close()
    with server_binding_cursor(using) as cursor:  # connects afresh
        cursor.execute(sql, params)
        return cursor.fetchone()


def foreign_key_triggers_off_sql(connection) -> str:
    """A statement that turns the foreign-key triggers (and every ordinary trigger) off until the end of
    the transaction, `SET LOCAL session_replication_role = replica`, where the role may, and returns one
    row if it did and none if not. Django's foreign keys are DEFERRABLE INITIALLY DEFERRED: each written row
    queues a check query that runs at commit. A writer that has already read, locked or inserted in this
    transaction every row its rows point at can skip them; the constraints stay, for every other writer.

    Allowed for a superuser and, on PostgreSQL 15+, for a role granted `SET ON PARAMETER
    session_replication_role`. Only turned off from "origin" (the default): a caller that chose otherwise
    keeps its choice. The caller sets it back to "origin" when it is done, if the transaction goes on."""
    if connection.pg_version >= 150000:
        allowed = "has_parameter_privilege('session_replication_role', 'SET')"
    else:  # no per-parameter grants before PostgreSQL 15
        allowed = "current_setting('is_superuser') = 'on'"
    return (
        "SELECT set_config('session_replication_role', 'replica', true) "
        f"WHERE current_setting('session_replication_role') = 'origin' AND {allowed}"
    )


FOREIGN_KEY_TRIGGERS_ON_SQL = "SELECT set_config('session_replication_role', 'origin', true)"


class CurrentTransactionId(Func):
    """The id of the transaction writing the row: PostgreSQL's 64-bit `pg_current_xact_id()` (xid8, which
    has no cast to bigint but through text); 0 on other databases, whose one writer at a time makes ids
    alone a safe cursor. The column default of `crm_event.xact_id`, which the event-log reader needs to
    know what may still commit behind it (crm.services.event_log)."""

    output_field = BigIntegerField()

    def as_sql(self, compiler, connection, **extra_context):
        return "0", []

    def as_postgresql(self, compiler, connection, **extra_context):
        return "(pg_current_xact_id()::text::bigint)", []


class AnyOf(Func):
    """`column = ANY(%s)` with the whole list as one array parameter on PostgreSQL, `column IN (...)`
    elsewhere: `Model.objects.filter(AnyOf("id", ids))`. Django's `__in` writes one placeholder per value:
    for a batch of thousands psycopg then spends longer splitting and quoting the statement than
    PostgreSQL running it (see BENCHMARKS.md, delivery rules screen and outbox dispatch). Callers on SQLite
    keep the list under its parameter limit."""

    output_field = BooleanField()

    def __init__(self, column: str, values: Sequence) -> None:
        super().__init__(F(column))
        self.values = list(values)

    def as_sql(self, compiler, connection, **extra_context):
        lhs, params = compiler.compile(self.source_expressions[0])
        placeholders = ", ".join(["%s"] * len(self.values)) or "NULL"
        return f"{lhs} IN ({placeholders})", [*params, *self.values]

    def as_postgresql(self, compiler, connection, **extra_context):
        lhs, params = compiler.compile(self.source_expressions[0])
        return f"{lhs} = ANY(%s)", [*params, self.values]
