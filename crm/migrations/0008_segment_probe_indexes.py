# Segment conditions probe a customer's orders and events customer by customer. Orders: the (customer,
# placed_at) index becomes covering, so a count or net spend in a window reads no order rows. Events: a
# (customer, type, occurred_at) index takes the place of the foreign key's customer-only index, so "did X
# in the last D days" reads only that customer's X events in the window.
#
# On PostgreSQL the new indexes are built with CREATE INDEX CONCURRENTLY (and the old ones dropped the
# same way): the event log holds tens of millions of rows and a plain CREATE INDEX would block event
# ingestion for as long as the build takes. Hence atomic = False. SQLite (make run) builds them plainly.

import django.db.models.deletion
from django.db import migrations, models

from crm.migration_ops import AddIndexConcurrentlyOnPostgres, RemoveIndexConcurrentlyOnPostgres


EVENT_CUSTOMER_INDEX = "crm_event_customer_id_ccd33fa3"  # Django's name for the foreign key's index


def _concurrently(schema_editor) -> str:
    return "CONCURRENTLY " if schema_editor.connection.vendor == "postgresql" else ""


def drop_event_customer_index(apps, schema_editor):
    schema_editor.execute(f'DROP INDEX {_concurrently(schema_editor)}IF EXISTS "{EVENT_CUSTOMER_INDEX}"')


def create_event_customer_index(apps, schema_editor):
    schema_editor.execute(
        f'CREATE INDEX {_concurrently(schema_editor)}IF NOT EXISTS "{EVENT_CUSTOMER_INDEX}" '
        'ON "crm_event" ("customer_id")'
    )


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("crm", "0007_segments"),
    ]

    operations = [
        AddIndexConcurrentlyOnPostgres(
            model_name="order",
            index=models.Index(
                fields=["customer", "placed_at"],
                include=("status", "channel", "total", "refunded_amount"),
                name="crm_order_cust_placed_cov_idx",
            ),
        ),
        RemoveIndexConcurrentlyOnPostgres(model_name="order", name="crm_order_customer_placed_idx"),
        AddIndexConcurrentlyOnPostgres(
            model_name="event",
            index=models.Index(fields=["customer", "type", "occurred_at"], name="crm_event_cust_type_time_idx"),
        ),
        # The customer-only index of the foreign key is redundant with the two (customer, ...) indexes;
        # dropping it keeps the number of indexes written per event the same. Dropped by name rather than
        # by AlterField, which would also drop and re-validate the foreign key over the whole table.
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="event",
                    name="customer",
                    field=models.ForeignKey(
                        blank=True,
                        db_index=False,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="events",
                        to="crm.customer",
                    ),
                ),
            ],
            database_operations=[migrations.RunPython(drop_event_customer_index, create_event_customer_index)],
        ),
    ]
