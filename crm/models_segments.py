"""Segments (dynamic rules and static lists), their snapshots, and recommendation tables.

Also the small tables behind the analytics dashboards: acquisition cost per channel and month (entered by
staff) and the nightly-computed dashboard summaries.

A segment's `rule` is a JSON tree of AND/OR groups of conditions; `crm.segments.fields` defines what a
condition may say and `crm.segments.compiler` turns the tree into one SQL query.
"""

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

# Imported through crm.models (which imports this module at its end), so Channel is defined by now.
from crm.clock import moment_display
from crm.models import Channel

__all__ = [
    "AcquisitionCost",
    "DashboardSummary",
    "ProductAffinity",
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
    snapshot = models.ForeignKey(
        SegmentSnapshot,
        on_delete=models.CASCADE,
        related_name="members",
        db_index=False,
        verbose_name=_("segment snapshot"),
    )
    customer = models.ForeignKey(
        "crm.Customer", on_delete=models.CASCADE, related_name="+", verbose_name=_("customer")
    )

    class Meta:
        verbose_name = _("snapshot member")
        verbose_name_plural = _("snapshot members")
        constraints = [
            models.UniqueConstraint(fields=["snapshot", "customer"], name="crm_snapshotmember_uniq")
        ]

    def __str__(self) -> str:
        return f"{self.snapshot_id}:{self.customer_id}"


class ProductAffinity(models.Model):
    """Item-to-item "bought together": `related_product` is often bought by customers who bought
    `product`. Rebuilt nightly from order lines (crm.recommendations.services)."""

    product = models.ForeignKey(
        "crm.Product", on_delete=models.CASCADE, related_name="+", db_index=False, verbose_name=_("product")
    )
    related_product = models.ForeignKey(
        "crm.Product", on_delete=models.CASCADE, related_name="+", verbose_name=_("related product")
    )
    customers = models.PositiveIntegerField(_("customers who bought both"))
    score = models.FloatField(_("score"))
    computed_at = models.DateTimeField(_("computed at"))

    class Meta:
        verbose_name = _("product affinity")
        verbose_name_plural = _("product affinities")
        constraints = [
            models.UniqueConstraint(fields=["product", "related_product"], name="crm_productaffinity_uniq")
        ]

    def __str__(self) -> str:
        return f"{self.product_id} → {self.related_product_id}"


class AcquisitionCost(models.Model):
    """What it cost to acquire one customer through a channel in a month (CAC), entered by staff."""

    channel = models.CharField(_("channel"), max_length=16, choices=Channel.choices)
    month = models.DateField(_("month"), help_text=_("The first day of the month."))
    cac = models.DecimalField(
        _("cost per acquired customer"), max_digits=12, decimal_places=2, validators=[MinValueValidator(0)]
    )
    currency = models.CharField(_("currency"), max_length=3, default="CNY")
    note = models.CharField(_("note"), max_length=300, blank=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        verbose_name = _("acquisition cost")
        verbose_name_plural = _("acquisition costs")
        ordering = ["-month", "channel"]
        constraints = [
            models.UniqueConstraint(fields=["channel", "month"], name="crm_acquisitioncost_uniq"),
            models.CheckConstraint(condition=Q(cac__gte=0), name="crm_acquisitioncost_cac_nonneg"),
        ]

    def __str__(self) -> str:
        return f"{self.channel} {self.month:%Y-%m}: {self.cac} {self.currency}"

    def clean(self):
        if self.month and self.month.day != 1:
            raise ValidationError({"month": _("Enter the first day of the month (e.g. 2026-11-01).")})


class DashboardSummary(models.Model):
    """A precomputed dashboard figure set (crm.analytics): one row per chart and key (a period or a
    parameter set), refreshed nightly so the dashboard endpoints read one row instead of scanning the
    order and event history."""

    chart = models.CharField(_("chart"), max_length=32)
    key = models.CharField(_("key"), max_length=64)
    data = models.JSONField(_("data"))
    computed_at = models.DateTimeField(_("computed at"))
    duration_ms = models.PositiveIntegerField(_("computation time (ms)"), default=0)

    class Meta:
        verbose_name = _("dashboard")
        verbose_name_plural = _("dashboards")
        constraints = [models.UniqueConstraint(fields=["chart", "key"], name="crm_dashboardsummary_uniq")]

    def __str__(self) -> str:
        return f"{self.chart}:{self.key}"
