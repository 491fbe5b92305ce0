"""A campaign run's report as last computed (campaigns/reports.py): the per-arm figures of a
million-recipient run take seconds to aggregate, so the report page reads this row and a beat-woken pass
keeps it fresh while the attribution window is open (campaigns/services/reports.py)."""

from django.db import models
from django.utils.translation import gettext_lazy as _


class CampaignRunReport(models.Model):
    run = models.OneToOneField(
        "campaigns.CampaignRun",
        on_delete=models.CASCADE,
        primary_key=True,
        related_name="report",
        verbose_name=_("run"),
    )
    figures = models.JSONField(_("figures"))  # RunReport.as_json(): arms, comparisons, conversions by day
    computed_at = models.DateTimeField(_("computed at"))
    compute_seconds = models.FloatField(_("computed in (seconds)"), default=0)

    class Meta:
        verbose_name = _("campaign report")
        verbose_name_plural = _("campaign reports")

    def __str__(self) -> str:
        return f"{self.run_id} @ {self.computed_at:%Y-%m-%d %H:%M}"
