"""Conditions on consent per channel."""

from __future__ import annotations

from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from crm.segments import sql
from crm.segments.fields.base import ConditionError, ConditionType, _choices_json, parse_choice


class ConsentCondition(ConditionType):
    key = "consent.status"
    label = gettext_lazy("Consent")
    group = "consent"
    kind_label = gettext_lazy("consent")
    operators = ("opted_in", "not_opted_in", "opted_out", "no_record")
    param_names = ("channel",)

    def clean_params(self, raw):
        from crm.models import ConsentChannel

        if raw.get("channel") in (None, ""):
            raise ConditionError(_("a consent channel is required"))
        return {"channel": parse_choice(raw.get("channel"), ConsentChannel.choices)}

    def to_q(self, condition, ctx):
        from crm.models import Consent, ConsentStatus

        rows = Consent.objects.filter(channel=condition.params["channel"])
        op = condition.operator
        if op in ("opted_in", "not_opted_in"):
            return sql.exists_q(
                rows.filter(status=ConsentStatus.OPTED_IN), "customer", negated=op == "not_opted_in"
            )
        if op == "opted_out":
            return sql.exists_q(rows.filter(status=ConsentStatus.OPTED_OUT), "customer")
        return sql.exists_q(rows, "customer", negated=True)

    def params_schema(self):
        from crm.models import ConsentChannel

        return [
            {
                "name": "channel",
                "label": str(_("channel")),
                "type": "choice",
                "required": True,
                "choices": _choices_json(ConsentChannel.choices),
            }
        ]
