"""ImportJob.outcome: the summary of a job, or why it failed, as message codes with parameters
(crm/services/imports/messages.py), put into words in the reader's language when shown.

No data migration: the free text of older jobs (ImportJob.message, and `errors` entries with a "message")
cannot be turned back into codes reliably (it may be in either language, with values inside). The admin
shows it as it was written, translated when the whole text is a known message without parameters."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("crm", "0015_job_leases"),
    ]

    operations = [
        migrations.AddField(
            model_name="importjob",
            name="outcome",
            field=models.JSONField(blank=True, default=list, verbose_name="outcome"),
        ),
    ]
