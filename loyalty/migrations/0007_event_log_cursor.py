"""The accrual reads the event log through crm's commit-safe cursor (crm.services.event_log); its own
`LoyaltyCursor` goes. Its position moves over as (transaction 0, last event id): crm 0014 stamped every
event stored before it with transaction 0, so the events the accrual had read are exactly those at or
before that position, and everything after it (older unread events, then all new ones) is still ahead."""

from django.db import migrations

OLD_NAME = "accrual"
CONSUMER = "loyalty.accrual"


def _carry_position_over(apps, schema_editor):
    LoyaltyCursor = apps.get_model("loyalty", "LoyaltyCursor")
    EventLogCursor = apps.get_model("crm", "EventLogCursor")
    old = LoyaltyCursor.objects.filter(name=OLD_NAME).first()
    if old is not None:
        EventLogCursor.objects.update_or_create(
            consumer=CONSUMER,
            defaults={"last_xact_id": 0, "last_event_id": old.last_event_id, "updated_at": old.updated_at},
        )


def _carry_position_back(apps, schema_editor):
    LoyaltyCursor = apps.get_model("loyalty", "LoyaltyCursor")
    EventLogCursor = apps.get_model("crm", "EventLogCursor")
    new = EventLogCursor.objects.filter(consumer=CONSUMER).first()
    if new is None:
        return
    Event = apps.get_model("crm", "Event")
    # Back to a plain id: the highest id the new cursor had passed.
    last_id = (
        Event.objects.filter(xact_id__lte=new.last_xact_id)
        .exclude(xact_id=new.last_xact_id, id__gt=new.last_event_id)
        .order_by("-id")
        .values_list("id", flat=True)
        .first()
        or 0
    )
    LoyaltyCursor.objects.update_or_create(
        name=OLD_NAME, defaults={"last_event_id": last_id, "updated_at": new.updated_at}
    )
    new.delete()


class Migration(migrations.Migration):
    dependencies = [
        ("crm", "0014_event_log_cursor"),
        ("loyalty", "0006_bulk_adjustment_progress"),
    ]

    operations = [
        migrations.RunPython(_carry_position_over, _carry_position_back),
        migrations.DeleteModel(name="LoyaltyCursor"),
    ]
