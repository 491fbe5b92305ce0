"""Background work that leaves a row: the lease that long jobs hold, CSV import jobs and the heartbeats of
periodic tasks."""

from django.conf import settings
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _


class Leased(models.Model):
    """The lease a worker holds on a long job's row while it runs it (crm/services/leases.py).

    A holder has a `lease_token` and keeps moving `lease_expires_at` forward (its heartbeat); a job whose
    lease lapsed lost its worker (killed, or its machine gone) and is taken over by the next claim, which
    gets a new token, so the old holder's next heartbeat fails and it stops writing. A job that is queued
    has no token and `lease_expires_at` set to the time by which a worker should have picked it up: past
    that, the message is presumed lost and the reaper queues the job again. A job that is over has
    neither."""

    lease_token = models.UUIDField(_("lease token"), null=True, blank=True, editable=False)
    lease_holder = models.CharField(_("run by"), max_length=200, blank=True, editable=False)
    lease_expires_at = models.DateTimeField(_("lease expires at"), null=True, blank=True, editable=False)
    lease_claims = models.PositiveIntegerField(_("times started"), default=0, editable=False)

    class Meta:
        abstract = True

    @property
    def lease_lapsed(self) -> bool:
        """True when the job's worker (or its queued message) is overdue: the reaper will resume it."""
        return self.lease_expires_at is not None and self.lease_expires_at < timezone.now()


class ImportJob(Leased):
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
