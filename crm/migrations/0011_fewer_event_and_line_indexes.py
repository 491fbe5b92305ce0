"""Fewer index entries per written row, on the two tables that take the most writes.

- crm_event.external_id becomes unique only where it is given (a partial unique index). Most events (orders,
  refunds, tier changes, lifecycle stages, messages) have no external id, and the plain unique column
  indexed every one of their NULLs twice on PostgreSQL: in the unique index and in the LIKE-pattern index
  Django adds to a unique CharField, which nothing uses (event ids are only ever looked up whole).
- crm_orderline loses its order-only index: the unique (order, line_no) index serves every lookup by order.

On PostgreSQL the new unique index is built CONCURRENTLY before the old constraint is dropped, so the
event log stays writable and unique throughout; SQLite (make run) rebuilds the table the usual way."""

import django.db.models.deletion
from django.db import migrations, models

from crm.migration_ops import drop_foreign_key_index

EVENT_EXTERNAL_ID_UNIQUE = models.UniqueConstraint(
    fields=["external_id"],
    condition=models.Q(external_id__isnull=False),
    name="crm_event_external_id_uniq",
    violation_error_message="An event with this external id is already stored.",
)


def _plain_external_id(Event) -> models.CharField:
    field = models.CharField(max_length=100, null=True, blank=True, verbose_name="external event id")
    field.set_attributes_from_name("external_id")
    field.model = Event
    return field


def event_external_id_forwards(apps, schema_editor):
    Event = apps.get_model("crm", "Event")
    old = Event._meta.get_field("external_id")
    if schema_editor.connection.vendor != "postgresql":
        schema_editor.alter_field(Event, old, _plain_external_id(Event))
        schema_editor.add_constraint(Event, EVENT_EXTERNAL_ID_UNIQUE)
        return
    schema_editor.execute(
        'CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS "crm_event_external_id_uniq" '
        'ON "crm_event" ("external_id") WHERE "external_id" IS NOT NULL'
    )
    # The old names are Django's generated ones: read them from the catalogue rather than assume them.
    with schema_editor.connection.cursor() as cursor:
        found = schema_editor.connection.introspection.get_constraints(cursor, "crm_event")
    for name, info in found.items():
        if info["columns"] != ["external_id"] or name == "crm_event_external_id_uniq":
            continue
        if info["unique"] and not info["index"]:  # the UNIQUE constraint
            schema_editor.execute(f'ALTER TABLE "crm_event" DROP CONSTRAINT IF EXISTS "{name}"')
        elif info["index"] and not info["unique"]:  # the LIKE-pattern index
            schema_editor.execute(f'DROP INDEX CONCURRENTLY IF EXISTS "{name}"')


def event_external_id_backwards(apps, schema_editor):
    Event = apps.get_model("crm", "Event")
    if schema_editor.connection.vendor != "postgresql":
        schema_editor.remove_constraint(Event, EVENT_EXTERNAL_ID_UNIQUE)
        old = _plain_external_id(Event)
        new = _plain_external_id(Event)
        new._unique = True
        schema_editor.alter_field(Event, old, new)
        return
    schema_editor.execute(
        'ALTER TABLE "crm_event" ADD CONSTRAINT "crm_event_external_id_key" UNIQUE ("external_id")'
    )
    schema_editor.execute(
        'CREATE INDEX CONCURRENTLY IF NOT EXISTS "crm_event_external_id_6da4353e_like" '
        'ON "crm_event" ("external_id" varchar_pattern_ops)'
    )
    schema_editor.execute('DROP INDEX CONCURRENTLY IF EXISTS "crm_event_external_id_uniq"')


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("crm", "0010_segment_covering_indexes"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="event",
                    name="external_id",
                    field=models.CharField(
                        blank=True, max_length=100, null=True, verbose_name="external event id"
                    ),
                ),
                migrations.AddConstraint(model_name="event", constraint=EVENT_EXTERNAL_ID_UNIQUE),
            ],
            database_operations=[
                migrations.RunPython(event_external_id_forwards, event_external_id_backwards)
            ],
        ),
        drop_foreign_key_index(
            migrations.AlterField(
                model_name="orderline",
                name="order",
                field=models.ForeignKey(
                    db_index=False,
                    on_delete=django.db.models.deletion.CASCADE,
                    related_name="lines",
                    to="crm.order",
                ),
            ),
            index="crm_orderline_order_id_b45c31d6",
            table="crm_orderline",
            column="order_id",
        ),
    ]
