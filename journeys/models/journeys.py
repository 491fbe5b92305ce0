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
