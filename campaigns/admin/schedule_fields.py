"""The schedule part of the campaign form: widgets, help texts, the cron expression in words and the
checks of campaigns.services.occurrences.campaign_schedule_problems. A mixin, so the campaign form
(campaigns/admin/campaigns.py) keeps one place for its other fields."""

from __future__ import annotations

from django import forms
from django.utils import timezone
from django.utils.translation import get_language
from django.utils.translation import gettext_lazy as _

from campaigns.models import CalendarDate, Campaign
from campaigns.recurrence import RecurrenceError, cron_describe, cron_parse
from campaigns.services.occurrences import campaign_schedule_problems

SCHEDULE_FIELDS = (
    "schedule_kind", "send_at", "recurrence_kind", "cron", "interval", "calendar_code",
    "calendar_offset_days", "send_time", "local_time", "ends_at",
)  # fmt: skip


def calendar_code_choices() -> list[tuple[str, str]]:
    """One choice per calendar code, named in the active language (from its latest row)."""
    names: dict[str, str] = {}
    for row in CalendarDate.objects.order_by("code", "-year"):
        names.setdefault(row.code, row.name)
    return [("", "—")] + sorted(((code, f"{name} ({code})") for code, name in names.items()), key=str)


class CampaignScheduleFormMixin:
    """Mix into a ModelForm of Campaign that has the SCHEDULE_FIELDS."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        fields = self.fields
        if "cron" in fields:
            fields["cron"].widget.attrs.setdefault("placeholder", "0 10 * * 1")
            fields["cron"].help_text = self._cron_help()
        if "calendar_code" in fields:
            current = getattr(self.instance, "calendar_code", "")
            choices = calendar_code_choices()
            if current and current not in dict(choices):
                choices.append((current, current))
            fields["calendar_code"] = forms.ChoiceField(
                label=fields["calendar_code"].label, choices=choices, required=False,
                help_text=_("A holiday or shopping date of the marketing calendar; each year uses its own date."),
            )  # fmt: skip
        helps = {
            "calendar_offset_days": _("Negative is before the date: −3 is “3 days before 中秋”."),
            "send_time": _("Time of day for a calendar date (and for a local send at a date)."),
            "local_time": _(
                "Send at this time in each customer’s own time zone: the run starts when the first zone "
                "reaches it. Quiet hours still hold messages back."
            ),
            "interval": _("E.g. 7 00:00:00 for every 7 days; at least one hour."),
            "ends_at": _("No occurrence after this moment."),
        }
        for name, text in helps.items():
            if name in fields:
                fields[name].help_text = text

    def _cron_help(self):
        base = _("Minute hour day-of-month month day-of-week, e.g. “0 10 * * 1” = Mondays 10:00.")
        expression = getattr(self.instance, "cron", "") or ""
        if not expression:
            return base
        try:
            cron_parse(expression)
        except RecurrenceError:
            return base
        return f"{base} {cron_describe(expression, language=get_language() or 'en')}"

    def clean(self):
        cleaned = super().clean()
        if not any(name in self.fields for name in SCHEDULE_FIELDS):
            return cleaned  # approved: the schedule is read-only, what was approved stands
        values = {name: cleaned.get(name) for name in SCHEDULE_FIELDS if name in self.fields}
        for name in SCHEDULE_FIELDS:
            values.setdefault(name, getattr(self.instance, name, None))
        for field, message in campaign_schedule_problems(values=values, now=timezone.now()).items():
            if field in self.fields:
                self.add_error(field, message)
            else:
                self.add_error(None, message)
        return cleaned


class CampaignScheduleForm(CampaignScheduleFormMixin, forms.ModelForm):
    class Meta:
        model = Campaign
        fields = SCHEDULE_FIELDS


def schedule_summary(campaign: Campaign) -> str:
    """A recurring campaign's schedule in words for the list ("At 10:00, only on Monday", "3 days before
    中秋, 10:00"), in the active language; "" when there is nothing to say."""
    from django.utils.translation import gettext

    language = get_language() or "en"
    text = ""
    if campaign.recurrence_kind == "cron" and campaign.cron:
        try:
            cron_parse(campaign.cron)
        except RecurrenceError:
            return ""
        text = cron_describe(campaign.cron, language=language)
    elif campaign.recurrence_kind == "interval" and campaign.interval:
        hours = int(campaign.interval.total_seconds() // 3600)
        text = gettext("every %(hours)d h") % {"hours": hours}
    elif campaign.recurrence_kind == "calendar" and campaign.calendar_code:
        row = CalendarDate.objects.filter(code=campaign.calendar_code).order_by("-year").first()
        name = row.name if row else campaign.calendar_code
        days = campaign.calendar_offset_days
        if days < 0:
            text = gettext("%(days)d days before %(name)s") % {"days": -days, "name": name}
        elif days > 0:
            text = gettext("%(days)d days after %(name)s") % {"days": days, "name": name}
        else:
            text = name
        if campaign.send_time:
            text = f"{text}, {campaign.send_time:%H:%M}"
    if text and campaign.local_time:
        text = gettext("%(schedule)s, each customer's local time") % {"schedule": text}
    return text
