"""Queueing Celery work from a service, once the transaction that wrote what the task reads commits."""

from __future__ import annotations

from celery import current_app
from django.db import transaction


def task_queue_on_commit(name: str, *args) -> None:
    """Queue the task registered as `name` after the current transaction commits (at once outside one), so
    the worker finds the rows the service wrote. Looked up by name in the Celery app: each tasks module
    imports the services it calls, so a service importing it back would make an import cycle."""
    transaction.on_commit(lambda: _registered(name).delay(*args))


def _registered(name: str):
    try:
        return current_app.tasks[name]
    except KeyError:  # celery's NotRegistered
        # A web process has not imported the apps' tasks modules (a worker does when it starts): import
        # them as the worker does, once.
        current_app.loader.import_default_modules()
        return current_app.tasks[name]
