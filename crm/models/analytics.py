"""The small tables behind the analytics dashboards: acquisition cost per channel and month (entered by
staff) and the nightly-computed dashboard summaries."""

from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _

from crm.models.customers import Channel


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
