"""The marketing calendar: holidays and shopping dates a campaign can be scheduled against ("3 days before
中秋"). Seeded by campaigns.services.calendar (from the chinesecalendar package plus the shopping dates);
staff correct or add dates in the admin, and a reseed never overwrites what they edited."""

from django.db import models
from django.utils.translation import get_language
from django.utils.translation import gettext_lazy as _
from simple_history.models import HistoricalRecords


class CalendarDateKind(models.TextChoices):
    HOLIDAY = "holiday", _("Holiday")
    SHOPPING = "shopping", _("Shopping date")


class CalendarDateSource(models.TextChoices):
    PACKAGE = "package", _("chinesecalendar package")
    REVIEWED = "reviewed", _("Reviewed table")
    FIXED = "fixed", _("Fixed date")
    STAFF = "staff", _("Entered by staff")


class CalendarDate(models.Model):
    """One dated occurrence of a named day, e.g. mid_autumn in 2027. `code` is what campaigns refer to
    (Campaign.calendar_code), so a campaign "3 days before mid_autumn" finds each year's row."""

    code = models.SlugField(_("code"), max_length=32)
    year = models.PositiveSmallIntegerField(_("year"))
    date = models.DateField(_("date"))
    name_zh = models.CharField(_("name (Chinese)"), max_length=64)
    name_en = models.CharField(_("name (English)"), max_length=64)
    kind = models.CharField(_("kind"), max_length=16, choices=CalendarDateKind.choices)
    source = models.CharField(
        _("source"), max_length=16, choices=CalendarDateSource.choices, default=CalendarDateSource.STAFF
    )
    history = HistoricalRecords()

    class Meta:
        verbose_name = _("calendar date")
        verbose_name_plural = _("calendar dates")
        ordering = ["date", "code"]
        constraints = [
            models.UniqueConstraint(fields=["code", "year"], name="campaigns_calendar_date_code_year_uniq"),
            # The year is the festival's own year; a date in another year is a typing mistake.
            models.CheckConstraint(
                condition=models.Q(date__year=models.F("year")),
                name="campaigns_calendar_date_in_year",
                violation_error_message=_("The date must fall in its year."),
            ),
        ]
        indexes = [models.Index(fields=["code", "date"], name="campaigns_caldate_code_date")]

    def __str__(self) -> str:
        return f"{self.name} {self.date.isoformat()}"

    @property
    def name(self) -> str:
        """The name in the active language (the rows are data, so both languages live in columns)."""
        return self.name_zh if (get_language() or "").lower().startswith("zh") else self.name_en
