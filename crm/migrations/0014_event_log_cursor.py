"""The event log's commit-safe cursor: `crm_event.xact_id` (the writing transaction) with an index in read
order, and `EventLogCursor`, one row per consumer (crm.services.event_log).

On PostgreSQL the column is added with the constant default 0 first, which is a catalogue change only
(no rewrite of a table of millions of events), and only then given its real default: the events already
stored all read as transaction 0, in id order, before everything written afterwards, which is what a
consumer moved from an id cursor onto this one needs (loyalty 0007 carries its position over as (0, id)).
Adding the column with the volatile default at once would rewrite the table and stamp every old event
with this migration's transaction. The index is built CONCURRENTLY, so writers are not blocked; hence
`atomic = False`."""

import django.utils.timezone
from django.db import migrations, models

import crm.db
from crm.migration_ops import AddIndexConcurrentlyOnPostgres, ExceptOnPostgres

ADD_XACT_ID = migrations.AddField(
    model_name="event",
    name="xact_id",
    field=models.BigIntegerField(
        db_default=crm.db.CurrentTransactionId(), editable=False, verbose_name="writing transaction"
    ),
)


def _add_column_postgres(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute("ALTER TABLE crm_event ADD COLUMN xact_id bigint NOT NULL DEFAULT 0")
    schema_editor.execute(
        "ALTER TABLE crm_event ALTER COLUMN xact_id SET DEFAULT (pg_current_xact_id()::text::bigint)"
    )


def _drop_column_postgres(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("ALTER TABLE crm_event DROP COLUMN xact_id")


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("crm", "0013_one_index_per_lookup_column"),
    ]

    operations = [
        migrations.CreateModel(
            name="EventLogCursor",
            fields=[
                (
                    "consumer",
                    models.CharField(
                        max_length=64, primary_key=True, serialize=False, verbose_name="consumer"
                    ),
                ),
                ("last_xact_id", models.BigIntegerField(default=0, verbose_name="last transaction id")),
                ("last_event_id", models.BigIntegerField(default=0, verbose_name="last event id")),
                ("events_read", models.BigIntegerField(default=0, verbose_name="events read")),
                (
                    "updated_at",
                    models.DateTimeField(default=django.utils.timezone.now, verbose_name="updated at"),
                ),
            ],
            options={
                "verbose_name": "event-log cursor",
                "verbose_name_plural": "event-log cursors",
            },
        ),
        migrations.SeparateDatabaseAndState(
            state_operations=[ADD_XACT_ID],
            database_operations=[
                ExceptOnPostgres(ADD_XACT_ID),
                migrations.RunPython(_add_column_postgres, _drop_column_postgres),
            ],
        ),
        AddIndexConcurrentlyOnPostgres(
            model_name="event",
            index=models.Index(fields=["xact_id", "id"], name="crm_event_log_order_idx"),
        ),
    ]
