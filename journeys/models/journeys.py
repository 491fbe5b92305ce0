"""Journeys and their versions.

A journey is what staff name and switch on and off; its graph lives in versions. At most one version is
the draft (the only one that may change) and at most one is published (the one customers enter). A
published version is frozen: editing a published journey makes a new draft from it, and publishing that
draft retires the old version, whose customers in flight carry on through it (journeys/services/journeys.py).
"""

from django.conf import settings as django_settings
from django.db import models
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from simple_history.models import HistoricalRecords


class JourneyStatus(models.TextChoices):
    DRAFT = "draft", _("Draft")
    PUBLISHED = "published", _("Published")
    PAUSED = "paused", _("Paused")
    ARCHIVED = "archived", _("Archived")


class VersionStatus(models.TextChoices):
    DRAFT = "draft", _("Draft")
    PUBLISHED = "published", _("Published")
    RETIRED = "retired", _("Retired")


class Journey(models.Model):
    name = models.CharField(_("name"), max_length=200)
    description = models.TextField(_("description"), blank=True)
    status = models.CharField(
        _("status"), max_length=16, choices=JourneyStatus.choices, default=JourneyStatus.DRAFT
    )
    current_version = models.ForeignKey(
        "journeys.JourneyVersion",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        verbose_name=_("published version"),
    )
    created_by = models.ForeignKey(
        django_settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        verbose_name=_("created by"),
    )
    created_at = models.DateTimeField(_("created at"), default=timezone.now)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)
    history = HistoricalRecords()

    class Meta:
        verbose_name = _("journey")
        verbose_name_plural = _("journeys")
        ordering = ["name", "id"]
        # Editing a draft is change_journey; these two are the decisions that reach customers
        # (journeys/roles.py says which roles hold them).
        permissions = [
            ("publish_journey", _("Can publish journeys")),
            ("pause_journey", _("Can pause, resume and archive journeys")),
        ]

    def __str__(self) -> str:
        return self.name


class JourneyVersion(models.Model):
    journey = models.ForeignKey(
        Journey, on_delete=models.CASCADE, related_name="versions", verbose_name=_("journey")
    )
    number = models.PositiveIntegerField(_("version"))
    # The graph document ({"schema": 1, "nodes": [...], "edges": [...]}, journeys/nodes.py) and the
    # journey-level settings (re-entry, goal, holdout, priority, end date), as staff saved them.
    graph = models.JSONField(_("graph"), default=dict)
    settings = models.JSONField(_("settings"), default=dict, blank=True)
    status = models.CharField(
        _("status"), max_length=16, choices=VersionStatus.choices, default=VersionStatus.DRAFT
    )
    # Bumped by every save of the draft, so a canvas that saves from a stale copy is told, not obeyed.
    revision = models.PositiveIntegerField(_("revision"), default=1)
    created_by = models.ForeignKey(
        django_settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        verbose_name=_("created by"),
    )
    created_at = models.DateTimeField(_("created at"), default=timezone.now)
    updated_at = models.DateTimeField(_("updated at"), default=timezone.now)
    published_at = models.DateTimeField(_("published at"), null=True, blank=True)
    published_by = models.ForeignKey(
        django_settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        verbose_name=_("published by"),
    )

    class Meta:
        verbose_name = _("journey version")
        verbose_name_plural = _("journey versions")
        ordering = ["journey", "-number"]
        constraints = [
            models.UniqueConstraint(fields=["journey", "number"], name="journeys_version_number"),
            # One draft and one published version per journey, whatever two staff do at once.
            models.UniqueConstraint(
                fields=["journey"], condition=Q(status="draft"), name="journeys_version_one_draft"
            ),
            models.UniqueConstraint(
                fields=["journey"], condition=Q(status="published"), name="journeys_version_one_published"
            ),
            models.CheckConstraint(
                condition=Q(status="draft") | Q(published_at__isnull=False),
                name="journeys_version_published_at",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.journey} v{self.number}"

    @property
    def is_frozen(self) -> bool:
        return self.status != VersionStatus.DRAFT


class InFlight(models.TextChoices):
    """What publishing a new version does with the customers in flight on the version it replaces."""

    STAY = "stay", _("Customers in flight stay on their version until they finish")
    MOVE = "move", _("Move customers in flight node by node to the new version")


class MigrationStatus(models.TextChoices):
    RUNNING = "running", _("Moving customers")
    DONE = "done", _("Done")


class VersionMigration(models.Model):
    """One publish of a version that replaced another, and what it did with the customers in flight.

    For `move`, `mapping` is {old node id: new node id, or "" for "these customers exit"} over every node
    of the old version. The move runs in batches after the publish commits (journeys/services/versions.py)
    and stays `running` while enrollments a dispatcher holds are left for a later pass; a publish retried
    with the same choices finds this row and goes on with it, one with other choices is refused."""

    journey = models.ForeignKey(
        Journey, on_delete=models.CASCADE, related_name="version_migrations", verbose_name=_("journey")
    )
    from_version = models.ForeignKey(
        JourneyVersion, on_delete=models.CASCADE, related_name="+", verbose_name=_("from version")
    )
    to_version = models.OneToOneField(
        JourneyVersion, on_delete=models.CASCADE, related_name="migration", verbose_name=_("to version")
    )
    mode = models.CharField(_("customers in flight"), max_length=8, choices=InFlight.choices)
    mapping = models.JSONField(_("node mapping"), default=dict, blank=True)
    status = models.CharField(
        _("status"), max_length=16, choices=MigrationStatus.choices, default=MigrationStatus.RUNNING
    )
    moved = models.PositiveIntegerField(_("customers moved"), default=0)
    exited = models.PositiveIntegerField(_("customers exited"), default=0)
    created_by = models.ForeignKey(
        django_settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        verbose_name=_("published by"),
    )
    created_at = models.DateTimeField(_("created at"), default=timezone.now)
    finished_at = models.DateTimeField(_("finished at"), null=True, blank=True)

    class Meta:
        verbose_name = _("version migration")
        verbose_name_plural = _("version migrations")
        indexes = [
            models.Index(fields=["status"], condition=Q(status="running"), name="journeys_migration_running")
        ]

    def __str__(self) -> str:
        return f"{self.journey_id}: v{self.from_version_id} -> v{self.to_version_id}"
