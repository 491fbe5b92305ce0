"""Thin Celery tasks for the dashboards."""

from celery import shared_task

from crm.analytics import services


@shared_task(name="crm.analytics.refresh", ignore_result=True, acks_late=True)
def analytics_refresh(full: bool = False) -> None:
    services.analytics_refresh(full=full)
