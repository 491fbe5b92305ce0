"""Thin Celery task: rebuild the product affinities."""

from celery import shared_task

from crm.recommendations import services


@shared_task(name="crm.recommendations.refresh", ignore_result=True, acks_late=True)
def recommendations_refresh() -> None:
    services.recommendations_refresh()
