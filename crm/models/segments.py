"""Segments (dynamic rules and static lists) and their snapshots.

A segment's `rule` is a JSON tree of AND/OR groups of conditions; `crm.segments.fields` defines what a
condition may say and `crm.segments.compiler` turns the tree into one SQL query.
"""

from django.conf import settings
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from crm.clock import moment_display

__all__ = [
    "Segment",
    "SegmentSnapshot",
    "SegmentSnapshotMember",
    "StaticList",
    "StaticListMember",
]


def empty_rule() -> dict:
    """A rule with no conditions: every customer who is not erased."""
    return {"op": "and", "conditions": []}


class Segment(models.Model):
    """A dynamic segment: its members are whoever matches `rule` at the moment it is evaluated."""

    name = models.CharField(_("name"), max_length=200, unique=True)
    description = models.TextField(_("description"), blank=True)
    rule = models.JSONField(_("rule"), default=empty_rule)
    last_count = models.PositiveIntegerField(
        _("members at last count"), null=True, blank=True, editable=False
    )
    last_counted_at = models.DateTimeField(_("last counted at"), null=True, blank=True, editable=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        verbose_name=_("created by"),
    )
    created_at = models.DateTimeField(_("created at"), default=timezone.now)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        verbose_name = _("segment")
        verbose_name_plural = _("segments")
        ordering = ["name"]
        permissions = [("export_segment", _("Can export segment members"))]

    def __str__(self) -> str:
        return self.name


class StaticList(models.Model):
    """A fixed set of customers, uploaded from a file or picked by hand; usable in segment rules."""

    name = models.CharField(_("name"), max_length=200, unique=True)
    description = models.TextField(_("description"), blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        verbose_name=_("created by"),
    )
    created_at = models.DateTimeField(_("created at"), default=timezone.now)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        verbose_name = _("static list")
        verbose_name_plural = _("static lists")
        ordering = ["name"]
        permissions = [("export_staticlist", _("Can export static list members"))]

    def __str__(self) -> str:
        return self.name


class StaticListMember(models.Model):
    # No separate index on static_list: the unique (static_list, customer) index serves it.
    static_list = models.ForeignKey(
        StaticList,
        on_delete=models.CASCADE,
        related_name="members",
        db_index=False,
        verbose_name=_("static list"),
    )
    customer = models.ForeignKey(
        "crm.Customer", on_delete=models.CASCADE, related_name="+", verbose_name=_("customer")
    )
    source = models.CharField(_("source"), max_length=16, default="manual")
    added_at = models.DateTimeField(_("added at"), default=timezone.now)

    class Meta:
        verbose_name = _("static list member")
        verbose_name_plural = _("static list members")
        constraints = [
            models.UniqueConstraint(fields=["static_list", "customer"], name="crm_staticlistmember_uniq")
        ]

    def __str__(self) -> str:
        return f"{self.static_list_id}:{self.customer_id}"


class SegmentSnapshot(models.Model):
    """The members of a segment frozen at one moment, e.g. the audience of one send. The rule is copied
    so the snapshot still explains itself after the segment is edited or deleted."""

    segment = models.ForeignKey(
        Segment,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="snapshots",
        verbose_name=_("segment"),
    )
    segment_name = models.CharField(_("segment name"), max_length=200)
    rule = models.JSONField(_("rule"))
    purpose = models.CharField(_("purpose"), max_length=200, blank=True)
    member_count = models.PositiveIntegerField(_("members"), default=0)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        verbose_name=_("created by"),
    )
    created_at = models.DateTimeField(_("taken at"), default=timezone.now)

    class Meta:
        verbose_name = _("segment snapshot")
        verbose_name_plural = _("segment snapshots")
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.segment_name} @ {moment_display(self.created_at)}"


class SegmentSnapshotMember(models.Model):
    # No database foreign keys: a snapshot inserts up to a million rows in one statement, and PostgreSQL
    # would check each row's two keys one by one at commit (Django's constraints are deferred), a large
    # part of a campaign's start (see BENCHMARKS.md, campaign start). The one writer,
    # segment_snapshot_create, checks them for the whole set instead: the snapshot row is its own, and it
    # inserts only customers it has just locked FOR KEY SHARE (what a key check takes), so a merge or a
    # delete waits for its commit and then re-points or cascades the new rows. Deletes cascade in Django.
    snapshot = models.ForeignKey(
        SegmentSnapshot,
        on_delete=models.CASCADE,
        related_name="members",
        db_index=False,
        db_constraint=False,
        verbose_name=_("segment snapshot"),
    )
    customer = models.ForeignKey(
        "crm.Customer",
        on_delete=models.CASCADE,
        related_name="+",
        db_constraint=False,
        verbose_name=_("customer"),
    )

    class Meta:
        verbose_name = _("snapshot member")
        verbose_name_plural = _("snapshot members")
        constraints = [
            models.UniqueConstraint(fields=["snapshot", "customer"], name="crm_snapshotmember_uniq")
        ]

    def __str__(self) -> str:
        return f"{self.snapshot_id}:{self.customer_id}"
