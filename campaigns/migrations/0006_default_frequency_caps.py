"""The frequency caps a fresh install starts with: at most 2 marketing messages a day and 5 a week per
customer, across all channels together (FrequencyCap.channel blank).

Across channels, not per channel: what tires a customer is how often the brand speaks to them, not by
which pipe. Per-channel caps of 2 a day would let four channels reach one person eight times a day, and a
campaign that fans out to WeChat and SMS would count as two separate allowances. Staff add per-channel
caps on top where a channel needs its own (SMS costs money and carriers watch volume: 1 SMS a day, say);
the screen applies every cap that matches a message, so the stricter one wins. Editable in the admin."""

from django.db import migrations

DEFAULTS = [("", "day", 2), ("", "week", 5)]


def add_defaults(apps, schema_editor):
    FrequencyCap = apps.get_model("campaigns", "FrequencyCap")
    for channel, period, limit in DEFAULTS:
        FrequencyCap.objects.get_or_create(channel=channel, period=period, defaults={"limit": limit})


def remove_defaults(apps, schema_editor):
    FrequencyCap = apps.get_model("campaigns", "FrequencyCap")
    for channel, period, limit in DEFAULTS:
        FrequencyCap.objects.filter(channel=channel, period=period, limit=limit).delete()


class Migration(migrations.Migration):
    dependencies = [("campaigns", "0005_message_claim_index")]

    operations = [migrations.RunPython(add_defaults, remove_defaults)]
