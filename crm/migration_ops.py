"""Migration operations for the big tables: on PostgreSQL indexes are built and dropped CONCURRENTLY (the
event log and the order table hold millions of rows, and a plain CREATE INDEX blocks their writers for
the whole build); SQLite (make run) does the same plainly. Migrations using them set `atomic = False`."""

from django.contrib.postgres.operations import AddIndexConcurrently, RemoveIndexConcurrently
from django.db import migrations


class AddIndexConcurrentlyOnPostgres(AddIndexConcurrently):
    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor == "postgresql":
            return super().database_forwards(app_label, schema_editor, from_state, to_state)
        return migrations.AddIndex.database_forwards(self, app_label, schema_editor, from_state, to_state)

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor == "postgresql":
            return super().database_backwards(app_label, schema_editor, from_state, to_state)
        return migrations.AddIndex.database_backwards(self, app_label, schema_editor, from_state, to_state)


class RemoveIndexConcurrentlyOnPostgres(RemoveIndexConcurrently):
    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor == "postgresql":
            return super().database_forwards(app_label, schema_editor, from_state, to_state)
        return migrations.RemoveIndex.database_forwards(self, app_label, schema_editor, from_state, to_state)

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor == "postgresql":
            return super().database_backwards(app_label, schema_editor, from_state, to_state)
        return migrations.RemoveIndex.database_backwards(self, app_label, schema_editor, from_state, to_state)


def _concurrently(schema_editor) -> str:
    return "CONCURRENTLY " if schema_editor.connection.vendor == "postgresql" else ""


def drop_foreign_key_index(alter_field: migrations.AlterField, *, index: str, table: str, column: str):
    """`alter_field` (a ForeignKey becoming db_index=False) with only its index dropped, by name: a plain
    AlterField would also drop and re-validate the foreign-key constraint over the whole table."""

    def forwards(apps, schema_editor):
        schema_editor.execute(f'DROP INDEX {_concurrently(schema_editor)}IF EXISTS "{index}"')

    def backwards(apps, schema_editor):
        schema_editor.execute(
            f'CREATE INDEX {_concurrently(schema_editor)}IF NOT EXISTS "{index}" ON "{table}" ("{column}")'
        )

    return migrations.SeparateDatabaseAndState(
        state_operations=[alter_field],
        database_operations=[migrations.RunPython(forwards, backwards)],
    )


class ExceptOnPostgres(migrations.operations.base.Operation):
    """`operation` everywhere but PostgreSQL, where a RunPython beside it does the same by other means (for
    the big tables: CONCURRENTLY, renames instead of rebuilds). For SeparateDatabaseAndState's
    database_operations; the state changes as `operation` says on every database."""

    reduces_to_sql = False

    def __init__(self, operation):
        self.operation = operation

    def deconstruct(self):
        return self.__class__.__name__, [self.operation], {}

    def state_forwards(self, app_label, state):
        self.operation.state_forwards(app_label, state)

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor != "postgresql":
            self.operation.database_forwards(app_label, schema_editor, from_state, to_state)

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor != "postgresql":
            self.operation.database_backwards(app_label, schema_editor, from_state, to_state)

    def describe(self):
        return f"{self.operation.describe()} (except on PostgreSQL)"


def single_column_indexes(schema_editor, table: str, column: str) -> list[tuple[str, str, bool, str | None]]:
    """(index name, operator class, unique, name of the constraint it backs or None) for every index of
    `table` on `column` alone (PostgreSQL): Django's generated names, read rather than assumed."""
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT i.relname, opc.opcname, ix.indisunique, con.conname
            FROM pg_index ix
            JOIN pg_class i ON i.oid = ix.indexrelid
            JOIN pg_opclass opc ON opc.oid = ix.indclass[0]
            JOIN pg_attribute a ON a.attrelid = ix.indrelid AND a.attnum = ix.indkey[0]
            LEFT JOIN pg_constraint con ON con.conindid = ix.indexrelid AND con.conrelid = ix.indrelid
            WHERE ix.indrelid = %s::regclass AND ix.indnatts = 1 AND ix.indpred IS NULL AND a.attname = %s
            ORDER BY i.relname
            """,
            [table, column],
        )
        return cursor.fetchall()
