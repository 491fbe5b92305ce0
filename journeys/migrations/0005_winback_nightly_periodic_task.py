"""The nightly win-back run as a django-celery-beat PeriodicTask row, so staff see and edit its schedule in
the admin. A row, not a CELERY_BEAT_SCHEDULE entry: the DatabaseScheduler rewrites settings entries on every
start, which would undo an edit made in the admin."""

from django.db import migrations

TASK_NAME = "winback-nightly"
TASK = "journeys.tasks.winback_nightly"


def create(apps, schema_editor):
    CrontabSchedule = apps.get_model("django_celery_beat", "CrontabSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    # 03:15 in Asia/Shanghai: after the nightly metrics (02:30), before the morning's sends.
    crontab, _created = CrontabSchedule.objects.get_or_create(
        minute="15", hour="3", day_of_week="*", day_of_month="*", month_of_year="*", timezone="Asia/Shanghai"
    )
    PeriodicTask.objects.get_or_create(
        name=TASK_NAME,
        defaults={
            "task": TASK,
            "crontab": crontab,
            "enabled": True,
            "description": "Win-back: select tonight's dormant customers and enroll them (journeys).",
        },
    )


def remove(apps, schema_editor):
    apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(name=TASK_NAME).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("journeys", "0004_winback_programme"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(create, remove)]
