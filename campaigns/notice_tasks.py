"""The notice task: thin, it calls the service until the log has nothing more (bounded per run).
(campaigns/tasks.py belongs to the outbox; CampaignsConfig.ready() imports this module so that Celery
knows the task.)"""

from celery import shared_task
from django.utils import timezone

from campaigns.services.notices import notices_run

MAX_BATCHES_PER_RUN = 20


@shared_task(name="campaigns.notices_run")
def notices_task() -> int:
    messages = 0
    for _batch in range(MAX_BATCHES_PER_RUN):
        run = notices_run(now=timezone.now())
        messages += run.messages
        if run.events == 0:
            break
    return messages
