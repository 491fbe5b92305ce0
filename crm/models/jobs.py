"""Background work that leaves a row: CSV import jobs and the heartbeats of periodic tasks."""

from django.conf import settings
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _


class ImportJob(models.Model):
    """A CSV import, run by a Celery worker so a long file shows progress and survives the request."""

    class Kind(models.TextChoices):
        CUSTOMERS = "customers", _("Customers")
        ORDERS = "orders", _("Orders")

    class Status(models.TextChoices):
        QUEUED = "queued", _("Queued")
        RUNNING = "running", _("Running")
        DONE = "done", _("Done")
        FAILED = "failed", _("Failed")

    kind = models.CharField(_("kind"), max_length=16, choices=Kind.choices)
    file = models.FileField(_("file"), upload_to="imports/%Y/%m/")
    original_name = models.CharField(_("file name"), max_length=255, blank=True)
    dry_run = models.BooleanField(_("dry run"), default=False)
    status = models.CharField(_("status"), max_length=8, choices=Status.choices, default=Status.QUEUED)
    total_rows = models.PositiveIntegerField(_("rows"), default=0)
    processed_rows = models.PositiveIntegerField(_("rows processed"), default=0)
    created_count = models.PositiveIntegerField(_("created"), default=0)
    updated_count = models.PositiveIntegerField(_("updated"), default=0)
    unchanged_count = models.PositiveIntegerField(_("unchanged"), default=0)
    error_count = models.PositiveIntegerField(_("rejected rows"), default=0)
    errors = models.JSONField(_("errors"), default=list, blank=True)
    message = models.TextField(_("message"), blank=True)  # jobs run before `outcome`: their text as written
    # The summary, or why the job failed, as codes with parameters (crm/services/imports/messages.py), put into
    # words in the reader's language when shown. `errors` entries are stored the same way.
    outcome = models.JSONField(_("outcome"), default=list, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        verbose_name=_("created by"),
    )
    created_at = models.DateTimeField(_("created at"), default=timezone.now)
    finished_at = models.DateTimeField(_("finished at"), null=True, blank=True)

    class Meta:
        verbose_name = _("import job")
        verbose_name_plural = _("import jobs")
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.kind} import {self.original_name}"


class Heartbeat(models.Model):
    """Liveness marks written by periodic tasks; /healthz reads when beat last ran from here."""

    name = models.CharField(_("name"), max_length=64, primary_key=True)
    beat_at = models.DateTimeField(_("last beat at"))

    def __str__(self) -> str:
        return self.name
