"""Conditions on the customer's own profile columns and identifiers."""

from __future__ import annotations

from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from crm.segments import sql
from crm.segments.fields.base import (
    IDENTITY_KIND_RE,
    ColumnCondition,
    ConditionError,
    ConditionType,
    _choices_json,
    _show,
)


class IdentityCondition(ConditionType):
    """The customer has (or has no) identifier of a kind: an openid, a phone number, a Tmall buyer id."""

    key = "identifiers.kind"
    label = gettext_lazy("Identifier")
    group = "identifiers"
    kind_label = gettext_lazy("identifier")
    operators = ("present", "absent")
    param_names = ("kind",)

    def clean_params(self, raw):
        kind = raw.get("kind")
        if not isinstance(kind, str) or not IDENTITY_KIND_RE.match(kind):
            raise ConditionError(
                _("'%(kind)s' is not an identifier kind (email, phone, wechat_openid, ... or channel:<name>)")
                % {"kind": _show(kind)}
            )
        return {"kind": kind}

    def to_q(self, condition, ctx):
        from crm.models import CustomerIdentity

        rows = CustomerIdentity.objects.filter(kind=condition.params["kind"])
        return sql.exists_q(rows, "customer", negated=condition.operator == "absent")

    def params_schema(self):
        from crm.models import IdentityKind

        return [
            {
                "name": "kind",
                "label": str(_("kind")),
                "type": "choice_or_text",
                "required": True,
                "choices": _choices_json(IdentityKind.choices),
            }
        ]


def _month_choices():
    import calendar

    return [(m, _(calendar.month_name[m])) for m in range(1, 13)]


def _profile_conditions() -> list[ConditionType]:
    from crm.models import Channel, Customer

    def col(key, label, kind, path=None, **kw):
        return ColumnCondition(f"profile.{key}", label, "profile", kind, path or key, **kw)

    return [
        col("name", gettext_lazy("Name"), "text"),
        col("email", gettext_lazy("Email"), "text"),
        col("phone", gettext_lazy("Phone"), "text"),
        col("external_id", gettext_lazy("External id"), "text"),
        col("gender", gettext_lazy("Gender"), "choice", choices=lambda: Customer.Gender.choices),
        col("birthday", gettext_lazy("Birthday"), "date"),
        col(
            "birthday_month",
            gettext_lazy("Birthday month"),
            "choice",
            "birthday__month",
            choices=_month_choices,
            null_path="birthday",
        ),
        col("city", gettext_lazy("City"), "text"),
        col("region", gettext_lazy("Region"), "text"),
        col("time_zone", gettext_lazy("Time zone"), "text"),
        col(
            "acquisition_channel",
            gettext_lazy("Acquisition channel"),
            "choice",
            choices=lambda: Channel.choices,
        ),
        col("utm_source", gettext_lazy("UTM source"), "text"),
        col("utm_medium", gettext_lazy("UTM medium"), "text"),
        col("utm_campaign", gettext_lazy("UTM campaign"), "text"),
        col("created_at", gettext_lazy("Signed up"), "datetime"),
    ]
